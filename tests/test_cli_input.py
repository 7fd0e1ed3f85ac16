"""Bad command lines: one line ``error: ...`` on stderr, exit 2, nothing written (rst.cli.input)."""
from __future__ import annotations

from pathlib import Path

import pytest

from rst.cli import commands as cli
from rst.cli.commands import build_parser

ROOT = Path(__file__).resolve().parents[1]
TICKETS = str(ROOT / "pretrained_masks" / "fmnist-cpu" / "tickets.rst.safetensors")


def _refusal(argv, capsys) -> str:
    """Run ``python -m rst ARGV`` in this process; the one stderr line of its refusal."""
    try:
        code = cli.main(argv)
    except SystemExit as e:         # argparse refuses while parsing
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("args, says", [
    (["--set", "width=abc"], "bad configuration: width must be a finite number, got 'abc'"),
    (["--set", "eps=inf"], "bad configuration: eps must be a finite number, got 'inf'"),
    (["--set", "nosuch=1"], "bad configuration: unknown SearchConfig fields: ['nosuch']"),
    (["--set", "augment"], "--set expects key=value, got 'augment'"),
    (["--train-subset", "-3"], "train_subset must be >= 1"),
    (["--keep-ratio", "1.5"], "keep_ratio must be in (0, 1], got 1.5"),
    (["--keep-ratio", "abc"], "argument --keep-ratio: invalid float value: 'abc'"),
    (["--preset", "nopreset"], "bad configuration: unknown preset 'nopreset'; known:"),
])
@pytest.mark.parametrize("command", ["search", "train"])
def test_a_bad_run_configuration_is_refused_before_any_work(command, args, says, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [command, "--preset", "fmnist-cpu", *args, "--out", str(out), "--quiet"]
    assert says in _refusal(argv, capsys)
    assert not out.exists()


@pytest.mark.parametrize("args, says", [
    (["--set", "width=abc"], "bad configuration: width must be a finite number, got 'abc'"),
    (["--keep-ratios", "0.1,2"], "bad configuration: keep_ratio must be in (0, 1], got 2.0"),
    (["--keep-ratios", "0.1,x"], "--keep-ratios expects comma-separated numbers, got '0.1,x'"),
    (["--jobs", "0"], "argument --jobs: expected a whole number >= 1, got 0"),
])
def test_a_bad_zoo_build_is_refused_before_any_work(args, says, tmp_path, capsys):
    argv = ["zoo", "build", "fmnist-cpu", *args, "--root", str(tmp_path / "root"), "--work", str(tmp_path / "work")]
    assert says in _refusal(argv, capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["accuracy", "curve", "transfer", "r2s", "autoattack"])
@pytest.mark.parametrize("args, says", [
    (["--images", "-5"], "argument --images: the number of images must be positive"),
    (["--eps", "-1"], "argument --eps: expected a number in [0, 1] (pixel units), got -1"),
    (["--eps", "nan"], "argument --eps: expected a number in [0, 1] (pixel units), got nan"),
    (["--alpha", "2"], "argument --alpha: expected a number in [0, 1] (pixel units), got 2"),
    (["--steps", "0"], "argument --steps: expected a whole number >= 1, got 0"),
    (["--batch-size", "0"], "argument --batch-size: expected a whole number >= 1, got 0"),
])
def test_a_bad_evaluation_setting_is_refused_in_one_line(command, args, says, tmp_path, capsys):
    if command == "autoattack" and args[0] in ("--alpha", "--steps"):
        pytest.skip("AutoAttack has no step size or step count")
    out = tmp_path / "out"
    err = _refusal(["eval", command, TICKETS, *args, "--out", str(out)], capsys)
    assert says in err and f"(see: python -m rst eval {command} --help)" in err
    assert not out.exists()


def test_unknown_r2s_protocols_are_refused_before_the_images_are_loaded(tmp_path, capsys):
    err = _refusal(["eval", "r2s", TICKETS, "--protocols", "paper,foo", "--out", str(tmp_path / "out")], capsys)
    assert "argument --protocols: unknown R2S protocols ['foo']; known: paper, expectation" in err
    assert build_parser().parse_args(["eval", "r2s", TICKETS, "--protocols", "all"]).protocols == "all"
    assert build_parser().parse_args(["eval", "r2s", TICKETS, "--protocols", "paper, eot"]).protocols == "paper,eot"


def test_no_command_and_an_unknown_command_are_one_line(capsys):
    assert "the following arguments are required: command" in _refusal([], capsys)
    assert "invalid choice: 'nosuchcmd'" in _refusal(["nosuchcmd"], capsys)


def test_a_refusal_leaves_an_existing_output_folder_as_it_was(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "empty").mkdir(parents=True)
    (out / "log.json").write_text("{}")
    _refusal(["search", "--preset", "fmnist-cpu", "--set", "width=abc", "--out", str(out)], capsys)
    assert sorted(p.name for p in out.iterdir()) == ["empty", "log.json"]
    (out / "log.json").unlink()
    _refusal(["search", "--preset", "fmnist-cpu", "--set", "width=abc", "--out", str(out / "empty")], capsys)
    assert (out / "empty").is_dir()          # it was there before: not the command's to remove


@pytest.mark.parametrize("argv, says", [
    (["search", "--warmup", "0"], "argument --warmup: expected a whole number >= 1, got 0"),
    (["search", "--width", "-1"], "argument --width: expected a number > 0, got -1"),
    (["search", "--keep-ratio", "1.5"], "argument --keep-ratio: expected a number in (0, 1], got 1.5"),
    (["tickets", "--k", "0"], "argument --k: expected a whole number >= 1, got 0"),
    (["time-to-ticket", "--budget", "inf"], "argument --budget: expected a number > 0, got inf"),
])
def test_the_benchmarks_refuse_bad_sizes_in_one_line(argv, says, capsys):
    from rst.bench.cli import main as bench_main
    with pytest.raises(SystemExit) as e:
        bench_main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and says in err, err


@pytest.mark.parametrize("first, says", [
    ("nocolon", "--boost-first expects FILE:NAME, got 'nocolon'"),
    (f"{TICKETS}:nosuch", "--boost-first: no ticket 'nosuch' in"),
    (f"{ROOT / 'pretrained_masks' / 'fmnist-wide' / 'tickets.rst.safetensors'}:keep0.2",
     "the first member is of another network"),              # width 1.5, the search's network is width 1.0
])
def test_a_bad_first_member_of_a_boosted_search_is_refused_before_any_search(first, says, tmp_path, capsys):
    out = tmp_path / "out"
    err = _refusal(["search", "--preset", "tiny", "--boosted", "2", "--boost-first", first, "--out", str(out),
                    "--quiet"], capsys)
    assert says in err, err
    assert not out.exists()                                  # refused before anything is written
