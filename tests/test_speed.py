"""Speed settings (rst.runtime.speed): bf16 autocast and channels_last chosen per device, never silently ignored."""
import pytest
import torch

import rst.runtime.speed
from rst.evaluation.metrics import robust_accuracy
from rst.evaluation.attacks import AttackConfig
from rst.network.models import NetworkSpec, build_network
from rst.search.loop import SearchData, adversarial_fit, preset, run_search, score_parameters
from rst.runtime.speed import bf16_supported, resolve_speed

CPU = torch.device("cpu")
SPEC = NetworkSpec("fmnist_conv4", dataset="synthetic", width=0.25, seed=0)
needs_bf16 = pytest.mark.skipif(not bf16_supported(CPU), reason="this CPU has no native bf16")


def test_auto_on_this_cpu_follows_its_bf16_support():
    s = resolve_speed("auto", channels_last=False, compile=False, device=CPU)
    assert s.precision == ("bf16" if bf16_supported(CPU) else "fp32")
    assert s.channels_last and not s.compile
    assert "auto on cpu" in s.reason


def test_auto_without_native_bf16_falls_back_and_explicit_bf16_is_refused(monkeypatch):
    monkeypatch.setattr(rst.runtime.speed, "_cpu_bf16_native", lambda: False)
    assert resolve_speed("auto", channels_last=False, compile=False, device=CPU).precision == "fp32"
    with pytest.raises(ValueError, match="no native bf16"):
        resolve_speed("bf16", channels_last=False, compile=False, device=CPU)


def test_a_ticket_batch_gets_no_channels_last():
    s = resolve_speed("auto", channels_last=False, compile=False, device=CPU, allow_channels_last=False)
    assert not s.channels_last
    with pytest.raises(ValueError, match="channels_last"):
        resolve_speed("fp32", channels_last=True, compile=False, device=CPU, allow_channels_last=False)


def _conv_dtypes(precision):
    model = build_network(SPEC, keep_ratio=0.5)
    seen = set()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    cfg = preset("tiny", epochs=1, selection="last", val_size=0, val_images=0, batch_size=16, precision=precision)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    fit = adversarial_fit(model, score_parameters(model), cfg, SearchData(x, y, x[:0], y[:0]), CPU)
    return seen, fit, model


@needs_bf16
def test_bf16_really_runs_the_convolutions_in_bf16_and_keeps_the_learned_tensors_fp32():
    seen, fit, model = _conv_dtypes("bf16")
    assert seen == {torch.bfloat16}
    assert fit.speed["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in score_parameters(model))
    seen32, fit32, _ = _conv_dtypes("fp32")
    assert seen32 == {torch.float32} and fit32.speed["precision"] == "fp32"


def test_the_resolved_settings_are_recorded_in_the_ticket():
    result = run_search(preset("tiny", epochs=1), device="cpu")
    speed = result.ticket.search_config["speed"]
    assert speed == resolve_speed("auto", channels_last=False, compile=False, device=CPU).to_dict()


@needs_bf16
def test_evaluation_attacks_are_fp32_unless_asked():
    model = build_network(SPEC, keep_ratio=0.5).eval()
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    attack = AttackConfig("pgd", eps=0.1, alpha=0.05, steps=2)
    robust_accuracy(model, x, y, attack)
    assert set(seen) == {torch.float32}
    seen.clear()
    robust_accuracy(model, x, y, attack, precision="bf16")
    assert torch.bfloat16 in seen and torch.float32 in seen       # attack in bf16, the accuracy in fp32


@needs_bf16
def test_cli_eval_accuracy_takes_the_attack_precision(tmp_path, repo_root):
    import json
    from rst.cli.commands import main
    args = ["eval", "accuracy", str(repo_root / "pretrained_masks/fmnist-cpu/tickets.rst.safetensors"), "--tickets",
            "0", "--images", "16", "--steps", "2", "--quiet", "--out", str(tmp_path / "accuracy.json")]
    assert main(args + ["--precision", "bf16"]) == 0
    rows = json.loads((tmp_path / "accuracy.json").read_text())["rows"]
    assert rows and all(r["attack_precision"] == "bf16" for r in rows)


def test_cli_output_file_that_is_a_folder_is_one_line(tmp_path, repo_root, capsys):
    from rst.cli.commands import main
    code = main(["eval", "accuracy", str(repo_root / "pretrained_masks/fmnist-cpu/tickets.rst.safetensors"),
                 "--tickets", "0", "--images", "8", "--steps", "1", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is a folder" in err


def test_memory_format_is_channels_last_inside_and_restored_after():
    import torch

    from rst.network.models import NetworkSpec, build_network
    from rst.runtime.speed import memory_format
    model = build_network(NetworkSpec("fmnist_conv4", dataset="synthetic", width=0.25, seed=0)).eval()
    conv = next(p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        with memory_format(model, True):
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
            inside = model(x)
        assert conv.is_contiguous()
        torch.testing.assert_close(inside, before)     # the layout changes, not the arithmetic
        with memory_format(model, False):
            assert conv.is_contiguous()


TINY32 = torch.finfo(torch.float32).tiny


def _subnormals(t: torch.Tensor) -> int:
    return int(((t != 0) & (t.abs() < TINY32)).sum())


def _ticket_with_a_dead_channel(tiny_spec):
    """A ticket whose first conv's channel 0 is masked out and whose BN statistics for it decayed
    into the subnormal range, as a search leaves them."""
    from rst.network.masks import extract_ticket
    model = build_network(tiny_spec, keep_ratio=0.5).eval()
    ticket = extract_ticket(model)
    first = next(k for k in ticket.masks)
    ticket.masks[first][0] = False                                   # channel 0 of the first conv: dead
    bn = next(k for k in ticket.bn_stats if k.endswith("running_mean"))
    ticket.bn_stats[bn][0] = -3e-41                                  # decayed mean of the dead channel
    ticket.bn_stats[bn.replace("running_mean", "running_var")][0] = 2e-40
    return ticket, bn


def test_flush_subnormal_zeroes_subnormals_only():
    from rst.runtime.speed import flush_subnormal_
    t = torch.tensor([1e-41, -1e-40, 0.0, 1e-30, -2.5, TINY32])
    normal = t[3:].clone()
    assert flush_subnormal_(t) is t
    assert t[:3].tolist() == [0.0, 0.0, 0.0] and torch.equal(t[3:], normal)
    counts = torch.tensor([3, 0, 7])
    assert flush_subnormal_(counts).tolist() == [3, 0, 7]           # integer tensors untouched


def test_a_ticket_with_decayed_bn_statistics_computes_no_subnormal_activations(tiny_spec, tiny_batch):
    """apply_ticket (and so CandidateSet.model) and R2S flush the dead channel's statistics: in eval mode
    it outputs exact zeros, not subnormals (which slow fp32 convolutions on a CPU about 13x); the
    ticket itself, and so its digest, is left as it was."""
    from rst.network.masks import CandidateSet, apply_ticket, ticket_digest
    from rst.evaluation.r2s import R2S
    ticket, bn = _ticket_with_a_dead_channel(tiny_spec)
    digest = ticket_digest(ticket)
    model = apply_ticket(build_network(tiny_spec, keep_ratio=0.5), ticket).eval()
    assert sum(_subnormals(b) for b in model.buffers() if b.is_floating_point()) == 0
    seen = []
    handle = model[1].features[1].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        logits = model(tiny_batch[0])
    handle.remove()
    assert _subnormals(seen[0]) == 0 and (seen[0][:, 0] == 0).all()  # the dead channel: exact zeros
    assert ticket_digest(ticket) == digest and ticket.bn_stats[bn][0].item() == pytest.approx(-3e-41, rel=1e-3)
    r2s = R2S(CandidateSet(tiny_spec, [ticket]))
    assert sum(_subnormals(b) for b in r2s.buffers() if b.is_floating_point()) == 0
    with torch.no_grad():
        assert torch.equal(r2s(tiny_batch[0]), logits)               # one member: plain inference


def test_a_fit_leaves_no_subnormal_bn_statistics(monkeypatch):
    """Every epoch of a search flushes the statistics its dead channels decayed into (before
    validation, selection and the checkpoint), so the ticket it returns carries none."""
    import rst.search.loop
    cfg = preset("tiny", keep_ratio=0.3, epochs=2)
    calls = []
    real = rst.search.loop.flush_subnormal_bn_stats_
    monkeypatch.setattr(rst.search.loop, "flush_subnormal_bn_stats_", lambda m: calls.append(m) or real(m))
    res = run_search(cfg, device=CPU)
    assert len(calls) == cfg.epochs
    assert sum(_subnormals(v) for v in res.ticket.bn_stats.values() if v.is_floating_point()) == 0
