"""Resume only into the same recipe (rst.runtime.checkpoint): a mixed ticket is refused, with the fields named."""
import pytest

from rst.runtime.checkpoint import ResumeMismatchError
from rst.cli.commands import main as cli_main
from rst.search.loop import preset, run_search


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    cfg = preset("tiny", epochs=2, keep_ratio=0.5, seed=0)
    run_search(cfg, device="cpu", workdir=workdir, should_stop=lambda: False)
    return cfg, workdir


def test_resume_with_another_recipe_is_refused_naming_the_fields(one_epoch):
    cfg, workdir = one_epoch
    with pytest.raises(ResumeMismatchError, match=r"keep_ratio: 0\.5 in the checkpoint, 0\.1 now.*seed: 0 in the "
                                                   r"checkpoint, 1 now"):
        run_search(cfg.replace(epochs=3, seed=1, keep_ratio=0.1), device="cpu", workdir=workdir, resume=True)


def test_an_explicit_override_and_speed_settings_may_differ(one_epoch):
    cfg, workdir = one_epoch
    more = run_search(cfg.replace(epochs=3, precision="fp32"), device="cpu", workdir=workdir, resume=True,
                      allow_changes=("epochs",))
    assert [h["epoch"] for h in more.history] == [0, 1, 2]            # continued, not restarted


def test_cli_resume_mismatch_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["search", "--preset", "tiny", "--set", "epochs=1", "--out", str(out), "--quiet"]
    assert cli_main(args) == 0
    capsys.readouterr()
    code = cli_main(args[:-1] + ["--set", "seed=5", "--resume", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "seed: 0 in the checkpoint, 5 now" in err


def test_speed_settings_are_not_part_of_the_recipe_for_a_zoo_rebuild_either():
    from rst.zoo.build import _same_recipe
    cfg = preset("tiny", keep_ratio=0.5)
    recorded = {**cfg.to_dict(), "precision": "fp32", "compile": True, "best_epoch": 2, "speed": {}}
    assert _same_recipe(recorded, cfg)
    assert not _same_recipe({**recorded, "inner_attack": "n_fgsm"}, cfg)
