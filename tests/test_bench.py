"""rst.bench: the reference recipe's pieces are faithful, and both benchmarks run at toy size on the CPU."""
from __future__ import annotations

import json

import pytest
import torch

from rst.bench import (ReferenceStep, bench_search, main, reference_masks, reference_pgd,
                       sort_mask)
from rst.evaluation.attacks import AttackConfig
from rst.network.masked import TopKMask, masked_layers, n_keep
from rst.network.models import NetworkSpec, build_network


@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (10, 64), (7,), (3, 5, 1, 1)])
@pytest.mark.parametrize("keep_ratio", [0.01, 0.1, 0.3, 0.5, 0.9])
def test_sort_mask_keeps_the_same_set_as_top_k(shape, keep_ratio):
    magnitude = torch.rand(shape, generator=torch.Generator().manual_seed(1))     # continuous: no ties
    ref = sort_mask(magnitude, keep_ratio)
    kept = int(ref.sum())
    assert kept == magnitude.numel() - int((1 - keep_ratio) * magnitude.numel())   # GetSubnet's count
    assert abs(kept - n_keep(magnitude.numel(), keep_ratio)) <= 1                    # ours: round(k * n)
    if kept:
        assert torch.equal(ref, TopKMask.apply(magnitude, kept))                    # the same kept set


def test_reference_masks_match_ours_on_a_network_and_are_undone():
    model = build_network(NetworkSpec("resnet18", dataset="cifar10", width=0.125), keep_ratio=0.1)
    ours = {name: layer.mask().clone() for name, layer in masked_layers(model)}
    with reference_masks(model):
        for name, layer in masked_layers(model):
            ref = layer.mask()
            k = int(ref.sum())
            assert torch.equal(ref, TopKMask.apply(layer.scores.abs().detach(), k)), name
            if k == layer.n_keep:
                assert torch.equal(ref, ours[name]), name
    for name, layer in masked_layers(model):
        assert "mask" not in layer.__dict__ and torch.equal(layer.mask(), ours[name])


def test_sort_mask_is_straight_through():
    s = torch.randn(6, 4, requires_grad=True)
    (sort_mask(s.abs(), 0.5) * torch.arange(24.0).view(6, 4)).sum().backward()
    assert torch.equal(s.grad, torch.sign(s.detach()) * torch.arange(24.0).view(6, 4))


def test_reference_step_updates_scores_and_reference_pgd_stays_in_the_ball(tiny_spec):
    model = build_network(tiny_spec, keep_ratio=0.5)
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)
    model.train()
    with reference_masks(model):
        x_adv = reference_pgd(model, x, y, eps=0.1, alpha=0.05, steps=2)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    before = [layer.scores.detach().clone() for _, layer in masked_layers(model)]
    loss = ReferenceStep(model, AttackConfig("pgd", eps=0.1, alpha=0.05, steps=2))(x, y)
    assert torch.isfinite(loss)
    assert all(not torch.equal(b, layer.scores) for b, (_, layer) in zip(before, masked_layers(model)))


def test_bench_search_toy_runs_both_variants():
    r = bench_search(toy=True, device="cpu", steps=1, attack_steps=2)
    assert r["reference"]["images_per_s"] > 0 and r["ours"]["images_per_s"] > 0
    assert r["speedup"] == pytest.approx(r["ours"]["images_per_s"] / r["reference"]["images_per_s"])
    assert r["config"]["arch"] == "resnet18" and r["config"]["dataset_shape"] == [3, 32, 32]


def test_bench_transfer_toy_matrices_agree(tmp_path):
    out = tmp_path / "transfer.json"
    assert main(["transfer", "--toy", "--device", "cpu", "--k", "4", "--images", "32", "--attack-steps", "2",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["naive"]["seconds"] > 0 and r["ours"]["seconds"] > 0
    assert r["naive"]["attacks"] == 16 and r["ours"]["attacks"] == 4
    assert r["identical"] and r["max_abs_diff"] == 0.0        # same seed per source: the same examples
    assert "git_revision" in r["provenance"]


def test_bench_tickets_toy_times_one_ticket_and_a_batch(tmp_path):
    out = tmp_path / "tickets.json"
    assert main(["tickets", "--toy", "--device", "cpu", "--k", "3", "--attack-steps", "1", "--steps", "1",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["config"]["k"] == 3 and len(r["config"]["keep_ratios"]) == 3
    seq, bat = r["sequential"]["ticket_images_per_s"], r["batched"]["ticket_images_per_s"]
    assert seq > 0 and bat > 0 and r["speedup"] == pytest.approx(bat / seq)
    # the batch pushes K tickets through each step: ticket-images = K x batch x steps
    assert bat == pytest.approx(3 * 32 / r["batched"]["seconds_per_step"])


def test_time_to_ticket_toy_runs_both_recipes_in_lockstep_and_plots(tmp_path):
    from rst.bench import bench_time_to_ticket, plot_time_to_ticket
    r = bench_time_to_ticket(toy=True, budget=2.0, points=2)
    for name in ("reference", "ours"):
        curve = r[name]["curve"]
        assert len(curve) == 3 and all(0 <= p["val_robust"] <= p["val_clean"] + 1e-9 or p["val_clean"] == 0
                                       for p in curve)
        assert curve[0]["seconds"] == 0 and curve[1]["seconds"] >= 1.0 and curve[2]["seconds"] >= 2.0
    # time 0: the same untrained ticket of the same seeded network for both
    assert r["reference"]["curve"][0]["val_robust"] == r["ours"]["curve"][0]["val_robust"]
    assert r["reference"]["curve"][0]["val_clean"] == r["ours"]["curve"][0]["val_clean"]
    assert "fp32" in r["reference"]["recipe"] and "N-FGSM" in r["ours"]["recipe"]
    assert r["target"] == max(p["val_robust"] for p in r["reference"]["curve"])
    assert r["reference"]["time_to_target"] is not None
    t_ref, t_ours = r["reference"]["time_to_target"], r["ours"]["time_to_target"]
    if t_ref and t_ours:
        assert r["ratio"] == t_ref / t_ours
    else:   # ours never got there, or (a toy run that did not improve on time 0) one was there untrained
        assert r["ratio"] is None
    plot_time_to_ticket(r, tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["time-to-ticket", "--toy", "--budget", "1", "--points", "1", "--json", str(tmp_path / "t.json")]) == 0


def test_gpu_check_script_commands_parse(repo_root):
    """bench/gpu_check.sh runs once on a lent GPU: its every rst / rst.bench command line must parse here."""
    import re
    import shlex
    from rst.bench.cli import build_parser as bench_parser
    from rst.cli.commands import build_parser as cli_parser
    text = (repo_root / "bench" / "gpu_check.sh").read_text().replace("\\\n", " ")
    commands = re.findall(r'"\$PY" -m (rst\.bench|rst) ([^\n]*)', text)
    assert {m for m, _ in commands} == {"rst", "rst.bench"} and len(commands) >= 7
    for module, rest in commands:
        words = [w.replace('"$OUT/', '/tmp/').replace("$OUT/", "/tmp/") for w in shlex.split(rest.replace('"$OUT', '"/tmp'))]
        parser = bench_parser() if module == "rst.bench" else cli_parser()
        parser.parse_args(words)


def test_crossing_time_interpolates_between_validations():
    from rst.bench.time_to_ticket import _crossing_time
    curve = [{"seconds": 0, "val_robust": 0.0}, {"seconds": 60, "val_robust": 0.3}, {"seconds": 120, "val_robust": 0.5}]
    assert _crossing_time(curve, 0.4) == pytest.approx(90)
    assert _crossing_time(curve, 0.3) == pytest.approx(60)
    assert _crossing_time(curve, 0.6) is None
