"""glibc's default allocator against rst.runtime.allocator.keep_freed_memory, on one training step.

The setting is per process, so the two contestants run in separate processes, alternately
(A B A B ...), each timing the same ``fmnist-fast`` step (N-FGSM, bf16 + channels_last where the
CPU has it) of a full-width Conv-4 ticket or dense network at batch 256 on synthetic images, after
warm-up steps. Reports images/s, system time and page faults of each run and the ratio of the
medians.

    python bench/allocator.py --rounds 3 --steps 10 --threads 1 --json bench/allocator.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(mode: str, steps: int, keep: bool, threads: int) -> dict:
    import resource
    import time

    import torch

    from rst.runtime.allocator import keep_freed_memory
    from rst.network.masked import set_dense
    from rst.network.models import build_network
    from rst.search.loop import SearchData, prepare_models, preset, score_parameters, start_fit, train_step
    from rst.search.train import _weights
    torch.set_num_threads(threads)
    kept = keep_freed_memory() if keep else False
    cfg = preset("fmnist-fast", epochs=1, keep_ratio=0.2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(512, 1, 28, 28, generator=g), torch.randint(0, 10, (512,), generator=g)
    model = build_network(cfg.network_spec())
    if mode == "dense":
        set_dense(model, True)
    params = _weights(model) if mode == "dense" else score_parameters(model)
    fit = start_fit(model, params, cfg, SearchData(x, y, x[:64], y[:64]), torch.device("cpu"))
    prepare_models(fit)
    model.train()
    xb, yb = x[:256], y[:256]
    for _ in range(3):
        train_step(fit, xb, yb, g)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        train_step(fit, xb, yb, g)
    seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {"mode": mode, "keep_freed_memory": kept, "images_per_s": 256 * steps / seconds,
            "user_s": r1.ru_utime - r0.ru_utime, "system_s": r1.ru_stime - r0.ru_stime,
            "page_faults": r1.ru_minflt - r0.ru_minflt, "speed": fit.speed.to_dict()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("ticket", "dense"), default="ticket")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    p.add_argument("--child", choices=("default", "keep"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rounds < 1 or a.steps < 1 or a.threads < 1:
        p.error("--rounds, --steps and --threads must be >= 1")
    if a.child:
        print(json.dumps(one_run(a.mode, a.steps, a.child == "keep", a.threads)))
        return 0
    runs = {"default": [], "keep": []}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(a.threads)}
    for r in range(a.rounds):
        for who in ("default", "keep"):
            out = subprocess.run([sys.executable, __file__, "--child", who, "--mode", a.mode, "--steps", str(a.steps),
                                  "--threads", str(a.threads)], capture_output=True, text=True, env=env, check=True)
            runs[who].append(json.loads(out.stdout.strip().splitlines()[-1]))
            row = runs[who][-1]
            print(f"round {r + 1} {who:8s} {row['images_per_s']:7.1f} img/s  system {row['system_s']:5.2f} s  "
                  f"page faults {row['page_faults']}", flush=True)
    med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in runs.items()}
    print(f"median: glibc default {med['default']:.1f} img/s, keep_freed_memory {med['keep']:.1f} img/s, "
          f"ratio {med['keep'] / med['default']:.2f}x")
    if a.json:
        from rst.runtime.provenance import provenance
        Path(a.json).write_text(json.dumps({"mode": a.mode, "steps": a.steps, "threads": a.threads, "runs": runs,
                                            "median_images_per_s": med, "ratio": med["keep"] / med["default"],
                                            "provenance": provenance()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
