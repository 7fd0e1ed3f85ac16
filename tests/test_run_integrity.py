"""Runs and files (issue 13): atomic writes, a full disk, the output-folder lock, and the CLI's one-line errors."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import rst.runtime.atomic as atomic
from rst.cli import commands as cli
from rst.runtime.atomic import NoSpaceError, OutputError, atomic_write, ensure_writable_dir, temp_name
from rst.network.masks import CandidateSet, extract_ticket, load_tickets, save_tickets
from rst.network.models import build_network
from rst.runtime.runlock import LOCK_NAME, RunLockError, run_lock

REPO = Path(__file__).resolve().parent.parent
BAD_MASKS = REPO / "tests" / "bad_masks"
EXPECTED = json.loads((BAD_MASKS / "expected.json").read_text())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------------------------


def test_atomic_write_bytes_text_and_writer(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    atomic_write(tmp_path / "b.json", '{"é": 1}')
    atomic_write(tmp_path / "c.pt", lambda f: torch.save({"x": torch.arange(3)}, f))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "b.json").read_text("utf-8")) == {"é": 1}
    assert torch.equal(torch.load(tmp_path / "c.pt")["x"], torch.arange(3))
    assert _leftovers(tmp_path) == []


def test_temp_names_are_unique_per_writer_and_beside_the_target(tmp_path):
    names = {temp_name(tmp_path / "log.json") for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and str(os.getpid()) in n.name for n in names)


def test_fsync_comes_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "x", b"data")
    assert calls[:2] == ["fsync", "replace"]


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "log.json"
    target.write_text("old")

    def boom(f):
        f.write(b"half")
        raise KeyboardInterrupt                    # even an interrupt cleans up

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, boom)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_concurrent_saves_of_one_path_never_mix(tmp_path, tiny_spec):
    """A fixed ``path + '.tmp'`` raced here; unique temp names leave one complete file."""
    model = build_network(tiny_spec, keep_ratio=0.3)
    sets = [CandidateSet(tiny_spec, [extract_ticket(model, name=f"writer{i}")]) for i in range(4)]
    path = tmp_path / "t.rst.safetensors"
    errors = []

    def work(cs):
        try:
            for _ in range(5):
                save_tickets(path, cs)
        except BaseException as e:       # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(cs,)) for cs in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert load_tickets(path).tickets[0].name in {f"writer{i}" for i in range(4)}
    assert _leftovers(tmp_path) == []


def test_log_json_and_zoo_index_are_written_atomically(tmp_path, monkeypatch):
    from rst.zoo.build import read_index, update_index
    cli._write_json(tmp_path / "log.json", {"a": 1})
    update_index(tmp_path, {"id": "z", "tickets": []})
    assert json.loads((tmp_path / "log.json").read_text()) == {"a": 1}
    assert [z["id"] for z in read_index(tmp_path)["zoos"]] == ["z"]

    def no_rename(a, b):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "replace", no_rename)
    with pytest.raises(OSError):
        cli._write_json(tmp_path / "log.json", {"a": 2})
    with pytest.raises(OSError):
        update_index(tmp_path, {"id": "y", "tickets": []})
    assert json.loads((tmp_path / "log.json").read_text()) == {"a": 1}
    assert [z["id"] for z in read_index(tmp_path)["zoos"]] == ["z"]
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# a full disk
# --------------------------------------------------------------------------------------------


class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, b):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("how", ["write", "fsync"])
def test_disk_full_says_no_space_left_on_the_folder_and_cleans_up(tmp_path, tiny_spec, monkeypatch, how):
    target = tmp_path / "t.rst.safetensors"
    model = build_network(tiny_spec, keep_ratio=0.3)
    cs = CandidateSet(tiny_spec, [extract_ticket(model)])
    save_tickets(target, cs)
    before = target.read_bytes()
    if how == "write":
        # what torch.save of a checkpoint meets on a full disk
        with pytest.raises(NoSpaceError, match=f"no space left on {tmp_path}"):
            atomic_write(tmp_path / "checkpoint.pt", lambda f: torch.save({"x": torch.zeros(100)}, _FullDisk(f)))
    else:
        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(atomic.os, "fsync", full)
        with pytest.raises(NoSpaceError, match=f"no space left on {tmp_path}") as e:
            save_tickets(target, cs)
        assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
        assert "\n" not in str(e.value)
    assert target.read_bytes() == before and _leftovers(tmp_path) == []
    assert not (tmp_path / "checkpoint.pt").exists()


def test_disk_full_during_a_cli_command_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(atomic.os, "fsync", full)
    rc = cli.main(["search", "--preset", "tiny", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: no space left on"), err


# --------------------------------------------------------------------------------------------
# output folders: writable, one writer
# --------------------------------------------------------------------------------------------


def test_unwritable_output_folder_is_refused_before_the_search_starts(tmp_path, monkeypatch, capsys):
    import rst.search.loop
    started = []
    monkeypatch.setattr(rst.search.loop, "run_search", lambda *a, **k: started.append(1))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "run"):
        rc = cli.main(["search", "--preset", "tiny", "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and str(blocker) in err[0], err
    assert not started
    with pytest.raises(OutputError):
        ensure_writable_dir(blocker / "run")
    assert ensure_writable_dir(tmp_path / "new" / "run").is_dir()
    assert _leftovers(tmp_path / "new" / "run") == []


def test_read_only_output_folder_is_refused(tmp_path, monkeypatch):
    real_open = open

    def read_only(path, mode="r", *a, **k):
        if "x" in mode and str(tmp_path) in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", read_only)
    with pytest.raises(OutputError, match="not writable"):
        ensure_writable_dir(tmp_path)


def test_a_second_writer_is_refused_and_the_lock_is_released(tmp_path):
    with run_lock(tmp_path) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
        with pytest.raises(RunLockError, match=f"PID {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    assert not lock.exists()
    with run_lock(tmp_path):                          # free again
        pass


def test_a_stale_lock_of_a_dead_process_is_recovered(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid} somehost 2021-01-01T00:00:00\n")
    with run_lock(tmp_path) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())


def test_two_searches_on_one_out_folder_the_second_is_refused_with_the_pid(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from rst.runtime.runlock import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = cli.main(["search", "--preset", "tiny", "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"PID {holder.pid}" in err[0] and "in use" in err[0], err
    finally:
        holder.kill()                                 # dies holding the lock: a stale lock file is left
        holder.wait()
    assert (out / LOCK_NAME).exists()
    with run_lock(out):
        pass


# --------------------------------------------------------------------------------------------
# the CLI: one line, exit code 2, for every command that reads a mask file
# --------------------------------------------------------------------------------------------

ERROR_FILES = sorted(n for n, e in EXPECTED.items() if e["expect"] == "error")
# one file of every class, each command gets them all
ONE_PER_CLASS = sorted({e["class"]: n for n, e in sorted(EXPECTED.items()) if e["expect"] == "error"}.values())


def _commands(path: Path, tmp_path: Path) -> list[list[str]]:
    return [["inspect", str(path)], ["eval", "accuracy", str(path)], ["eval", "curve", str(path)],
            ["eval", "transfer", str(path)], ["eval", "r2s", str(path)], ["eval", "autoattack", str(path)],
            ["finetune", str(path), "--out", str(tmp_path / "ft")]]


@pytest.mark.parametrize("name", ONE_PER_CLASS)
def test_every_command_gives_one_line_and_exit_2_on_a_bad_file(name, tmp_path, capsys):
    for argv in _commands(BAD_MASKS / name, tmp_path):
        rc = cli.main(argv)
        cap = capsys.readouterr()
        lines = cap.err.strip().splitlines()
        if argv[0] == "inspect" and "FAILED: " in cap.out:
            # the metadata reads, the tensors do not: inspect prints its summary with the check FAILED
            assert "FAILED: " in cap.out and EXPECTED[name]["keyword"].lower() in cap.out.lower(), cap.out
            assert not lines, cap.err
            continue
        assert rc == 2, (argv, cap.err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, cap.err)
        assert EXPECTED[name]["keyword"].lower() in lines[0].lower() or argv[0] == "inspect", (argv, lines)


def test_eval_accuracy_refuses_every_corpus_file_in_one_line(capsys):
    for name in ERROR_FILES:
        rc = cli.main(["eval", "accuracy", str(BAD_MASKS / name)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, lines)
        assert EXPECTED[name]["keyword"].lower() in lines[0].lower(), (name, lines)


def test_python_m_rst_eval_exits_2_without_a_traceback():
    for name in ("bn_nan_mean.rst.safetensors", "nested_header_key.rst.safetensors"):
        proc = subprocess.run([sys.executable, "-m", "rst", "eval", "accuracy", str(BAD_MASKS / name)],
                              capture_output=True, text=True, cwd=REPO, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_the_cli_shows_the_missing_digest_warning_in_one_line(capsys):
    for name in sorted(n for n, e in EXPECTED.items() if e["expect"] == "warning"):
        rc = cli.main(["inspect", str(BAD_MASKS / name)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 0
        assert len(err) == 1 and err[0].startswith("warning: unverified metadata") and "rst_sha256" in err[0], err
