"""The adversarial search, its baselines and the CLI, on synthetic data (CPU, seconds)."""
import json

import pytest
import torch

from rst.data.datasets import synthetic_dataset
from rst.network.masks import load_tickets, load_weights
from rst.search.loop import PRESETS, SearchConfig, SearchData, preset, run_search, search_data
from rst.search.train import finetune, train_dense


def _small_data(n_train=256, n_val=64, seed=0):
    x, y = synthetic_dataset(n_train + n_val, seed=seed)
    return SearchData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def _events():
    events = []
    return events, events.append


def test_presets_are_valid_and_paper_recipe_is_exact():
    for name, cfg in PRESETS.items():
        assert SearchConfig.from_dict(cfg.to_dict()) == cfg, name
    p = PRESETS["paper-cifar10-resnet18"]
    assert (p.arch, p.dataset, p.epochs, p.batch_size, p.lr, p.momentum, p.weight_decay) == \
        ("resnet18", "cifar10", 160, 256, 0.1, 0.9, 5e-4)
    assert [round(f * p.epochs) for f in p.lr_milestones] == [80, 120]
    assert (p.inner_attack, p.steps, p.eps, p.alpha, p.attack_bn_mode) == ("pgd", 7, 8 / 255, 2 / 255, "train")
    assert p.selection == "val" and p.val_size > 0
    assert PRESETS["paper-cifar10-wrn34"].arch == "wrn34_10"


@pytest.mark.parametrize("bad", [dict(keep_ratio=0.0), dict(keep_ratio=1.5), dict(scope="row"),
                                 dict(inner_attack="cw2"), dict(attack_bn_mode="mixed"), dict(arch="nope"),
                                 dict(selection="test")])
def test_config_rejects_bad_values(bad):
    with pytest.raises((ValueError, KeyError)):
        preset("tiny", **bad)


def test_adversarial_loss_falls_during_tiny_search():
    cfg = preset("tiny", epochs=4, lr_milestones=())
    events, cb = _events()
    result = run_search(cfg, device="cpu", data=_small_data(512, 128), progress=cb)
    losses = [h["train_adv_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.2, losses
    assert result.history[-1]["val_robust"] > 0.2          # chance is 0.1
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 4 * (512 // cfg.batch_size)
    # the ticket keeps exactly keep_ratio of every layer's scores
    assert abs(result.ticket.kept_fraction() - cfg.keep_ratio) < 0.01
    assert result.ticket.metrics["val_robust"]["split"] == "validation"


class _Kill(Exception):
    pass


def test_resume_gives_the_same_masks_as_an_uninterrupted_run(tmp_path):
    cfg = preset("tiny", epochs=3, lr_milestones=(0.5,))
    data = _small_data(192, 64)
    full = run_search(cfg, device="cpu", data=data, workdir=tmp_path / "full")

    def kill_in_epoch_2(event):
        if event["event"] == "step" and event["epoch"] == 2 and event["step"] == 2:
            raise _Kill
    with pytest.raises(_Kill):
        run_search(cfg, device="cpu", data=data, workdir=tmp_path / "killed", progress=kill_in_epoch_2)
    ck = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1                                  # the last complete epoch
    resumed = run_search(cfg, device="cpu", data=data, workdir=tmp_path / "killed", resume=True)
    assert resumed.best_epoch == full.best_epoch
    for name, m in full.ticket.masks.items():
        assert torch.equal(m, resumed.ticket.masks[name]), name
    for name, v in full.ticket.bn_stats.items():
        assert torch.equal(v, resumed.ticket.bn_stats[name]), name


def test_stop_request_ends_the_search_early():
    cfg = preset("tiny", epochs=5)
    events, cb = _events()
    result = run_search(cfg, device="cpu", data=_small_data(256, 64), progress=cb,
                        should_stop=lambda: len([e for e in events if e["event"] == "step"]) >= 3)
    assert result.stopped and len(result.history) == 1 and result.history[0]["complete"] is False


def test_selection_uses_validation_and_never_the_test_set(monkeypatch):
    import rst.search.loop as search
    calls = []
    monkeypatch.setattr(search, "load_dataset", lambda name, train, data_dir=None: calls.append(train)
                        or synthetic_dataset(300, seed=0))
    cfg = preset("tiny", dataset="fashion_mnist", val_size=50)
    data = search_data(cfg)
    assert calls == [True]                                   # only the training set is read
    assert len(data.x_val) == 50 and len(data.x_train) == 250


@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "free", "none"])
def test_every_inner_attack_runs(attack):
    cfg = preset("tiny", epochs=1, inner_attack=attack, steps=2, val_images=32)
    result = run_search(cfg, device="cpu", data=_small_data(128, 32))
    assert len(result.history) == 1 and result.history[0]["train_adv_loss"] > 0


def test_history_records_the_lr_each_epoch_ran_at():
    # milestones at round(0.34 * 3) = 1: epoch 0 at lr, epochs 1 and 2 at lr * gamma
    cfg = preset("tiny", epochs=3, lr=0.1, lr_milestones=(0.34,), lr_gamma=0.1, val_images=32)
    result = run_search(cfg, device="cpu", data=_small_data(64, 32))
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.01, 0.01])


def test_global_scope_keeps_the_network_wide_fraction():
    cfg = preset("tiny", epochs=1, scope="global", keep_ratio=0.3)
    result = run_search(cfg, device="cpu", data=_small_data(128, 32))
    kept = sum(int(m.sum()) for m in result.ticket.masks.values())
    total = sum(m.numel() for m in result.ticket.masks.values())
    assert abs(kept / total - 0.3) < 0.01
    densities = [float(m.float().mean()) for m in result.ticket.masks.values()]
    assert max(densities) - min(densities) > 0.05            # layers differ, unlike the per-layer rule


def test_dense_baseline_trains_weights_not_scores():
    cfg = preset("tiny", epochs=1)
    result = train_dense(cfg, device="cpu", data=_small_data(128, 32))
    from rst.network.masked import masked_layers
    from rst.network.models import build_network
    fresh = build_network(cfg.network_spec())
    changed = [not torch.equal(a.weight, b.weight) for (_, a), (_, b) in
               zip(masked_layers(result.model), masked_layers(fresh))]
    assert all(changed)
    assert all(layer.dense for _, layer in masked_layers(result.model))


@pytest.mark.parametrize("mode", ["inherit", "reinit"])
def test_finetune_keeps_the_mask(mode):
    from rst.network.masks import CandidateSet
    cfg = preset("tiny", epochs=1)
    data = _small_data(128, 32)
    ticket = run_search(cfg, device="cpu", data=data).ticket
    cs = CandidateSet(cfg.network_spec(), [ticket])
    result = finetune(cs, 0, mode, cfg, device="cpu", data=data)
    from rst.network.masked import masked_layers
    for name, layer in masked_layers(result.model):
        w = layer.effective_weight().detach()
        assert torch.all(w.flatten()[~ticket.masks[name].expand_as(w).flatten()] == 0), name


def test_cli_search_train_and_eval_end_to_end(tmp_path, capsys):
    from rst.cli.commands import main
    out = tmp_path / "search"
    small = ["--train-subset", "128", "--set", "val_images=32", "--test-images", "32", "--quiet"]
    assert main(["search", "--preset", "tiny", "--epochs", "1", "--out", str(out), *small]) == 0
    cs = load_tickets(out / "ticket.rst.safetensors")
    assert set(cs.tickets[0].metrics) >= {"val_clean", "val_robust", "test_clean", "test_pgd20"}
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["keep_ratio"] == 0.5 and log["provenance"]["versions"]["torch"]
    assert len(log["history"]) == 1
    assert main(["train", "--preset", "tiny", "--epochs", "1", "--out", str(tmp_path / "dense"), *small]) == 0
    model, meta = load_weights(tmp_path / "dense" / "dense_at.weights.safetensors")
    assert meta["kind"] == "dense_at" and "test_pgd20" in meta["metrics"]
    assert main(["finetune", str(out / "ticket.rst.safetensors"), "--mode", "inherit", "--epochs", "1",
                 "--out", str(tmp_path / "ft"), *small]) == 0
    assert (tmp_path / "ft" / "ft_inherit.weights.safetensors").exists()
    assert main(["inspect", str(out / "ticket.rst.safetensors")]) == 0
    assert "checksum" in capsys.readouterr().out               # the short summary (--json: the full record)


def test_compile_option_compiles_the_attack_and_the_update(monkeypatch):
    """``compile=True`` hands the network to torch.compile (here with the eager backend: no C++
    build in the default run) and the search still learns the same kind of ticket."""
    import torch
    from rst.search.loop import preset, run_search
    compiled = []
    real = torch.compile

    def recording_compile(model, **kwargs):
        compiled.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", recording_compile)
    cfg = preset("tiny", epochs=1, compile=True)
    data = _small_data(512, 128)
    result = run_search(cfg, device="cpu", data=data)
    assert len(compiled) == 2                          # attack graph and update graph
    assert result.ticket.search_config["compile"] is True
    assert 0.0 <= result.ticket.metrics["val_robust"]["value"] <= 1.0
    eager = run_search(cfg.replace(compile=False), device="cpu", data=data)
    # same recipe, same seed: the eager backend traces the same maths
    assert abs(eager.ticket.metrics["val_clean"]["value"] - result.ticket.metrics["val_clean"]["value"]) <= 0.05


def test_the_step_loss_is_read_every_few_steps_not_every_step():
    """Reading the loss is a device sync: progress gets it every `log_every` steps and at an epoch's last."""
    from rst.network.models import build_network
    from rst.search.loop import Fit, score_parameters, start_fit, train_epoch, prepare_models
    cfg = preset("tiny", epochs=1, selection="last", val_size=0, val_images=0, batch_size=8, augment=False)
    x, y = torch.rand(8 * 45, 1, 28, 28), torch.randint(0, 10, (8 * 45,))
    model = build_network(cfg.network_spec(), keep_ratio=0.5)
    fit = start_fit(model, score_parameters(model), cfg, SearchData(x, y, x[:0], y[:0]), torch.device("cpu"))
    assert isinstance(fit, Fit)
    prepare_models(fit)
    events = []
    train_epoch(fit, 0, progress=events.append, log_every=20)
    assert len(events) == 45
    assert [e["step"] for e in events if "loss" in e] == [20, 40, 45]
