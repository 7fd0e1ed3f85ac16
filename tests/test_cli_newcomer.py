"""The CLI as a newcomer meets it (issue 15): ``eval accuracy`` offline on the shipped subset, with
results written per ticket and kept on Ctrl-C; ``inspect`` as a short summary, ``--json`` in full."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TICKETS = ROOT / "pretrained_masks" / "fmnist-cpu" / "tickets.rst.safetensors"
SUBSET = ROOT / "assets" / "fashion_mnist_test_subset.safetensors"

pytestmark = pytest.mark.skipif(not TICKETS.exists() or not SUBSET.exists(), reason="needs the shipped zoo and subset")


def _env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RST_DATA_DIR": "/nonexistent-offline", **extra}
    env.pop("RST_TEST_SUBSET", None)
    return env


def _rst(*args, env=None, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rst", *args], capture_output=True, text=True, timeout=timeout,
                          env=env or _env(), cwd=ROOT)


def test_eval_accuracy_runs_offline_on_the_shipped_subset_and_says_so(tmp_path):
    from rst.data.datasets import load_subset
    from rst.evaluation.metrics import accuracy
    from rst.network.masks import load_tickets
    out = tmp_path / "acc.json"
    proc = _rst("eval", "accuracy", str(TICKETS), "--tickets", "0,2", "--images", "16", "--steps", "2",
                "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "the first 16 test images, from the shipped subset" in proc.stdout
    report = json.loads(out.read_text())
    assert report["complete"] and [r["index"] for r in report["rows"]] == [0, 2]
    cs = load_tickets(TICKETS)
    x, y, _ = load_subset(SUBSET)
    assert report["rows"][1]["clean"] == pytest.approx(accuracy(cs.model(2), x[:16], y[:16]))
    assert all(r["robust"] <= r["clean"] for r in report["rows"])


def test_eval_accuracy_default_size_is_announced():
    from rst.cli.commands import build_parser
    from rst.cli.eval_commands import DEFAULT_IMAGES
    args = build_parser().parse_args(["eval", "accuracy", str(TICKETS)])
    assert args.images == DEFAULT_IMAGES == 1000
    assert build_parser().parse_args(["eval", "accuracy", str(TICKETS), "--images", "all"]).images is None


def test_eval_accuracy_without_any_test_images_fails_in_one_line(tmp_path):
    proc = _rst("eval", "accuracy", str(TICKETS), "--images", "16", "--subset", str(tmp_path / "none.safetensors"),
                "--out", str(tmp_path / "a.json"), "--quiet")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: no test images: no test subset at")


def test_ctrl_c_keeps_the_finished_tickets_and_exits_with_one_line(tmp_path):
    out = tmp_path / "acc.json"
    proc = subprocess.Popen([sys.executable, "-m", "rst", "eval", "accuracy", str(TICKETS), "--images", "100",
                             "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a shell's Ctrl-C
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(out.read_text())["rows"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    report = json.loads(out.read_text())
    if report["complete"]:
        pytest.skip("every ticket finished before the interrupt arrived")
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "Traceback" not in err
    assert f"{len(report['rows'])} of 7 tickets done" in lines[0] and len(report["rows"]) >= 1


def test_inspect_prints_a_short_summary_and_json_on_request():
    proc = _rst("inspect", str(TICKETS))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) < 25
    text = proc.stdout
    assert "fmnist_conv4 ×0.5" in text and "fashion_mnist" in text and "seed      0" in text
    assert "verified" in text and "keep0.1" in text and "keep ratio 0.1" in text and "PGD-20 53.2 %" in text
    full = json.loads(_rst("inspect", str(TICKETS), "--json").stdout)
    assert full["format"] == "rst-mask" and len(full["tickets"]) == 7


def test_inspect_reports_a_failed_checksum(tmp_path):
    from rst.network.masks import load_tickets, save_tickets
    cs = load_tickets(TICKETS)
    cs.weight_checksum = "0" * 64           # the file now claims other weights than its seed regenerates
    bad = save_tickets(tmp_path / "bad.rst.safetensors", cs)
    proc = _rst("inspect", str(bad))
    assert "FAILED" in proc.stdout and proc.returncode == 2      # a refused file: exit 2, as every refusal
