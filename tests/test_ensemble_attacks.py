"""Attacks on randomized ensembles (rst.evaluation.ensemble_attacks): ARC beats PGD on the expected loss where
that provably fails, and APGD on the expectation scores its members on the adversarial inputs."""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rst.evaluation.attacks import pgd
from toy_ensembles import BinaryMembers

from rst.evaluation.ensemble_attacks import apgd_expectation, arc, expected_accuracy, member_probs


class LinearEnsemble(BinaryMembers):
    """Binary members on one input coordinate: logits ``(0, a_k u + c_k)`` with ``u = 2 x - 1``, so
    the pixel ball ``|x - 0.5| <= 0.5`` is ``u in [-1, 1]``; class 1 is right iff ``a_k u + c_k > 0``."""

    def __init__(self, a, c, probs=None):
        super().__init__(len(a), probs)
        self.register_buffer("a", torch.tensor(a))
        self.register_buffer("c", torch.tensor(c))

    def margin(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return self.a[k] * (2 * x.flatten(1)[:, 0] - 1) + self.c[k]                   # (B,)


def _expected_ce(model, x, y):
    p = member_probs(model, device=x.device)
    z = model.member_logits(x)
    return sum(p[k] * F.cross_entropy(z[k], y, reduction="none") for k in range(model.K))


# member 0 (p = 0.4) cannot be fooled in the ball; member 1 (p = 0.6) is fooled only near u = +1
ARC_CASE = dict(a=[0.5, -0.1], c=[0.52, 0.09], probs=[0.4, 0.6])


def test_arc_beats_expectation_pgd_where_it_provably_fails():
    ens = LinearEnsemble(**ARC_CASE)
    x, y = torch.full((6, 1), 0.5), torch.ones(6, dtype=torch.long)
    eps = 0.5
    # the construction: the expected CE is strictly decreasing in u on the whole ball (its derivative
    # -0.4 a0 s(-(a0 u + c0)) + 0.6 |a1| s(|a1| u - c1) is increasing in u and negative at u = 1), so
    # signed-gradient ascent from any start walks to u = -1, where both members are right ...
    u = torch.linspace(0, 1, 201)[:, None]
    uu = u.clone().requires_grad_(True)
    grad, = torch.autograd.grad(_expected_ce(ens, uu, torch.ones(201, dtype=torch.long)).sum(), uu)
    assert (grad < 0).all()
    assert expected_accuracy(ens, torch.zeros(1, 1), torch.ones(1, dtype=torch.long)).item() == 1.0
    # ... while u = +1 fools member 1: expected accuracy 0.4 is reachable
    grid_acc = expected_accuracy(ens, u, torch.ones(201, dtype=torch.long))
    assert grid_acc.min().item() == pytest.approx(0.4) and grid_acc[-1].item() == pytest.approx(0.4)

    g = torch.Generator().manual_seed(0)
    x_pgd = pgd(ens, x, y, eps, eps / 4, 20, loss=_expected_ce, restarts=5, generator=g)
    assert torch.equal(expected_accuracy(ens, x_pgd, y), torch.ones(6))        # PGD fails on every example
    assert torch.allclose(x_pgd, torch.zeros_like(x))                          # at u = -1, as predicted

    for norm in ("linf", "l2"):
        x_arc = arc(ens, x, y, eps, norm=norm, steps=3, step_size=eps)
        assert torch.allclose(expected_accuracy(ens, x_arc, y), torch.full((6,), 0.4)), norm
        assert ((x_arc - x).abs() <= eps + 1e-6).all() and (x_arc >= 0).all() and (x_arc <= 1).all()
        # members scored on x_arc: the likely member 1 is fooled, member 0 is not
        correct = ens.member_logits(x_arc).argmax(-1) == y
        assert correct[0].all() and not correct[1].any()


def test_arc_on_r2s_stays_in_the_ball_and_never_raises_expected_accuracy(tiny_cs):
    from rst.data.datasets import synthetic_dataset
    from rst.evaluation.r2s import R2S
    x, y = synthetic_dataset(24, seed=1)
    r2s = R2S(tiny_cs)
    clean = expected_accuracy(r2s, x, y)
    for norm, eps in (("linf", 0.05), ("l2", 1.0)):
        x_adv = arc(r2s, x, y, eps, norm=norm, steps=3)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps + 1e-5).all() and x_adv.min() >= 0 and x_adv.max() <= 1
        assert (expected_accuracy(r2s, x_adv, y) <= clean + 1e-6).all()
    x_adv = arc(r2s, x, y, 0.05, steps=3, topk=2)                     # ARC-lite
    assert (expected_accuracy(r2s, x_adv, y) <= clean + 1e-6).all()
    with pytest.raises(TypeError, match="randomized ensemble"):
        arc(tiny_cs.model(0), x, y, 0.05)


# member 0 is fooled beyond u = 0.5; member 1 never; their mean-logit model is never fooled
APGD_CASE = dict(a=[-1.0, -0.1], c=[0.5, 3.0])


class _MeanLogits(nn.Module):
    """The 'combined model' a torchattacks-style wrapper attacks: the members' mean logits."""

    def __init__(self, ens):
        super().__init__()
        self.ens = ens

    def forward(self, x):
        return self.ens.member_logits(x).mean(0)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_on_expectation_scores_members_on_the_adversarial_inputs(loss):
    from rst.evaluation.autoattack import autoattack_examples
    ens = LinearEnsemble(**APGD_CASE)
    # DLR needs three classes: add a constant, never-winning third logit
    if loss == "dlr":
        base = ens._logits
        ens._logits = lambda k, x: torch.cat([base(k, x), torch.full((len(x), 1), -5.0)], 1)
    x, y = torch.full((8, 1), 0.5), torch.ones(8, dtype=torch.long)
    eps = 0.5
    combined = _MeanLogits(ens)
    with torch.no_grad():
        assert (combined(torch.linspace(0, 1, 101)[:, None]).argmax(1) == 1).all()   # never fooled

    # the naive way: AutoAttack's APGD on the combined model keeps the clean image wherever the
    # combined model was not fooled, so every member is scored on the clean input
    naive, _ = autoattack_examples(combined, x, y, eps=eps, version="custom", attacks=["apgd-ce"])
    assert torch.equal(naive, x)
    assert torch.equal(expected_accuracy(ens, naive, y), torch.ones(8))

    x_adv = apgd_expectation(ens, x, y, eps, loss=loss, steps=10, seed=0)
    assert ((x_adv - x).abs() <= eps + 1e-6).all() and not torch.equal(x_adv, x)
    correct = ens.member_logits(x_adv).argmax(-1) == y                           # scored on x_adv
    assert not correct[0].any() and correct[1].all()
    assert torch.equal(expected_accuracy(ens, x_adv, y), torch.full((8,), 0.5))


def test_apgd_on_expectation_on_r2s(tiny_cs):
    from rst.data.datasets import synthetic_dataset
    from rst.evaluation.r2s import R2S
    x, y = synthetic_dataset(16, seed=1)
    r2s = R2S(tiny_cs)
    clean = expected_accuracy(r2s, x, y)
    state = torch.random.get_rng_state()
    x_ce = apgd_expectation(r2s, x, y, 0.05, loss="ce", steps=10, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)                   # global RNG restored
    assert torch.equal(x_ce, apgd_expectation(r2s, x, y, 0.05, loss="ce", steps=10, seed=1))   # seeded
    assert ((x_ce - x).abs() <= 0.05 + 1e-6).all()
    acc = expected_accuracy(r2s, x_ce, y)
    assert (acc <= clean + 1e-6).all() and acc.mean() < clean.mean()
    two = apgd_expectation(r2s, x, y, 0.05, loss="ce", steps=10, seed=1, restarts=2)
    assert (expected_accuracy(r2s, two, y) <= acc + 1e-6).all()                # more restarts never raise it
    with pytest.raises(ValueError, match="loss"):
        apgd_expectation(r2s, x, y, 0.05, loss="mse")


def test_member_probs_validation():
    ens = LinearEnsemble(**ARC_CASE)
    assert member_probs(ens).tolist() == pytest.approx([0.4, 0.6])
    assert member_probs(LinearEnsemble(a=[1.0, 1.0], c=[0.0, 0.0])).tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="probs"):
        member_probs(ens, [1.0, -1.0])
