"""The benchmarks' command line: ``python -m rst.bench search | tickets | transfer | time-to-ticket``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rst.cli.input import OneLineParser, count, fraction, positive
from rst.runtime.provenance import provenance
from .search import bench_search, bench_tickets
from .time_to_ticket import bench_time_to_ticket, plot_time_to_ticket
from .transfer import bench_transfer


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _print_search(r: dict) -> None:
    c = r["config"]
    print(f"device: {r['device']}   torch {r['torch']}")
    shape = "x".join(map(str, c["dataset_shape"]))
    print(f"{c['arch']} width {c['width']:g} on {shape}, keep ratio {c['keep_ratio']:g}, batch {c['batch_size']}, "
          f"inner {c['inner_attack']}, {c['timed_steps']} timed steps after {c['warmup_steps']} warm-up")
    ref, ours = r["reference"], r["ours"]
    knobs = ", ".join([ours["precision"]] + (["channels_last"] if ours["channels_last"] else [])
                      + (["compile"] if ours["compile"] else []))
    print(f"  reference  {ref['images_per_s']:10.1f} images/s   ({ref['recipe']})")
    print(f"  ours       {ours['images_per_s']:10.1f} images/s   ({knobs}; {ours['recipe']})")
    print(f"  speedup    {r['speedup']:10.2f}x")


def _print_transfer(r: dict) -> None:
    c = r["config"]
    print(f"device: {r['device']}   torch {r['torch']}")
    print(f"{c['k']} tickets of {c['arch']} width {c['width']:g} (keep ratios {c['keep_ratios']}), "
          f"{c['images']} images, {c['attack']}")
    print(f"  naive, per pair  {r['naive']['seconds']:8.2f} s   ({r['naive']['attacks']} attacks)")
    print(f"  transfer_matrix  {r['ours']['seconds']:8.2f} s   ({r['ours']['attacks']} attacks)")
    print(f"  speedup          {r['speedup']:8.2f}x")
    print(f"  matrices identical: {r['identical']} (max |diff| {r['max_abs_diff']:.4g})")


def _print_tickets(r: dict) -> None:
    c = r["config"]
    print(f"device: {r['device']}   torch {r['torch']}")
    print(f"{c['k']} tickets of {c['arch']} width {c['width']:g}, batch {c['batch_size']}, {c['precision']}, "
          f"inner {c['inner_attack']}, {c['timed_steps']} timed steps after {c['warmup_steps']} warm-up")
    print(f"  one ticket at a time  {r['sequential']['ticket_images_per_s']:10.1f} ticket-images/s")
    print(f"  {c['k']} in one pass        {r['batched']['ticket_images_per_s']:10.1f} ticket-images/s")
    print(f"  speedup               {r['speedup']:10.2f}x")


def _print_time_to_ticket(r: dict) -> None:
    c = r["config"]
    print(f"device: {r['device']}   torch {r['torch']}")
    print(f"{c['dataset']}, Conv-4 width {c['width']:g}, keep ratio {c['keep_ratio']:g}, {c['train_images']} training "
          f"images, {c['budget_s']:g} s budget each; validation {c['val_attack']} on {c['val_images']} images")
    print(f"  target (reference's best val PGD accuracy): {100 * r['target']:.1f} %")
    for name in ("reference", "ours"):
        t = r[name]["time_to_target"]
        print(f"  {name:9s} reaches it after {t:7.1f} s of training" if t is not None else
              f"  {name:9s} does not reach it within the budget", f"  ({r[name]['recipe']})")
    print(f"  ratio      {r['ratio']:.2f}x less time (first validation at the target)" if r["ratio"]
          else "  ratio      n/a")
    if r.get("ratio_interpolated"):
        print(f"             {r['ratio_interpolated']:.2f}x interpolated between validations "
              f"({r['reference']['crossing']:.1f} s vs {r['ours']['crossing']:.1f} s)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m rst.bench", description="throughput benchmarks")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="search step: the reference recipe vs ours (images/s)")
    s.add_argument("--arch", default="resnet18")
    s.add_argument("--width", type=positive, help="channel multiplier (default 1; --toy: 0.125)")
    s.add_argument("--batch-size", dest="batch_size", type=count, help="images per step (default 256; --toy: 32)")
    s.add_argument("--steps", type=count, help="timed optimiser steps (default 10; --toy: 2)")
    s.add_argument("--warmup", type=count, help="untimed steps first, >= 1 (default 3; --toy: 1)")
    s.add_argument("--attack-steps", dest="attack_steps", type=count, default=7, help="PGD steps of the inner attack")
    s.add_argument("--keep-ratio", dest="keep_ratio", type=fraction, default=0.1)
    s.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="ours: auto (default: bf16 + channels_last where native), fp32, bf16 (rst.runtime.speed)")
    s.add_argument("--channels-last", dest="channels_last", action="store_true",
                   help="ours, with --precision fp32/bf16: channels_last")
    s.add_argument("--compile", action="store_true", help="ours: torch.compile the model (experimental)")
    t = sub.add_parser("transfer", help="K x K transfer matrix: per pair (K² attacks) vs transfer_matrix (K)")
    t.add_argument("--arch", help="default resnet18; --toy: fmnist_conv4")
    t.add_argument("--width", type=positive, help="default 1; --toy: 0.25")
    t.add_argument("--k", type=count, default=8, help="tickets")
    t.add_argument("--images", type=count, help="default 1000; --toy: 64")
    t.add_argument("--attack-steps", dest="attack_steps", type=count, default=7)
    t.add_argument("--batch-size", dest="batch_size", type=count, default=512)
    b = sub.add_parser("tickets", help="K searches one at a time vs K tickets in one batched pass")
    b.add_argument("--arch", default="fmnist_conv4")
    b.add_argument("--width", type=positive, help="default 1; --toy: 0.25")
    b.add_argument("--k", type=count, default=7, help="tickets in the batch")
    b.add_argument("--batch-size", dest="batch_size", type=count, help="images per step (default 256; --toy: 32)")
    b.add_argument("--steps", type=count, help="timed optimiser steps (default 10; --toy: 2)")
    b.add_argument("--warmup", type=count, help="untimed steps first, >= 1 (default 2; --toy: 1)")
    b.add_argument("--attack-steps", dest="attack_steps", type=count, default=7)
    b.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="rst.runtime.speed")
    w = sub.add_parser("time-to-ticket", help="reference vs fast recipe on real data: time to the same val PGD accuracy")
    w.add_argument("--budget", type=positive, default=600.0, help="training seconds per contestant (default 600)")
    w.add_argument("--points", type=count, default=12, help="validations per contestant (default 12)")
    w.add_argument("--keep-ratio", dest="keep_ratio", type=fraction, default=0.1)
    w.add_argument("--width", type=positive, default=1.0)
    w.add_argument("--val-images", dest="val_images", type=count, default=500)
    w.add_argument("--data-dir", dest="data_dir", help="Fashion-MNIST folder (else $RST_DATA_DIR, then defaults)")
    w.add_argument("--plot", help="write the two curves to this PNG")
    for q in (s, t, b, w):
        q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        q.add_argument("--toy", action="store_true", help="CPU size: seconds, not representative")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", help="write the numbers, with provenance, to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "json")}
    if args.command == "search":
        result = bench_search(**kwargs)
        _print_search(result)
    elif args.command == "tickets":
        result = bench_tickets(**kwargs)
        _print_tickets(result)
    elif args.command == "time-to-ticket":
        plot = kwargs.pop("plot")
        result = bench_time_to_ticket(progress=print, **kwargs)
        _print_time_to_ticket(result)
        if plot:
            Path(plot).parent.mkdir(parents=True, exist_ok=True)
            plot_time_to_ticket(result, plot)
            print(f"plot written to {plot}")
    else:
        result = bench_transfer(**kwargs)
        _print_transfer(result)
    if args.json:
        result["provenance"] = provenance(result["device"])
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"written to {args.json}")
    return 0

