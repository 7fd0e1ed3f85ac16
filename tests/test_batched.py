"""Several tickets of one network in one batched pass (rst.search.batched.TicketBatch)."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from rst.evaluation.attacks import AttackConfig, run_attack
from rst.search.batched import TicketBatch, search_tickets
from rst.cli.commands import main as cli_main
from rst.evaluation.metrics import accuracy, robust_accuracy
from rst.network.masks import CandidateSet, load_tickets
from rst.network.masked import cached_masks, masked_layers, set_keep_ratio
from rst.network.models import NetworkSpec, build_network
from rst.search.loop import preset, run_search, search_data

SPEC = NetworkSpec("fmnist_conv4", dataset="synthetic", width=0.25, seed=3)
RATIOS = (0.1, 0.3, 0.7)


@pytest.fixture(scope="module")
def tiny_data():
    """The tiny preset's synthetic split with 384 of its 1,920 training images: 6 steps an epoch."""
    return search_data(preset("tiny", train_subset=384))


def _batch(ratios=RATIOS):
    return TicketBatch(build_network(SPEC), ratios)


def _single(r):
    net = build_network(SPEC)
    set_keep_ratio(net, r)
    return net


def test_forward_runs_member_k_on_chunk_k():
    torch.manual_seed(0)
    tb, x = _batch(), torch.rand(5, 1, 28, 28)
    for mode in ("eval", "train"):
        getattr(tb, mode)()
        out = tb(tb.stack(x, torch.zeros(5, dtype=torch.long))[0]).view(len(RATIOS), 5, -1)
        for k, r in enumerate(RATIOS):
            ref = getattr(_single(r), mode)()(x)
            torch.testing.assert_close(out[k], ref, rtol=1e-5, atol=1e-5)


def test_one_step_gives_each_member_its_own_searchs_gradient_and_bn_stats():
    """A deterministic attack (FGSM) on the stacked batch, BN in train mode, loss scaled by K."""
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    attack = AttackConfig("fgsm", eps=0.1)
    tb = _batch()
    xs, ys = tb.stack(x, y)
    x_adv = run_attack(attack, tb, xs, ys, train_mode=True)
    tb.train()
    (F.cross_entropy(tb(x_adv), ys) * tb.n_members).backward()
    for k, r in enumerate(RATIOS):
        net = _single(r)
        xa = run_attack(attack, net, x, y, train_mode=True)
        torch.testing.assert_close(x_adv[k * 16:(k + 1) * 16], xa, rtol=0, atol=1e-6)
        net.train()
        F.cross_entropy(net(xa), y).backward()
        for (name, layer), scores in zip(masked_layers(net), tb.scores):
            torch.testing.assert_close(scores.grad[k], layer.scores.grad, rtol=1e-4, atol=1e-6, msg=name)
        for (name, b), st in zip(net.named_buffers(), tb._stats()):
            torch.testing.assert_close(st[k].to(b.dtype), b, rtol=1e-4, atol=1e-6, msg=name)


def test_attacks_use_one_cached_mask_per_member():
    tb, x = _batch().eval(), torch.rand(3 * 4, 1, 28, 28)
    plain = tb(x)
    with cached_masks(tb):
        cached = tb._cached
        assert cached is not None and all(not w.requires_grad for w in cached)
        with cached_masks(tb):                       # re-entrant: the outer cache survives
            assert tb._cached is cached
        torch.testing.assert_close(tb(x), plain)
    assert tb._cached is None


def test_rows_must_split_into_members():
    with pytest.raises(ValueError, match="K\\*B"):
        _batch()(torch.rand(4, 1, 28, 28))
    with pytest.raises(ValueError):
        TicketBatch(build_network(SPEC), ())
    with pytest.raises(ValueError, match="keep_ratio"):
        TicketBatch(build_network(SPEC), (0.1, 1.5))
    with pytest.raises(ValueError, match="scope"):
        search_tickets(preset("tiny", scope="global"), (0.1, 0.3))


def test_member_accuracies_match_each_members_own_network():
    torch.manual_seed(1)
    x, y = torch.rand(40, 1, 28, 28), torch.randint(0, 10, (40,))
    tb = _batch()
    attack = AttackConfig("fgsm", eps=0.1)
    clean, robust = tb.member_accuracies(x, y), tb.member_accuracies(x, y, attack)
    for k, r in enumerate(RATIOS):
        net = _single(r).eval()
        assert clean[k] == pytest.approx(accuracy(net, x, y), abs=1 / 40 + 1e-9)
        assert robust[k] == pytest.approx(robust_accuracy(net, x, y, attack), abs=1 / 40 + 1e-9)


def test_select_keeps_each_members_best_epoch_and_load_best_restores_it():
    tb = _batch()
    with torch.no_grad():
        epoch0 = [s.detach().clone() for s in tb.scores]
        assert tb.select(0, [0.5, 0.2, 0.9]) == [0, 1, 2]
        for s in tb.scores:
            s.add_(1.0)
        epoch1 = [s.detach().clone() for s in tb.scores]
        assert tb.select(1, [0.4, 0.6, 0.9]) == [1]          # ties do not replace: only member 1 improved
        for s in tb.scores:
            s.add_(1.0)
    tb.load_best()
    assert tb.best_epoch.tolist() == [0, 1, 0]
    for s, e0, e1 in zip(tb.scores, epoch0, epoch1):
        torch.testing.assert_close(s[0], e0[0])
        torch.testing.assert_close(s[1], e1[1])
        torch.testing.assert_close(s[2], e0[2])


def test_one_member_batch_is_exactly_run_search(tiny_data):
    # exact maths: fp32 (bf16 runs differ by rounding; see the bf16 step test below)
    cfg = preset("tiny", epochs=2, keep_ratio=0.3, precision="fp32")
    single = run_search(cfg, device="cpu", data=tiny_data)
    (batched,) = search_tickets(cfg, (0.3,), device="cpu", data=tiny_data)
    for name, m in single.ticket.masks.items():
        assert torch.equal(m, batched.ticket.masks[name]), name
    for name, b in single.ticket.bn_stats.items():
        assert torch.equal(b, batched.ticket.bn_stats[name]), name
    assert batched.best_epoch == single.best_epoch
    assert batched.ticket.metrics == single.ticket.metrics


def test_search_tickets_returns_loadable_tickets_with_their_own_validation_numbers(tiny_data, tmp_path):
    cfg = preset("tiny", epochs=3)
    results = search_tickets(cfg, (0.1, 0.5), device="cpu", data=tiny_data, workdir=tmp_path)
    assert [r.config.keep_ratio for r in results] == [0.1, 0.5]
    cs = CandidateSet(results[0].spec, [r.ticket for r in results])
    x_val, y_val = tiny_data.x_val[:cfg.val_images], tiny_data.y_val[:cfg.val_images]
    for i, r in enumerate(results):
        t = r.ticket
        assert t.keep_ratio == r.config.keep_ratio and t.search_config["batched_with"] == [0.1, 0.5]
        # the selected epoch is the member's own best validation epoch
        best = max(r.history, key=lambda h: h["val_robust"])
        assert r.best_epoch == best["epoch"]
        assert t.metrics["val_robust"]["value"] == best["val_robust"]
        # the ticket file reproduces the member's recorded clean validation accuracy
        assert accuracy(cs.model(i), x_val, y_val) == pytest.approx(t.metrics["val_clean"]["value"],
                                                                   abs=1 / len(x_val) + 1e-9)
    # the members learned different masks, each with its own density
    kept = [sum(m.sum().item() for m in r.ticket.masks.values()) for r in results]
    assert kept[0] < kept[1]


def test_batched_search_resumes_to_the_same_tickets(tiny_data, tmp_path):
    cfg = preset("tiny", epochs=2, selection="last")
    full = search_tickets(cfg, (0.2, 0.6), device="cpu", data=tiny_data)
    calls = {"n": 0}

    def stop_after_first_epoch():
        calls["n"] += 1
        return calls["n"] > len(tiny_data.x_train) // cfg.batch_size   # in the second epoch

    stopped = search_tickets(cfg, (0.2, 0.6), device="cpu", data=tiny_data, workdir=tmp_path,
                             should_stop=stop_after_first_epoch)
    assert stopped[0].stopped and [h["complete"] for h in stopped[0].history] == [True, False]
    events = []
    resumed = search_tickets(cfg, (0.2, 0.6), device="cpu", data=tiny_data, workdir=tmp_path, resume=True,
                             progress=events.append)
    assert {e["epoch"] for e in events if e["event"] == "step"} == {1}     # continued from the checkpoint
    for a, b in zip(full, resumed):
        for name, m in a.ticket.masks.items():
            assert torch.equal(m, b.ticket.masks[name]), name


def test_cli_search_with_several_keep_ratios_writes_one_candidate_set(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["search", "--preset", "tiny", "--keep-ratios", "0.1,0.4", "--epochs", "1", "--train-subset", "256",
                   "--out", str(out), "--device", "cpu", "--quiet", "--test-images", "64"])
    assert rc == 0
    cs = load_tickets(out / "tickets.rst.safetensors")
    assert [t.keep_ratio for t in cs.tickets] == [0.1, 0.4]
    log = json.loads((out / "log.json").read_text())
    assert log["batched"] and [t["keep_ratio"] for t in log["tickets"]] == [0.1, 0.4]
    assert all("test_pgd20" in t.metrics for t in cs.tickets)
    capsys.readouterr()
    assert cli_main(["search", "--preset", "tiny", "--keep-ratios", "0.1,x", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: --keep-ratios expects comma-separated numbers, got '0.1,x'\n"


def test_state_dict_round_trip_and_device_move_keep_the_network():
    tb = _batch()
    clone = _batch()
    with torch.no_grad():
        for s in tb.scores:
            s.normal_()
    clone.load_state_dict(copy.deepcopy(tb.state_dict()))
    x = torch.rand(6, 1, 28, 28)
    torch.testing.assert_close(clone.eval()(x), tb.eval()(x))
    moved = tb.to(torch.float64)
    assert next(iter(dict(masked_layers(moved.network)).values())).weight.dtype == torch.float64


def _one_step_batched_and_single(inner_attack: str, precision: str):
    """One optimiser step of the shared loop on a 3-member batch and on each member's own network:
    yields (layer name, member k, batch scores after, own scores after, scores before)."""
    from rst.search.loop import SearchData, adversarial_fit, score_parameters
    cfg = preset("tiny", epochs=1, inner_attack=inner_attack, selection="last", val_size=0, val_images=0,
                 batch_size=16, augment=False, precision=precision)
    torch.manual_seed(2)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    data = SearchData(x, y, x[:0], y[:0])
    tb = _batch()
    start = [s.detach().clone() for s in tb.scores]
    adversarial_fit(tb, list(tb.scores), cfg, data, torch.device("cpu"))
    for k, r in enumerate(RATIOS):
        net = _single(r)
        adversarial_fit(net, score_parameters(net), cfg, data, torch.device("cpu"))
        for (name, layer), scores, s0 in zip(masked_layers(net), tb.scores, start):
            yield name, k, scores[k].detach(), layer.scores.detach(), s0[k]


def test_adversarial_fit_step_on_a_batch_equals_each_members_own_step():
    """One optimiser step of the shared loop: stacked batch, loss scaled by K, per-member update."""
    for name, k, batched, own, _ in _one_step_batched_and_single("fgsm", "fp32"):
        torch.testing.assert_close(batched, own, rtol=1e-4, atol=1e-6, msg=name)


def test_bf16_step_on_a_batch_equals_each_members_own_bf16_step():
    """bf16 autocast (on this CPU) through the batch: its BatchNorm runs inside vmap, whose batch-norm
    rule used to fail on a bf16 input ("expected scalar type BFloat16 but found Float"). Now one step
    of the batch must move every member's scores as that member's own bf16 step does, within bf16
    rounding: same direction (cosine) and the same length (the loss scale K).

    No inner attack here: a sign step (FGSM/PGD) turns bf16 rounding into different perturbations
    (a single bf16 step and a single fp32 step then agree only to cosine ~0.5-0.9 themselves)."""
    from rst.runtime.speed import bf16_supported
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    for name, k, batched, own, before in _one_step_batched_and_single("none", "bf16"):
        own, batched = (own - before).flatten(), (batched - before).flatten()
        assert F.cosine_similarity(own, batched, 0) > 0.95, name
        assert 0.9 < batched.norm() / own.norm() < 1.1, name
