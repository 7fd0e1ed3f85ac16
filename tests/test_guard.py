"""The catastrophic-overfitting guard (rst.search.guard): detect a collapse, roll back, go on with PGD."""
import pytest
import torch

import rst.search.loop
from rst.search.guard import CollapseGuard
from rst.search.inner import INNER_ATTACKS, ConfiguredAttack, register_inner_attack
from rst.evaluation.attacks import AttackConfig
from rst.network.models import NetworkSpec, build_network
from rst.search.loop import SearchData, adversarial_fit, preset, score_parameters

SPEC = NetworkSpec("fmnist_conv4", dataset="synthetic", width=0.25, seed=0)


class _Fit:
    """What the guard touches of rst.search.loop.Fit."""

    def __init__(self):
        self.model = build_network(SPEC, keep_ratio=0.5)
        self.optimizer = torch.optim.SGD(score_parameters(self.model), lr=0.1, momentum=0.9)
        self.inner = "single-step"

    def perturb(self):
        with torch.no_grad():
            for p in score_parameters(self.model):
                p.add_(1.0)
        self.optimizer.param_groups[0]["lr"] = 0.5


def _rec(epoch, val, train):
    return {"epoch": epoch, "val_robust": val, "train_adv_acc": train, "complete": True}


def test_a_collapse_rolls_back_network_and_optimiser_and_switches_to_pgd():
    cfg = preset("tiny", inner_attack="fgsm_rs")
    fit, guard = _Fit(), CollapseGuard(cfg, drop=0.15)
    guard.after_epoch(fit, _rec(0, 0.30, 0.40))
    guard.after_epoch(fit, _rec(1, 0.45, 0.50))                        # best so far: snapshot
    best = {k: v.clone() for k, v in fit.model.state_dict().items()}
    fit.perturb()                                                      # epoch 2 trains on
    collapsed = _rec(2, 0.05, 0.80)                                    # val PGD falls, train acc rises
    guard.after_epoch(fit, collapsed)
    assert "catastrophic overfitting at epoch 3" in collapsed["guard"]
    for k, v in fit.model.state_dict().items():
        assert torch.equal(v, best[k]), k
    assert fit.optimizer.param_groups[0]["lr"] == 0.1
    assert isinstance(fit.inner, ConfiguredAttack) and fit.inner.attack.name == "pgd"
    assert fit.inner.attack.steps == cfg.steps


@pytest.mark.parametrize("records", [
    [(0, 0.45, 0.50), (1, 0.05, 0.40)],          # robust accuracy fell but so did the training accuracy
    [(0, 0.45, 0.50), (1, 0.35, 0.80)],          # a drop smaller than `drop`
])
def test_no_rollback_without_both_signs(records):
    fit, guard = _Fit(), CollapseGuard(preset("tiny", inner_attack="fgsm_rs"), drop=0.15)
    for r in records:
        rec = _rec(*r)
        guard.after_epoch(fit, rec)
        assert "guard" not in rec
    assert fit.inner == "single-step"


def test_the_search_loop_recovers_from_a_collapse_and_resumes_with_the_fallback(monkeypatch, tmp_path):
    """A run built to collapse: training accuracy rises (clean training on easy data) while the scripted
    validation robust accuracy falls sharply at epoch 2. The loop must roll back and go on with the
    fallback, also after a kill and resume. (The collapse is scripted at the second epoch because the
    guard also needs training accuracy to rise, and on this easy data it reaches 1.0 within two
    epochs on some CPUs: a collapse scripted later found it flat and did not fire.)"""
    calls = {"fallback": 0}

    @register_inner_attack("test_fallback")
    def fallback(cfg):
        class Counting(ConfiguredAttack):
            def __call__(self, *a, **k):
                calls["fallback"] += 1
                return super().__call__(*a, **k)
        return Counting(AttackConfig("pgd", eps=cfg.eps, alpha=cfg.alpha, steps=1))
    script = iter([0.30, 0.02, 0.35, 0.36, 0.37, 0.38])
    monkeypatch.setattr(rst.search.loop, "validate", lambda *a, **k: {"val_clean": 0.5, "val_robust": next(script)})
    try:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 2, (64,), generator=g)
        x = (y.float().view(-1, 1, 1, 1) * 0.6 + 0.2).expand(64, 1, 28, 28).clone()   # linearly separable
        data = SearchData(x, y, x[:8], y[:8])
        cfg = preset("tiny", epochs=4, inner_attack="none", guard_fallback="test_fallback", batch_size=16,
                     augment=False, lr_milestones=())
        model = build_network(SPEC, keep_ratio=0.5)
        ck = tmp_path / "checkpoint.pt"
        fit = adversarial_fit(model, score_parameters(model), cfg, data, torch.device("cpu"), checkpoint=ck,
                              should_stop=lambda: calls["fallback"] >= 4)      # killed one epoch after the switch
        assert any("guard" in h for h in fit.history), [h["train_adv_acc"] for h in fit.history]
        switched = next(h["epoch"] for h in fit.history if "guard" in h)
        assert calls["fallback"] >= 4 and fit.stopped
        before = calls["fallback"]
        model = build_network(SPEC, keep_ratio=0.5)
        fit = adversarial_fit(model, score_parameters(model), cfg, data, torch.device("cpu"), checkpoint=ck,
                              resume=True)
        assert calls["fallback"] > before                             # the resumed run uses the fallback
        assert len(fit.history) == cfg.epochs and fit.history[switched]["guard"]
    finally:
        INNER_ATTACKS.pop("test_fallback")
