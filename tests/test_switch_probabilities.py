"""Switch probabilities alpha of R2S (rst.evaluation.switch_probabilities): chosen by projected subgradient
descent on the members' error rates under ARC, used by every draw / loss / expected accuracy, and
checked in mask files."""
from __future__ import annotations

import json
import math
import struct

import pytest
import torch
import torch.nn.functional as F

import rst.evaluation.ensemble_attacks as ensemble_attacks
from toy_ensembles import BinaryMembers

from rst.network.masks import CandidateSet, MaskFileError, load_tickets, to_bytes
from rst.evaluation.switch_probabilities import check_probabilities, optimal_probabilities, project_simplex


class CoordinateEnsemble(BinaryMembers):
    """Member k reads coordinate k of x: class 1 iff ``x[:, k] > t[k]``."""

    def __init__(self, t):
        super().__init__(len(t))
        self.register_buffer("t", torch.tensor(t))

    def margin(self, k, x):
        return 10 * (x.flatten(1)[:, k] - self.t[k])


def _points(n=8):
    return torch.full((n, 2), 0.5), torch.ones(n, dtype=torch.long)


def test_a_strong_and_a_weak_member_all_weight_goes_to_the_strong_one():
    ens = CoordinateEnsemble([0.0, 0.9])          # member 0: right everywhere in the ball; member 1: never right
    x, y = _points()
    res = optimal_probabilities(ens, x, y, eps=0.2, iterations=5, norm="l2", steps=3, step_size=0.2)
    assert res["alpha"] == pytest.approx([1.0, 0.0])
    assert res["expected_acc"] == pytest.approx(1.0)


def test_disjoint_errors_the_mix_is_found_and_arc_with_alpha_is_the_attack(monkeypatch):
    # L2 radius 0.2: each member alone is fooled (its boundary is 0.17 away), both at once never
    # (that needs 0.17 * sqrt(2) = 0.24): any pure switch has expected accuracy 0, the even mix 0.5
    ens = CoordinateEnsemble([0.33, 0.33])
    x, y = _points()
    calls = []
    real_arc = ensemble_attacks.arc

    def spy(model, x, y, eps, **kw):
        calls.append(kw["probs"].tolist())
        return real_arc(model, x, y, eps, **kw)

    monkeypatch.setattr(ensemble_attacks, "arc", spy)
    res = optimal_probabilities(ens, x, y, eps=0.2, iterations=12, lr=0.5, start=[0.9, 0.1],
                                norm="l2", steps=3, step_size=0.2)
    assert res["history"][0]["expected_acc"] == pytest.approx(0.1)          # ARC fools the likely member
    assert abs(res["alpha"][0] - 0.5) < 0.15 and res["expected_acc"] >= 0.35
    assert len(calls) == len(res["history"])                                  # ARC got each iterate's alpha
    for got, h in zip(calls, res["history"]):
        assert got == pytest.approx(h["alpha"], abs=1e-6)


def test_projection_onto_the_simplex():
    assert project_simplex(torch.tensor([0.5, -0.5])).tolist() == pytest.approx([1.0, 0.0])
    assert project_simplex(torch.tensor([0.2, 0.2, 0.2])).tolist() == pytest.approx([1 / 3] * 3)
    p = project_simplex(torch.tensor([2.0, 0.3, -1.0, 0.1]))
    assert p.sum().item() == pytest.approx(1.0) and (p >= 0).all()


@pytest.mark.parametrize("bad, why", [([0.5, -0.1, 0.6], "non-negative"), ([0.5, float("nan"), 0.5], "finite"),
                                      ([0.5, 0.5], "one value per member"), ([0.5, 0.3, 0.1], "sum to 1"),
                                      (["0.5", 0.25, 0.25], "numbers"), (0.3, "list")])
def test_bad_probabilities_are_refused(bad, why):
    with pytest.raises(ValueError, match=why):
        check_probabilities(bad, 3)


def test_r2s_draws_weights_its_losses_and_expected_accuracy_by_alpha(tiny_cs):
    from rst.data.datasets import synthetic_dataset
    from rst.evaluation.adaptive import expectation_loss
    from rst.evaluation.protocols import evaluate_r2s
    from rst.evaluation.r2s import R2S
    x, y = synthetic_dataset(16, seed=1)
    K = len(tiny_cs)
    alpha = [0.7] + [0.3 / (K - 1)] * (K - 1)
    r2s = R2S(tiny_cs, probabilities=alpha, switch="example", seed=0)
    counts = torch.bincount(r2s.draw(20000), minlength=K).double() / 20000
    assert counts.tolist() == pytest.approx(alpha, abs=0.02)
    ce = torch.stack([F.cross_entropy(r2s.member_logits(x)[k], y, reduction="none") for k in range(K)])
    assert torch.allclose(expectation_loss(r2s, x, y), (torch.tensor(alpha)[:, None] * ce).sum(0), atol=1e-5)
    rep = evaluate_r2s(r2s, x, y, eps=0.05, steps=2, protocols=("paper", "expectation"))
    res = rep.result("expectation")
    assert res.expected_acc == pytest.approx(sum(a * m for a, m in zip(alpha, res.per_member_acc)), abs=1e-6)
    paper = rep.result("paper")
    m = torch.tensor(paper.extra["transfer_matrix"])
    assert paper.expected_acc == pytest.approx(float(torch.tensor(alpha) @ m @ torch.tensor(alpha)), abs=1e-6)
    assert rep.config["probabilities"] == pytest.approx(alpha)
    uniform = R2S(tiny_cs)
    assert uniform.uniform and uniform.member_probs.tolist() == pytest.approx([1 / K] * K)


def _with_probabilities(data: bytes, value) -> bytes:
    """The same file with its metadata's switch_probabilities replaced (and its digest recomputed)."""
    import hashlib
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["rst"])
    meta["switch_probabilities"] = value
    raw = json.dumps(meta)
    header["__metadata__"] = {"rst": raw, "rst_sha256": hashlib.sha256(raw.encode()).hexdigest()}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data[8 + n:]


def test_alpha_travels_in_the_file_and_bad_alpha_is_refused_on_load(tiny_cs):
    from rst.evaluation.r2s import R2S
    K = len(tiny_cs)
    alpha = [0.5] + [0.5 / (K - 1)] * (K - 1)
    cs = CandidateSet(tiny_cs.spec, tiny_cs.tickets, probabilities=alpha)
    data = to_bytes(cs)
    back = load_tickets(data)
    assert back.probabilities == pytest.approx(alpha)
    assert R2S(back).member_probs.tolist() == pytest.approx(alpha)
    assert load_tickets(to_bytes(tiny_cs)).probabilities is None
    for bad, why in (([-0.5] + [1.5 / (K - 1)] * (K - 1), "non-negative"), ([math.nan] * K, "finite"),
                     ([1.0], "one value per member"), ([0.1] * K, "sum to 1"), ("uniform", "list")):
        with pytest.raises(MaskFileError, match=why):
            load_tickets(_with_probabilities(data, bad))
    with pytest.raises(ValueError):
        to_bytes(CandidateSet(tiny_cs.spec, tiny_cs.tickets, probabilities=[1.0] * K))
