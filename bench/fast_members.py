"""Do the members' BN-folded channels-last copies (``R2S.fast_members``) pay for the live attacks on a
CPU? One step of an attack on the expectation (every member's logits, the mean cross-entropy, the
input gradient) at the live page's chunk size, on the members themselves against their folded copies,
in fp32 and under bf16 autocast. Interleaved repetitions, the best of each; the ratio is what counts
on a shared machine. Also: how far the folded copies' logits and gradients are from the members'.

    OMP_NUM_THREADS=2 .venv/bin/python bench/fast_members.py            # writes bench/fast-members.json
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rst.evaluation.r2s import R2S
from rst.network.masks import load_tickets
from rst.runtime.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "pretrained_masks" / "fmnist-wide" / "tickets.rst.safetensors"


def step(r2s: R2S, x: torch.Tensor, y: torch.Tensor, fast: bool, bf16: bool) -> tuple[float, torch.Tensor]:
    """Seconds of one expectation step, and the input gradient."""
    xx = x.clone().requires_grad_(True)
    t = time.perf_counter()
    with (r2s.fast_members() if fast else contextlib.nullcontext()), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = r2s.member_logits(xx).float()                                  # (K, B, C)
    grad, = torch.autograd.grad(F.cross_entropy(logits.flatten(0, 1), y.repeat(r2s.K)), xx)
    return time.perf_counter() - t, grad


def main(batch: int = 32, reps: int = 8) -> dict:
    r2s = R2S(load_tickets(ZOO), keep_member_weights=True).eval()
    for p in r2s.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=g)                            # Fashion-MNIST shaped
    y = torch.randint(10, (batch,), generator=g)
    with torch.no_grad():
        exact = r2s.member_logits(x)
        with r2s.fast_members():
            folded = r2s.member_logits(x)
    _, g_exact = step(r2s, x, y, fast=False, bf16=False)
    _, g_fast = step(r2s, x, y, fast=True, bf16=False)
    times: dict[str, list[float]] = {}
    for _ in range(reps):
        for fast in (False, True):
            for bf16 in (False, True):
                times.setdefault(f"{'folded' if fast else 'members'}_{'bf16' if bf16 else 'fp32'}", []).append(
                    step(r2s, x, y, fast, bf16)[0])
    best = {k: min(v) for k, v in times.items()}
    result = {"what": "one expectation-attack step (6 members' logits + input gradient), fmnist-wide, width 1.5",
              "batch": batch, "repetitions": reps, "threads": torch.get_num_threads(),
              "load_1min": os.getloadavg()[0], "cpu": platform.processor() or platform.machine(),
              "best_s": best,
              "members_over_folded_bf16": best["members_bf16"] / best["folded_bf16"],
              "members_over_folded_fp32": best["members_fp32"] / best["folded_fp32"],
              "max_abs_logit_difference_fp32": float((folded - exact).abs().max()),
              "relative_gradient_difference_fp32": float((g_fast - g_exact).norm() / g_exact.norm()),
              "gradient_sign_agreement_fp32": float((g_fast.sign() == g_exact.sign()).float().mean()),
              "provenance": provenance()}
    (ROOT / "bench" / "fast-members.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    r = main()
    b = r["best_s"]
    print(f"bf16: members {b['members_bf16']:.4f} s, folded {b['folded_bf16']:.4f} s ({r['members_over_folded_bf16']:.2f}x); "
          f"fp32: members {b['members_fp32']:.4f} s, folded {b['folded_fp32']:.4f} s ({r['members_over_folded_fp32']:.2f}x); "
          f"threads {r['threads']}, load {r['load_1min']:.1f}; max logit difference {r['max_abs_logit_difference_fp32']:.1e}, "
          f"gradient {r['relative_gradient_difference_fp32']:.1e} relative, signs agree {100 * r['gradient_sign_agreement_fp32']:.2f} %")
