"""The search's inner attacks behind one interface (rst.search.inner), and a new one plugged in from outside."""
import pytest
import torch

from rst.search.inner import INNER_ATTACKS, NFGSM, InnerAttack, build_inner_attack, register_inner_attack
from rst.network.models import NetworkSpec, build_network
from rst.search.loop import SearchConfig, SearchData, adversarial_fit, preset, run_search, score_parameters

SPEC = NetworkSpec("fmnist_conv4", dataset="synthetic", width=0.25, seed=0)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return SearchData(x, y, x[:0], y[:0])


class Spy(InnerAttack):
    """Counts its calls and the optimiser steps after them; perturbs by a fixed +eps/2."""

    def __init__(self, eps):
        self.eps, self.calls, self.updates, self.epochs = eps, 0, 0, 0

    def __call__(self, model, x, y, *, generator=None):
        self.calls += 1
        return (x + self.eps / 2).clamp(0, 1)

    def after_update(self):
        self.updates += 1

    def start_epoch(self):
        self.epochs += 1


def test_an_inner_attack_registered_outside_the_library_runs_a_search():
    spies = []

    @register_inner_attack("test_spy")
    def make(cfg):
        spies.append(Spy(cfg.eps))
        return spies[-1]
    try:
        cfg = preset("tiny", epochs=2, inner_attack="test_spy", val_size=64, val_images=32, batch_size=32)
        data = _data(128)
        result = run_search(cfg, device="cpu", data=SearchData(data.x_train, data.y_train,
                                                              data.x_train[:32], data.y_train[:32]))
        (spy,) = spies
        assert spy.calls == spy.updates == 2 * 4                      # 2 epochs of 4 batches
        assert spy.epochs == 2
        assert result.ticket.search_config["inner_attack"] == "test_spy"
    finally:
        INNER_ATTACKS.pop("test_spy")


def test_config_refuses_an_unknown_inner_attack():
    with pytest.raises(ValueError, match="inner_attack must be one of"):
        SearchConfig(inner_attack="pgdd")


def test_n_fgsm_is_noise_plus_one_unprojected_step():
    model = build_network(SPEC, keep_ratio=0.5)
    x, y = torch.rand(32, 1, 28, 28) * 0.5 + 0.25, torch.randint(0, 10, (32,))
    eps = 0.05
    g = lambda: torch.Generator().manual_seed(1)
    a, b = NFGSM(eps)(model, x, y, generator=g()), NFGSM(eps)(model, x, y, generator=g())
    assert torch.equal(a, b)                                           # seeded
    dist = (a - x).abs().amax()
    assert dist <= 3 * eps + 1e-6                                      # k eps noise + alpha = eps step
    assert dist > eps                                                  # not projected onto the eps-ball
    assert a.min() >= 0 and a.max() <= 1


def test_free_at_replays_each_batch_and_carries_its_perturbation():
    cfg = preset("tiny", epochs=1, inner_attack="free", steps=3, selection="last", val_size=0, val_images=0,
                 batch_size=32, augment=False)
    attack = build_inner_attack(cfg)
    assert attack.replays == 3
    model = build_network(SPEC, keep_ratio=0.5)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    x_adv = attack(model, x, y)
    torch.nn.functional.cross_entropy(model(x_adv), y).backward()
    attack.after_update()
    second = attack(model, x, y)
    assert 0 < (second - x).abs().amax() <= cfg.eps + 1e-6             # moved by eps * sign(grad), clipped
    attack.start_epoch()
    assert torch.equal(attack(model, x, y).detach(), x)                # delta restarts at zero


@pytest.mark.parametrize("name", sorted(INNER_ATTACKS))
def test_every_registered_inner_attack_trains(name):
    cfg = preset("tiny", epochs=1, inner_attack=name, selection="last", val_size=0, val_images=0, batch_size=32,
                 steps=2)
    model = build_network(SPEC, keep_ratio=0.5)
    before = [p.detach().clone() for p in score_parameters(model)]
    fit = adversarial_fit(model, score_parameters(model), cfg, _data(64), torch.device("cpu"))
    assert fit.history[0]["complete"]
    assert any(not torch.equal(b, p) for b, p in zip(before, score_parameters(model)))
    assert build_inner_attack(cfg).describe()


# --------------------------------------------------------------------------------------------
# the boosted search's inner attack (rst.search.boosted_attack) and the boosted search (rst.search.boosted)
# --------------------------------------------------------------------------------------------


def test_wrong_class_term_by_hand():
    from rst.search.boosted_attack import wrong_class_term
    z, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    ls = torch.log_softmax(-z, 1)[0]
    assert torch.allclose(wrong_class_term(z, y), -(ls[1] + ls[2]) / 2)


def test_boosted_loss_is_the_alpha_weighted_expected_loss_and_earlier_members_get_no_gradient(tiny_cs, tiny_model,
                                                                                           tiny_batch):
    import torch.nn.functional as F
    from rst.search.boosted_attack import BoostedPGD, wrong_class_term
    from rst.evaluation.r2s import R2S
    frozen = R2S(tiny_cs, probabilities=[0.5, 0.3, 0.2])
    attack = BoostedPGD(frozen, eps=0.1, step=0.05, steps=2, wrong_class=0.7)
    assert torch.allclose(attack.weights, torch.tensor([0.375, 0.225, 0.15, 0.25]))     # alpha (m-1)/m, then 1/m
    x, y = tiny_batch
    tiny_model.eval()

    def per(z):
        return F.cross_entropy(z, y, reduction="none") + 0.7 * wrong_class_term(z, y)
    with torch.no_grad():
        by_hand = 0.25 * per(tiny_model(x))
        for k, a in enumerate([0.5, 0.3, 0.2]):
            with frozen.use_member(k):
                by_hand += 0.75 * a * per(frozen(x))
        before = frozen.member_logits(x).clone()
        new_before = tiny_model(x).clone()
    loss = attack.loss(tiny_model, x, y)
    assert torch.allclose(loss, by_hand, atol=1e-5)
    opt = torch.optim.SGD(score_parameters(tiny_model), lr=10.0)
    loss.sum().backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in score_parameters(tiny_model))
    opt.step()
    with torch.no_grad():
        assert torch.equal(frozen.member_logits(x), before)                 # earlier members unchanged
        assert not torch.equal(tiny_model(x), new_before)                   # (the new one moved)
    x_adv = attack(tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_boosted_apgd_ascends_the_same_loss_inside_the_ball_and_leaves_earlier_members_alone(tiny_cs, tiny_model,
                                                                                         tiny_batch):
    from rst.evaluation.r2s import R2S
    from rst.search.boosted_attack import BoostedAPGD, BoostedPGD, _StackedLogits
    frozen = R2S(tiny_cs, probabilities=[0.5, 0.3, 0.2])
    attack = BoostedAPGD(frozen, eps=0.1, step=0.05, steps=5, wrong_class=0.7)
    x, y = tiny_batch
    tiny_model.eval()
    target = _StackedLogits(attack, tiny_model)
    with torch.no_grad():
        assert torch.allclose(target.loss(target(x), y), BoostedPGD.loss(attack, tiny_model, x, y), atol=1e-5)
        before = frozen.member_logits(x).clone()
        clean_loss = attack.loss(tiny_model, x, y)
    x_adv = attack(tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert attack.loss(tiny_model, x_adv, y).mean() > clean_loss.mean()     # it ascends the loss
        assert torch.equal(frozen.member_logits(x), before)
    assert all(p.grad is None for p in frozen.parameters())
    again = attack(tiny_model, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, x_adv)                                             # seeded by the generator
    assert "APGD-5" in attack.describe() and "step=" not in attack.describe()
    cfg = preset("tiny", inner_attack="boosted", boost_inner="apgd")
    assert isinstance(build_inner_attack(cfg), BoostedAPGD)
    with pytest.raises(ValueError, match="boost_inner must be one of"):
        preset("tiny", boost_inner="fgsm")


def test_boosted_search_records_its_recipe_and_alpha_and_resumes(tmp_path, monkeypatch):
    import rst.search.loop
    from rst.search.boosted import boosted_search
    from rst.network.masks import load_tickets
    cfg = preset("tiny", epochs=1, val_size=32, val_images=32, precision="fp32", boost_wrong_class=0.5)
    data = _data(96)
    data = SearchData(data.x_train[:64], data.y_train[:64], data.x_train[64:], data.y_train[64:])
    kw = dict(data=data, alpha_images=16, alpha_iterations=2, arc_steps=1)
    res = boosted_search(cfg, 2, tmp_path, **kw)
    cs = res.candidate_set
    assert len(cs) == 2 and abs(sum(cs.probabilities) - 1) < 1e-4
    sc = [t.search_config for t in cs.tickets]
    assert [c["inner_attack"] for c in sc] == ["boosted", "boosted"]
    assert sc[0]["boost_members"] == "" and sc[1]["boost_members"].endswith("set1.rst.safetensors")
    assert sc[1]["boost_wrong_class"] == 0.5 and sc[1]["boost_warm_start"] is True
    # killed after member 0: only member 1 is searched again
    (tmp_path / "set2.rst.safetensors").unlink()
    calls = []
    real = rst.search.loop.run_search
    monkeypatch.setattr(rst.search.loop, "run_search", lambda c, **k: calls.append(c.boost_members) or real(c, **k))
    again = boosted_search(cfg, 2, tmp_path, **kw).candidate_set
    assert len(calls) == 1 and calls[0].endswith("set1.rst.safetensors")
    assert len(load_tickets(tmp_path / "set2.rst.safetensors")) == 2 and len(again) == 2


def test_a_boosted_search_from_a_given_first_member_searches_only_the_rest(tmp_path, monkeypatch):
    import rst.search.loop
    from rst.network.masks import CandidateSet
    from rst.search.boosted import boosted_search
    cfg = preset("tiny", epochs=1, val_size=32, val_images=32, precision="fp32")
    data = _data(96)
    data = SearchData(data.x_train[:64], data.y_train[:64], data.x_train[64:], data.y_train[64:])
    kw = dict(data=data, alpha_images=16, alpha_iterations=2, arc_steps=1)
    given = rst.search.loop.run_search(cfg.replace(epochs=1), data=data, workdir=tmp_path / "given").ticket
    given.name = "given"
    first = CandidateSet(cfg.network_spec(), [given])
    other = CandidateSet(cfg.replace(seed=cfg.seed + 1).network_spec(), [given])
    with pytest.raises(ValueError, match="another network"):
        boosted_search(cfg, 2, tmp_path / "refused", first=other, **kw)
    calls = []
    real = rst.search.loop.run_search
    monkeypatch.setattr(rst.search.loop, "run_search", lambda c, **k: calls.append(k.get("initial_state")) or real(c, **k))
    cs = boosted_search(cfg, 2, tmp_path / "boost", first=first, **kw).candidate_set
    assert len(calls) == 1 and calls[0] is None                 # member 1 only, fresh: the given one has no scores
    assert [t.name for t in cs.tickets] == ["given", "boost1-keep0.5"]
    assert all(torch.equal(cs.tickets[0].masks[k], given.masks[k]) for k in given.masks)
    assert cs.tickets[1].search_config["boost_members"].endswith("set1.rst.safetensors")
    assert cs.tickets[1].search_config["boost_warm_start"] is False    # recorded as it ran: fresh
    assert len(cs.probabilities) == 2 and abs(sum(cs.probabilities) - 1) < 1e-4
