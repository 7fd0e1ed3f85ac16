"""What subnormal BatchNorm statistics cost a ticket in fp32 on a CPU, and what flushing them gives.

A channel whose input dies during a search keeps running statistics that decay into the subnormal
range; in eval mode it then outputs subnormal activations, on which fp32 convolutions run far
slower. ``rst.network.masks.apply_ticket`` now flushes them (``rst.runtime.speed.flush_subnormal_bn_stats_``). This
times, in one process and alternating round by round so that a shared machine's load falls on both,
a PGD-20 evaluation (fp32, channels_last, cached masks: what ``rst.evaluation.metrics`` runs) of each ticket
of a shipped candidate set with its statistics as stored (subnormals put back) and as applied
(flushed), and checks that both give the same accuracy on the same images.

    python bench/subnormal_bn.py pretrained_masks/fmnist-wide/tickets.rst.safetensors --images 256 --json bench/subnormal-bn.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _subnormal_count(ticket) -> int:
    from rst.runtime.speed import is_subnormal
    return sum(int(is_subnormal(v).sum()) for v in ticket.bn_stats.values() if v.is_floating_point())


def _as_stored(model, ticket):
    """``model`` with the ticket's BN statistics copied back as the file stores them (subnormals kept)."""
    import torch
    from rst.network.masks import _bn_buffers
    with torch.no_grad():
        for key, module, buf in _bn_buffers(model):
            getattr(module, buf).copy_(ticket.bn_stats[key])
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tickets", help="a candidate set (*.rst.safetensors)")
    p.add_argument("--images", type=int, default=256, help="test images from the shipped subset (default 256)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per ticket (default 2)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    import torch

    from rst.data.datasets import load_subset
    from rst.evaluation.metrics import pgd20, robust_accuracy
    from rst.network.masks import load_tickets
    from rst.runtime.provenance import provenance
    torch.set_num_threads(args.threads)
    cs = load_tickets(args.tickets)
    x, y, _ = load_subset(ROOT / "assets" / "fashion_mnist_test_subset.safetensors")
    x, y = x[:args.images], y[:args.images]
    attack = pgd20(cs.tickets[0].search_config["eps"])
    rows = []
    for i, t in enumerate(cs.tickets):
        n_sub = _subnormal_count(t)
        times = {"stored": [], "flushed": []}
        acc = {}
        for _ in range(args.rounds):
            for mode in ("stored", "flushed"):
                model = cs.model(i)                       # flushed by apply_ticket
                if mode == "stored":
                    _as_stored(model, t)
                t0 = time.perf_counter()
                acc[mode] = robust_accuracy(model, x, y, attack)
                times[mode].append(time.perf_counter() - t0)
        row = {"name": t.name, "keep_ratio": t.keep_ratio, "subnormal_bn_values": n_sub,
               "seconds_stored": statistics.median(times["stored"]),
               "seconds_flushed": statistics.median(times["flushed"]),
               "robust_stored": acc["stored"], "robust_flushed": acc["flushed"]}
        row["ratio"] = row["seconds_stored"] / row["seconds_flushed"]
        rows.append(row)
        print(f"{t.name}: {n_sub} subnormal BN values; PGD-20 on {len(x)} images {row['seconds_stored']:.1f} s "
              f"as stored, {row['seconds_flushed']:.1f} s flushed ({row['ratio']:.2f}x); robust "
              f"{row['robust_stored']:.4f} / {row['robust_flushed']:.4f}", flush=True)
    out = {"tickets": args.tickets, "images": len(x), "attack": attack.describe(), "rounds": args.rounds,
           "threads": args.threads, "rows": rows, "provenance": provenance("cpu")}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
