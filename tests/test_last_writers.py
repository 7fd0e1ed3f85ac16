"""The last writers made safe: a report written by ``rst.evaluation.reports.write_report`` is replaced whole or not
at all (``rst.runtime.atomic``), and ``zoo build`` takes its ``--work`` folder's run lock (``rst.runtime.runlock``)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rst.evaluation.reports import write_report

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

# a writer that has written half of its new report when it is killed: its PNG is mid-write
KILLED_WRITER = r'''
import os, sys, time
import pandas as pd
from rst.evaluation.reports import write_report

class HalfWrittenFigure:
    def savefig(self, f, **kwargs):
        (open(f, "wb") if isinstance(f, (str, os.PathLike)) else f).write(b"\x89PNG half of a new figure")
        print("mid-write", flush=True)
        time.sleep(120)

write_report(sys.argv[1], "curve", {"rows": ["new"]}, pd.DataFrame({"a": [2]}), HalfWrittenFigure())
'''


class _Figure:
    def __init__(self, data: bytes, fail: bool = False):
        self.data, self.fail = data, fail

    def savefig(self, f, **kwargs):
        f.write(self.data[:4])
        if self.fail:
            raise RuntimeError("the figure could not be drawn")
        f.write(self.data[4:])


def _old_report(folder: Path) -> dict[str, bytes]:
    import pandas as pd
    paths = write_report(folder, "curve", {"rows": ["old"]}, pd.DataFrame({"a": [1]}), _Figure(b"\x89PNG old figure"))
    return {p.name: p.read_bytes() for p in paths.values()}


def test_a_killed_report_writer_leaves_the_old_report_whole(tmp_path):
    old = _old_report(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "mid-write", proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert (tmp_path / "curve.png").read_bytes() == old["curve.png"]
    assert (tmp_path / "curve.json").read_bytes() == old["curve.json"]
    assert json.loads((tmp_path / "curve.json").read_text())["rows"] == ["old"]
    # the CSV before it was replaced whole (the old one or the new one, never a mix)
    assert (tmp_path / "curve.csv").read_text() in ("a\n1\n", "a\n2\n")


def test_a_failing_report_writer_leaves_the_old_report_and_no_temporary_file(tmp_path):
    import pandas as pd
    old = _old_report(tmp_path)
    with pytest.raises(RuntimeError, match="could not be drawn"):
        write_report(tmp_path, "curve", {"rows": ["new"]}, pd.DataFrame({"a": [1]}), _Figure(b"\x89PNG new", fail=True))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old          # no .tmp left behind


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.1)


def test_a_second_zoo_build_on_the_same_work_folder_is_refused_while_the_first_runs(tmp_path, capsys):
    from rst.cli import commands as cli
    from rst.runtime.runlock import LOCK_NAME, run_lock
    argv = ["zoo", "build", "tiny", "--keep-ratios", "0.5", "--work", str(tmp_path / "work"),
            "--root", str(tmp_path / "zoo"), "--no-eval", "--no-dense", "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "rst", *argv, "--set", "epochs=1000"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO, start_new_session=True)
    lock = tmp_path / "work" / "tiny" / LOCK_NAME
    try:
        _wait_for(lock, first)
        rc = cli.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, lines
        assert lines[0].startswith("error: ") and f"in use by another run (PID {first.pid}" in lines[0], lines
        assert first.poll() is None                                  # the first build goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    with run_lock(tmp_path / "work" / "tiny"):                       # a killed build's lock is stale: taken over
        pass
