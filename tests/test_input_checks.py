"""The [0, 1] input check: once per batch source (no device synchronisation per attack), still refusing bad direct input."""
from __future__ import annotations

import pytest
import torch

import rst.evaluation.attack_inputs as attack_inputs
import rst.evaluation.attacks as attacks
import rst.evaluation.metrics as evaluate
from rst.evaluation.attacks import AttackConfig, check_pixel_range, cw_linf, fgsm, fgsm_rs, pgd, run_attack
from rst.search.loop import SearchData, preset, run_search
from rst.data.datasets import split_train_val, synthetic_dataset


@pytest.fixture
def setup(tiny_model, tiny_batch):
    x, y = tiny_batch
    return tiny_model.eval(), x, y


@pytest.fixture
def count_checks(monkeypatch):
    """Count every call of check_pixel_range, wherever it is called from."""
    calls = []
    real = attacks.check_pixel_range

    def counting(x):
        calls.append(tuple(x.shape))
        return real(x)
    monkeypatch.setattr(attack_inputs, "check_pixel_range", counting)
    monkeypatch.setattr(evaluate, "check_pixel_range", counting)
    return calls


def test_direct_calls_still_refuse_inputs_outside_pixel_range(setup):
    model, x, y = setup
    bad = x * 2 - 1
    calls = [lambda: pgd(model, bad, y, 8 / 255, 2 / 255, 1), lambda: fgsm(model, bad, y, 8 / 255),
             lambda: fgsm_rs(model, bad, y, 8 / 255), lambda: cw_linf(model, bad, y, 8 / 255, 2 / 255, 1),
             lambda: run_attack(AttackConfig("pgd", steps=1), model, bad, y),
             lambda: evaluate.adversarial_examples(model, bad, y, AttackConfig("pgd", steps=1)),
             lambda: evaluate.robust_accuracy(model, x + 1.5, y, AttackConfig("fgsm"))]
    for call in calls:
        with pytest.raises(ValueError, match=r"\[0, 1\] pixel space"):
            call()
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\]"):
        check_pixel_range(torch.tensor([[-1.0, 0.5, 1.0]]))
    check_pixel_range(torch.tensor([[0.0, 1.0]]))                       # the edges are in range
    check_pixel_range(torch.empty(0, 3))                                 # nothing to check


def test_check_range_false_skips_only_the_range_check(setup, count_checks):
    model, x, y = setup
    cfg = AttackConfig("pgd", steps=2)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(run_attack(cfg, model, x, y, generator=g1, check_range=False),
                       run_attack(cfg, model, x, y, generator=g2))     # same attack, one check fewer
    assert len(count_checks) == 1
    for name in ("fgsm", "fgsm_rs", "pgd", "cw"):
        run_attack(AttackConfig(name, steps=1), model, x * 2 - 1, y, check_range=False)   # caller vouched
    assert len(count_checks) == 1
    with pytest.raises(ValueError, match="shape"):                       # the cheap checks still run
        run_attack(cfg, model, x, y[:2], check_range=False)


def test_evaluation_checks_its_images_once_not_once_per_batch(setup, count_checks):
    model, _, _ = setup
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    acc = evaluate.robust_accuracy(model, x, y, AttackConfig("pgd", steps=1), batch_size=8)   # 5 batches
    assert 0.0 <= acc <= 1.0
    assert count_checks == [(40, 1, 28, 28)]


def test_search_loop_does_not_check_every_inner_attack(count_checks):
    """The inner attack runs once per step (here 8); the range check runs once per batch source."""
    x, y = synthetic_dataset(600, seed=0)
    data = SearchData(*split_train_val(x, y, 88, seed=0))             # 512 train, 88 validation
    cfg = preset("tiny", epochs=1, val_size=88, val_images=88)
    steps = []
    run_search(cfg, data=data, progress=lambda e: steps.append(e) if e["event"] == "step" else None)
    assert len(steps) == 8                                               # 512 / 64
    # the loop checks its training set once and calls the inner attack with check_range=False
    # (rst.search.inner.ConfiguredAttack); validation checks its images once per evaluation call
    assert len(count_checks) <= 2, f"{len(count_checks)} range checks for 8 steps: {count_checks}"
