"""Does one batched pass over R2S's members pay on a CPU? ``member_logits`` (K forwards, one per
member) against ``torch.func.vmap`` over the K members' masked weights and BN statistics (PyTorch
turns the convolutions into one grouped convolution), forward + backward w.r.t. the input, as one
step of an attack on the expectation. Interleaved repetitions, the best of each; the ratio is what
counts on a shared machine.

    OMP_NUM_THREADS=2 .venv/bin/python bench/batched_members.py            # writes bench/batched-members.json
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.func import vmap

from rst.evaluation.r2s import R2S
from rst.network.masks import load_tickets
from rst.runtime.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "pretrained_masks" / "fmnist-wide" / "tickets.rst.safetensors"


def stacked_members(r2s: R2S) -> dict:
    """Every member's ``w * mask`` per masked layer and BN statistic, stacked on a new first axis (K, ...)."""
    out: dict = {}
    for k in range(r2s.K):
        r2s._activate(k)
        for name, w in r2s._weights.items():
            out.setdefault(name, []).append(w)
        for key, (module, buf) in r2s._bn_modules.items():
            out.setdefault(("bn", key), []).append(getattr(module, buf))
    return {key: torch.stack(v) for key, v in out.items()}


def vmapped_logits(r2s: R2S, stacked: dict):
    """``x -> (K, B, classes)``: the members' logits in one vmapped pass."""
    def member(weights, x):
        for name, layer in r2s._layers.items():
            layer._cached_weight = weights[name]
        for key, (module, buf) in r2s._bn_modules.items():
            setattr(module, buf, weights[("bn", key)])
        return r2s.net(x)
    return lambda x: vmap(member, in_dims=(0, None))(stacked, x)


def step_seconds(f, x: torch.Tensor) -> float:
    xx = x.clone().requires_grad_(True)
    t = time.perf_counter()
    f(xx).sum().backward()
    return time.perf_counter() - t


def main(batch: int = 128, reps: int = 6) -> dict:
    r2s = R2S(load_tickets(ZOO)).eval()
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))     # Fashion-MNIST shaped
    loop = r2s.member_logits
    with torch.no_grad():
        reference = loop(x)
    batched = vmapped_logits(r2s, stacked_members(r2s))
    with torch.no_grad():
        diff = (batched(x) - reference).abs().max().item()
    loop_t, vmap_t = [], []
    for _ in range(reps):
        loop_t.append(step_seconds(loop, x))
        vmap_t.append(step_seconds(batched, x))
    result = {"what": "R2S member logits, forward + input gradient, fmnist-wide (6 members, width 1.5)",
              "batch": batch, "repetitions": reps, "threads": torch.get_num_threads(),
              "load_1min": os.getloadavg()[0], "cpu": platform.processor() or platform.machine(),
              "max_abs_logit_difference": diff, "loop_best_s": min(loop_t), "vmap_best_s": min(vmap_t),
              "vmap_over_loop": min(vmap_t) / min(loop_t), "provenance": provenance()}
    (ROOT / "bench" / "batched-members.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    r = main()
    print(f"loop {r['loop_best_s']:.3f} s, vmap {r['vmap_best_s']:.3f} s: vmap / loop = {r['vmap_over_loop']:.2f} "
          f"(threads {r['threads']}, load {r['load_1min']:.1f}, max logit difference {r['max_abs_logit_difference']:.1e})")
