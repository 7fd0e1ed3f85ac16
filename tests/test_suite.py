"""The attack-suite interface (rst.evaluation.suite) on constructed cases whose numbers are known by hand:
per-image scores of plain and switching models, the cumulative per-image worst case, its standard error
and the paired interval, and the random streams of PGDAttack."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rst.data.datasets import synthetic_dataset
from rst.evaluation.per_image import paired_difference
from rst.evaluation.suite import (EvalAttack, FunctionAttack, PGDAttack, accuracy_with_se, attacked_correct,
                                  correct_per_member, score, worst_case)
from toy_ensembles import BinaryMembers

# an "image" is (label / 10, fooled flag, id / 1000): the models read the label off it, and an attack
# fools them by raising the flag of the images it chooses


def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(n) % 10
    return torch.stack([y / 10, torch.zeros(n), torch.arange(n) / 1000], 1), y


def ids(x: torch.Tensor) -> list[int]:
    return [round(float(v) * 1000) for v in x[:, 2]]


class Reader(nn.Module):
    """Right unless the flag is up (``wrong``: always wrong)."""

    def __init__(self, wrong: bool = False):
        super().__init__()
        self.wrong = wrong
        self.unused = nn.Parameter(torch.zeros(()))          # something to take the device from

    def forward(self, x):
        label = torch.round(x[:, 0] * 10).long()
        fooled = (x[:, 1] > 0.5) | self.wrong
        return F.one_hot(torch.where(fooled, (label + 1) % 10, label), 10).float()


class TwoMembers(BinaryMembers):
    """A switching model: member 0 (p = 0.75) a Reader, member 1 (p = 0.25) always wrong."""

    def __init__(self):
        super().__init__(2, torch.tensor([0.75, 0.25]))
        self.readers = nn.ModuleList([Reader(), Reader(wrong=True)])

    def _logits(self, k, x):
        return self.readers[k](x)


class Flip(EvalAttack):
    """Raises the flag of the images with an id in ``targets``; remembers every id it was given."""

    def __init__(self, name: str, targets):
        self.name, self.targets, self.seen, self.sessions = name, set(targets), [], 0

    @contextlib.contextmanager
    def session(self, model):
        self.sessions += 1
        yield

    def examples(self, model, x, y, batch_index=0):
        self.seen += ids(x)
        x_adv = x.clone()
        x_adv[torch.tensor([i in self.targets for i in ids(x)]), 1] = 1.0
        return x_adv


def test_scores_are_correctness_for_a_plain_model_and_expected_correctness_for_a_switching_one():
    x, y = images(6)
    assert torch.equal(score(Reader(), x, y), torch.ones(6))
    assert torch.equal(score(Reader(wrong=True), x, y), torch.zeros(6))
    assert torch.allclose(score(TwoMembers(), x, y), torch.full((6,), 0.75))
    assert torch.equal(correct_per_member(TwoMembers(), x, y), torch.tensor([[True] * 6, [False] * 6]))
    assert correct_per_member(Reader(), x, y).shape == (1, 6)
    flip = Flip("a", {1, 4})
    assert torch.equal(flip(Reader(), x, y), torch.tensor([1.0, 0, 1, 1, 0, 1]))          # the score of its examples
    assert torch.allclose(flip(TwoMembers(), x, y), torch.tensor([0.75, 0, 0.75, 0.75, 0, 0.75]))


def test_worst_case_is_cumulative_and_a_later_attack_sees_only_the_images_still_correct():
    x, y = images(10)
    a, b = Flip("a", {0, 1, 2}), Flip("b", {2, 3, 4})
    ticks = []
    res = worst_case(Reader(), x, y, [a, b], batch_size=4, tick=lambda: ticks.append(1))
    assert sorted(a.seen) == list(range(10)) and sorted(b.seen) == list(range(3, 10))
    assert a.sessions == b.sessions == 1 and len(ticks) == 3                     # clean, then each attack
    assert torch.equal(res.clean, torch.ones(10))
    assert torch.equal(res.after["a"], torch.tensor([0.0] * 3 + [1.0] * 7))
    assert torch.equal(res.correct, torch.tensor([0.0] * 5 + [1.0] * 5))
    assert torch.equal(res.after["b"], res.correct) and res.tracked is None
    p, se = accuracy_with_se(res.correct)
    assert p == 0.5 and se == pytest.approx(math.sqrt(0.5 * 0.5 / 10))
    # an always-wrong model: no image is left to attack
    c = Flip("c", range(10))
    res = worst_case(Reader(wrong=True), x, y, [c], batch_size=4)
    assert c.seen == [] and torch.equal(res.correct, torch.zeros(10))


def test_worst_case_of_a_switching_model_keeps_the_lower_expected_score_and_its_members():
    x, y = images(5)
    a, b, nothing = Flip("a", {0}), Flip("b", {0, 1}), Flip("nothing", set())
    res = worst_case(TwoMembers(), x, y, [nothing, a, b], batch_size=2, track=correct_per_member)
    assert torch.allclose(res.clean, torch.full((5,), 0.75))
    assert torch.allclose(res.after["nothing"], res.clean)
    assert torch.allclose(res.after["a"], torch.tensor([0.0, 0.75, 0.75, 0.75, 0.75]))
    assert sorted(b.seen) == [1, 2, 3, 4]                       # image 0 already scores 0
    assert torch.allclose(res.correct, torch.tensor([0.0, 0.0, 0.75, 0.75, 0.75]))
    # each member's correctness on each image's worst input
    assert torch.equal(res.tracked, torch.tensor([[False, False, True, True, True], [False] * 5]))
    p, se = accuracy_with_se(res.correct)
    assert p == pytest.approx(0.45) and se == pytest.approx(math.sqrt(0.45 * 0.55 / 5))


def test_the_paired_interval_of_two_worst_cases_on_the_same_images():
    x, y = images(8)
    first = worst_case(Reader(), x, y, [Flip("a", {0})], batch_size=8).correct           # 7 of 8
    second = worst_case(Reader(), x, y, [Flip("a", {0, 1, 2, 3})], batch_size=8).correct  # 4 of 8
    d = paired_difference(first, second)
    diff = torch.tensor([0.0, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float64)
    se = math.sqrt(((diff - 3 / 8) ** 2).sum() / 7) / math.sqrt(8)
    assert d["difference"] == pytest.approx(3 / 8) and d["se"] == pytest.approx(se)
    assert d["ci_low"] == pytest.approx(3 / 8 - 1.96 * se) and d["ci_high"] == pytest.approx(3 / 8 + 1.96 * se)
    assert d["n_only_first"] == 3 and d["n_only_second"] == 0 and d["significant"] == (3 / 8 - 1.96 * se > 0)


def test_attacked_correct_runs_every_image_in_one_session_or_hands_a_whole_set_attack_all_of_them():
    x, y = images(7)
    a, ticks = Flip("a", {5}), []
    c = attacked_correct(TwoMembers(), a, x, y, batch_size=3, tick=lambda: ticks.append(1))
    assert c.shape == (2, 7) and len(ticks) == 3 and a.sessions == 1 and sorted(a.seen) == list(range(7))
    assert c[0].tolist() == [True] * 5 + [False, True] and not c[1].any()
    calls = []

    class Whole(FunctionAttack):
        whole_set = True

    whole = Whole(lambda m, xb, yb: calls.append(len(xb)) or xb, "whole")
    assert torch.equal(attacked_correct(Reader(), whole, x, y, batch_size=3), torch.ones(1, 7, dtype=torch.bool))
    assert calls == [7]


def test_pgd_attack_streams_shared_per_pass_and_per_batch():
    from rst.evaluation.attacks import pgd
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.rand(6, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    per_batch = PGDAttack(0.1, 0.05, 2, seed=5, batch_seed_stride=3)
    want = pgd(model, x[3:], y[3:], 0.1, 0.05, 2, generator=torch.Generator().manual_seed(5 + 3))
    assert torch.equal(per_batch.examples(model, x[3:], y[3:], batch_index=1), want)
    per_pass = PGDAttack(0.1, 0.05, 2, seed=5)
    runs = []
    for _ in range(2):
        with per_pass.session(model):
            runs.append(torch.cat([per_pass.examples(model, x[:3], y[:3], 0), per_pass.examples(model, x[3:], y[3:], 1)]))
    assert torch.equal(runs[0], runs[1])                                         # a fresh stream at every pass
    g = torch.Generator().manual_seed(5)
    assert torch.equal(runs[0][:3], pgd(model, x[:3], y[:3], 0.1, 0.05, 2, generator=g))
    shared = PGDAttack(0.1, 0.05, 2, generator=torch.Generator().manual_seed(5))
    with shared.session(model):
        first = shared.examples(model, x[:3], y[:3], 0)
    with shared.session(model):
        again = shared.examples(model, x[:3], y[:3], 0)
    assert torch.equal(first, runs[0][:3]) and not torch.equal(again, first)    # one stream for every pass


def test_an_r2s_scores_the_expected_correctness_over_its_members(tiny_cs):
    from rst.data.datasets import synthetic_dataset
    from rst.evaluation.r2s import R2S
    x, y = synthetic_dataset(16, seed=1)
    r2s = R2S(tiny_cs)
    ok = correct_per_member(r2s, x, y)
    assert ok.shape == (3, 16)
    assert torch.allclose(score(r2s, x, y), ok.float().mean(0))
    assert torch.equal(score(tiny_cs.model(1), x, y), ok[1].float())


def test_a_member_fixed_inside_use_member_scores_as_a_plain_model(tiny_cs):
    from rst.evaluation.r2s import R2S
    from rst.evaluation.suite import is_switching, score
    x, y = synthetic_dataset(16, seed=3)
    r2s = R2S(tiny_cs)
    assert is_switching(r2s) and r2s.fixed_member is None
    with r2s.use_member(1):
        assert not is_switching(r2s) and r2s.fixed_member == 1
        s = score(r2s, x, y)
    with torch.no_grad():
        member = (r2s.member_logits(x)[1].argmax(1) == y).float()
    assert torch.equal(s, member) and set(s.tolist()) <= {0.0, 1.0}
