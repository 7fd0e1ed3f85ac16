"""Invariants of rst.evaluation.attacks on a tiny masked Conv-4 and synthetic inputs (CPU, seconds)."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rst
import rst.network.masked
from rst.evaluation.attack_objectives import _margin_loss
from rst.evaluation.attacks import (ATTACKS, AttackConfig, cw_linf, fgsm, fgsm_rs, no_attack, pgd,
                         run_attack)

B = 16


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny convolutions: one thread is ~30x faster than two on a loaded 2-core machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def _base():
    """A tiny masked Conv-4 whose BN running statistics are calibrated on random inputs.

    Without calibration (running mean 0, var 1) the random network predicts one class for every
    input; with it, clean predictions are diverse and small eps already fools it.
    """
    spec = rst.NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0)
    model = rst.build_network(spec, keep_ratio=0.5)
    g = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(10):
            model(torch.rand(64, 1, 28, 28, generator=g))
    model.eval()
    x = torch.rand(B, 1, 28, 28, generator=g)
    with torch.no_grad():
        y = model(x).argmax(dim=1)        # clean accuracy 1.0 by construction
    return model, x, y


@pytest.fixture
def setup(_base):
    model, x, y = _base
    return copy.deepcopy(model), x.clone(), y.clone()


def accuracy(model, x, y) -> float:
    return correct(model, x, y).float().mean().item()


def correct(model, x, y) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x).argmax(dim=1) == y
    model.train(was)
    return out


def bn_stats(model) -> list[torch.Tensor]:
    return [t.clone() for n, t in model.named_buffers() if "running" in n]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CONFIGS = [AttackConfig(name, eps=8 / 255, alpha=2 / 255, steps=5) for name in ATTACKS] + [
    AttackConfig("pgd", eps=0.5, alpha=0.2, steps=5, norm="l2"),
    AttackConfig("pgd", eps=8 / 255, alpha=2 / 255, steps=5, restarts=2, early_stop=True),
]


# --------------------------------------------------------------------------------------------
# Invariants for every registered attack
# --------------------------------------------------------------------------------------------


def test_registry_names():
    assert set(ATTACKS) == {"fgsm", "fgsm_rs", "pgd", "cw", "none"}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
@pytest.mark.parametrize("train_mode", [False, True])
def test_threat_model_and_no_grad_leaks(setup, cfg, train_mode):
    model, x, y = setup
    x0 = x.clone()
    for _, layer in rst.masked_layers(model):
        layer.weight.requires_grad_(True)          # as in fine-tuning: must still get no gradient
    model.train()
    x_adv = run_attack(cfg, model, x, y, train_mode=train_mode, generator=gen())

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert torch.equal(x, x0), "the attack modified its input in place"
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if cfg.norm == "l2":
        assert delta.norm(dim=1).max() <= cfg.eps * (1 + 1e-5)
    else:
        assert delta.abs().max() <= cfg.eps + 1e-6
    if cfg.name != "none":
        assert delta.abs().max() > 0
    for _, layer in rst.masked_layers(model):
        assert layer.scores.grad is None and layer.weight.grad is None
    assert all(m.training for m in model.modules()), "model mode not restored"
    # the mask cache is gone: a forward is differentiable w.r.t. the scores again
    model(x).sum().backward()
    assert all(layer.scores.grad is not None for _, layer in rst.masked_layers(model))


def test_masks_computed_once_per_attack(setup, monkeypatch):
    model, x, y = setup
    calls = []
    original = rst.network.masked.MaskedMixin.mask
    monkeypatch.setattr(rst.network.masked.MaskedMixin, "mask", lambda self: calls.append(1) or original(self))
    pgd(model, x, y, 8 / 255, 2 / 255, steps=10, restarts=3, generator=gen())
    assert len(calls) == len(list(rst.masked_layers(model)))


def test_model_without_masked_layers(setup):
    _, x, y = setup
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))   # trainable params, no masks
    x_adv = pgd(net, x, y, 8 / 255, 2 / 255, steps=3, generator=gen())
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    assert all(p.grad is None for p in net.parameters())


def test_works_inside_no_grad(setup):
    model, x, y = setup
    with torch.no_grad():
        x_adv = pgd(model, x, y, 8 / 255, 2 / 255, steps=3, generator=gen())
    assert (x_adv - x).abs().max() > 0


def test_rejects_inputs_outside_pixel_range(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(model, x * 2 - 1, y, 8 / 255, 2 / 255, steps=1)


# --------------------------------------------------------------------------------------------
# Accuracy sanity (spec §5)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.describe())
def test_robust_le_clean(setup, cfg):
    model, x, y = setup
    assert accuracy(model, x, y) == 1.0
    assert accuracy(model, run_attack(cfg, model, x, y, generator=gen()), y) <= 1.0


@pytest.mark.parametrize("attack", [
    lambda m, x, y: pgd(m, x, y, 0.3, 0.05, 10, generator=gen()),
    lambda m, x, y: pgd(m, x, y, 3.0, 0.5, 10, norm="l2", generator=gen()),
    lambda m, x, y: cw_linf(m, x, y, 0.3, 0.05, 10, generator=gen()),
    lambda m, x, y: fgsm(m, x, y, 0.3),
    lambda m, x, y: fgsm_rs(m, x, y, 0.3, generator=gen()),
], ids=["pgd", "pgd-l2", "cw", "fgsm", "fgsm_rs"])
def test_large_eps_fools_the_model(setup, attack):
    model, x, y = setup
    assert accuracy(model, attack(model, x, y), y) <= 0.25


@pytest.mark.parametrize("random_start", [False, True])
def test_more_steps_never_raise_accuracy(setup, random_start):
    """With early stop and the same start, the fooled sets are nested: exact, not in expectation.

    PGD with k steps follows the first k iterates of PGD with 20 steps (deterministic given the
    seeded start); with early stop an example fooled at step t is frozen there, so it is still
    fooled after any later step.
    """
    model, x, y = setup
    eps, alpha = 2 / 255, 0.5 / 255
    fooled = []
    for steps in [0, 1, 2, 5, 10, 20]:
        x_adv = pgd(model, x, y, eps, alpha, steps, random_start=random_start, early_stop=True, generator=gen(1))
        fooled.append(~correct(model, x_adv, y))
    for before, after in zip(fooled, fooled[1:]):
        assert bool((before <= after).all()), "an example fooled with fewer steps is correct with more"
    n_fooled = [int(f.sum()) for f in fooled]
    assert n_fooled[-1] > n_fooled[0] and n_fooled[-1] >= B // 2, n_fooled


def test_restarts_never_raise_accuracy(setup):
    """The first restart is the single run (same generator stream); an adversarial restart is kept."""
    model, x, y = setup
    one = pgd(model, x, y, 2 / 255, 0.5 / 255, 3, restarts=1, generator=gen(2))
    many = pgd(model, x, y, 2 / 255, 0.5 / 255, 3, restarts=4, generator=gen(2))
    fooled_one, fooled_many = ~correct(model, one, y), ~correct(model, many, y)
    assert bool((fooled_one <= fooled_many).all())
    assert (many - x).abs().max() <= 2 / 255 + 1e-6


def test_restarts_keep_highest_loss_with_a_callable(setup):
    model, x, y = setup

    def ce(m, xa, ya):
        return F.cross_entropy(m(xa), ya, reduction="none")

    one = pgd(model, x, y, 2 / 255, 0.5 / 255, 2, restarts=1, loss=ce, generator=gen(3))
    many = pgd(model, x, y, 2 / 255, 0.5 / 255, 2, restarts=4, loss=ce, generator=gen(3))
    with torch.no_grad():
        assert bool((ce(model, many, y) >= ce(model, one, y)).all())


# --------------------------------------------------------------------------------------------
# Train / eval mode
# --------------------------------------------------------------------------------------------


def test_eval_attack_keeps_train_mode_and_bn_stats(setup):
    model, x, y = setup
    model.train()
    before = bn_stats(model)
    pgd(model, x, y, 8 / 255, 2 / 255, steps=3, generator=gen())
    assert all(m.training for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(model)))


def test_train_mode_attack_updates_bn_stats_and_restores_eval(setup):
    model, x, y = setup
    model.eval()
    before = bn_stats(model)
    pgd(model, x, y, 8 / 255, 2 / 255, steps=3, train_mode=True, generator=gen())
    assert not any(m.training for m in model.modules())
    assert not all(torch.equal(a, b) for a, b in zip(before, bn_stats(model)))


def test_mixed_modes_restored_even_on_error(setup):
    model, x, y = setup
    model.train()
    model[1].head.eval()                      # a mixed state must come back exactly
    modes = [m.training for m in model.modules()]

    def broken(m, xa, ya):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        pgd(model, x, y, 8 / 255, 2 / 255, steps=2, loss=broken)
    assert [m.training for m in model.modules()] == modes
    model(x).sum().backward()                 # mask cache released on error too
    assert all(layer.scores.grad is not None for _, layer in rst.masked_layers(model))


# --------------------------------------------------------------------------------------------
# Early stop, losses, randomness
# --------------------------------------------------------------------------------------------


def test_early_stop_freezes_examples_fooled_at_the_clean_point(setup):
    model, x, y = setup
    y_wrong = y.clone()
    y_wrong[::2] = (y[::2] + 1) % 10          # every other example misclassified at the clean point
    stopped = pgd(model, x, y_wrong, 8 / 255, 2 / 255, 5, random_start=False, early_stop=True)
    assert torch.equal(stopped[::2], x[::2])
    assert (stopped[1::2] - x[1::2]).abs().amax(dim=(1, 2, 3)).min() > 0
    pushed = pgd(model, x, y_wrong, 8 / 255, 2 / 255, 5, random_start=False, early_stop=False)
    assert (pushed[::2] - x[::2]).abs().amax(dim=(1, 2, 3)).min() > 0


def test_callable_loss_matches_builtin(setup):
    model, x, y = setup

    def ce(m, xa, ya):
        return F.cross_entropy(m(xa), ya, reduction="none")

    a = pgd(model, x, y, 8 / 255, 2 / 255, 5, random_start=False, loss=ce)
    b = pgd(model, x, y, 8 / 255, 2 / 255, 5, random_start=False, loss="ce")
    assert torch.equal(a, b)
    assert torch.equal(cw_linf(model, x, y, 8 / 255, 2 / 255, 5, generator=gen()),
                       pgd(model, x, y, 8 / 255, 2 / 255, 5, loss="cw", generator=gen()))


def test_callable_loss_errors(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="early_stop"):
        pgd(model, x, y, 8 / 255, 2 / 255, 2, early_stop=True, loss=lambda m, xa, ya: m(xa).sum(1))
    with pytest.raises(ValueError, match="per-example"):
        pgd(model, x, y, 8 / 255, 2 / 255, 2, loss=lambda m, xa, ya: m(xa).sum())
    with pytest.raises(ValueError, match="loss must be"):
        pgd(model, x, y, 8 / 255, 2 / 255, 2, loss="hinge")


def test_margin_loss():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, -1.0]])
    y = torch.tensor([0, 0])
    assert torch.equal(_margin_loss(logits, y), torch.tensor([-1.0, 5.0]))   # > 0 iff misclassified


def test_generator_controls_randomness(setup):
    model, x, y = setup
    a = pgd(model, x, y, 8 / 255, 2 / 255, 2, generator=gen(0))
    assert torch.equal(a, pgd(model, x, y, 8 / 255, 2 / 255, 2, generator=gen(0)))
    assert not torch.equal(a, pgd(model, x, y, 8 / 255, 2 / 255, 2, generator=gen(1)))
    torch.manual_seed(5)                        # generator=None: torch's global RNG
    b = pgd(model, x, y, 8 / 255, 2 / 255, 2)
    torch.manual_seed(5)
    assert torch.equal(b, pgd(model, x, y, 8 / 255, 2 / 255, 2))


def test_fgsm_rs_default_step(setup):
    model, x, y = setup
    assert torch.equal(fgsm_rs(model, x, y, 8 / 255, generator=gen()),
                       pgd(model, x, y, 8 / 255, 1.25 * 8 / 255, 1, generator=gen()))


def test_l2_random_start_inside_ball(setup):
    model, x, y = setup
    start = pgd(model, x, y, 0.5, 0.1, 0, norm="l2", generator=gen())
    norms = (start - x).flatten(1).norm(dim=1)
    assert norms.max() <= 0.5 * (1 + 1e-5) and norms.min() > 0


# --------------------------------------------------------------------------------------------
# Cross-check against torchattacks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps,alpha,steps", [(8 / 255, 2 / 255, 10), (2 / 255, 0.5 / 255, 5)])
def test_pgd_matches_torchattacks(setup, eps, alpha, steps):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = setup
    model.eval()
    theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    ours = pgd(model, x, y, eps, alpha, steps, random_start=False)
    assert (theirs - ours).abs().max() < 1e-6
    assert not any(m.training for m in model.modules())


def test_fgsm_matches_torchattacks(setup):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = setup
    model.eval()
    theirs = torchattacks.FGSM(model, eps=8 / 255)(x, y)
    assert (theirs - fgsm(model, x, y, 8 / 255)).abs().max() < 1e-6


# --------------------------------------------------------------------------------------------
# AttackConfig and run_attack
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="pgdd"), "unknown attack"),
    (dict(eps=-0.1), "eps"),
    (dict(eps=float("nan")), "eps"),
    (dict(steps=0), "steps"),
    (dict(name="cw", steps=0), "steps"),
    (dict(norm="l1"), "norm"),
    (dict(name="fgsm", norm="l2"), "supports norms"),
    (dict(restarts=0), "restarts"),
    (dict(restarts=3, random_start=False), "random_start"),
    (dict(alpha=-1.0), "alpha"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttackConfig(**kwargs)


def test_config_steps_ignored_for_single_step_attacks():
    assert AttackConfig("fgsm", steps=0).describe() == "FGSM Linf eps=8/255"


@pytest.mark.parametrize("cfg,text", [
    (AttackConfig("pgd", steps=20), "PGD-20 Linf eps=8/255 alpha=2/255, 1 restart, no early stop"),
    (AttackConfig("cw", steps=20, restarts=5, early_stop=True),
     "CW-20 Linf eps=8/255 alpha=2/255, 5 restarts, early stop"),
    (AttackConfig("pgd", eps=0.5, alpha=0.1, steps=7, norm="l2", random_start=False),
     "PGD-7 L2 eps=0.5 alpha=0.1, no random start, 1 restart, no early stop"),
    (AttackConfig("pgd", eps=0.3, alpha=0.01), "PGD-10 Linf eps=0.3 alpha=0.01, 1 restart, no early stop"),
    (AttackConfig("fgsm_rs", alpha=10 / 255), "FGSM-RS Linf eps=8/255 alpha=10/255"),
    (AttackConfig("none"), "no attack"),
])
def test_describe(cfg, text):
    assert cfg.describe() == text


def test_config_is_frozen_and_round_trips():
    cfg = AttackConfig("pgd", steps=20, restarts=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3
    assert AttackConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["eps"] == 8 / 255
    with pytest.raises(ValueError, match="unknown"):
        AttackConfig.from_dict({**cfg.to_dict(), "epsilon": 1})


def test_run_attack_dispatch(setup):
    model, x, y = setup
    assert torch.equal(run_attack(AttackConfig("none"), model, x, y), x)
    assert torch.equal(no_attack(model, x, y), x)
    cfg = AttackConfig("pgd", steps=3)
    assert torch.equal(run_attack(cfg, model, x, y, generator=gen()),
                       pgd(model, x, y, cfg.eps, cfg.alpha, 3, generator=gen()))
    assert torch.equal(run_attack(AttackConfig("fgsm"), model, x, y, loss="cw"),
                       fgsm(model, x, y, 8 / 255, loss="cw"))
    with pytest.raises(ValueError, match="does not take a loss"):
        run_attack(AttackConfig("cw"), model, x, y, loss="ce")
