"""Measure one trained network (dense weights or one ticket) the way the zoo does, keeping per-image
results, and compare two such measurements on the same images with paired intervals.

Used to probe a recipe before rebuilding a whole zoo with it (README, "The default zoo"): clean and
PGD-20 (eps/4 step, one random start, no early stop, fp32) on the first ``--test-images`` test
images, AutoAttack standard on the first ``--autoattack-images``.

    python bench/recipe_probe.py measure runs/dense/dense_at.weights.safetensors --json a.json
    python bench/recipe_probe.py measure runs/t02/ticket.rst.safetensors --json b.json
    python bench/recipe_probe.py compare a.json b.json      # b - a, paired, on the images both saw
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def measure(path: str, member: int, test_images: int, autoattack_images: int, eps: float, data_dir) -> dict:
    from rst.runtime.allocator import keep_freed_memory
    from rst.evaluation.autoattack import autoattack_accuracy
    from rst.evaluation.compare import encode_per_image
    from rst.data.datasets import test_split
    from rst.evaluation.metrics import adversarial_examples, pgd20, predict
    from rst.network.mask_checks import network_spec
    from rst.network.masks import load_tickets, load_weights
    from rst.runtime.provenance import provenance
    keep_freed_memory()
    if path.endswith(".weights.safetensors"):
        model, meta = load_weights(path)
        spec, name = network_spec(meta["network"]), "dense"
    else:
        cs = load_tickets(path)
        model, spec, name = cs.model(member), cs.spec, cs.tickets[member].name
    model.eval()
    x, y = test_split(spec.dataset, seed=spec.seed, data_dir=data_dir, n=test_images)
    clean = predict(model, x) == y
    print(f"{name}: clean {clean.float().mean():.4f} on {len(x)}; PGD-20 ...", flush=True)
    robust = predict(model, adversarial_examples(model, x, y, pgd20(eps), seed=0)) == y
    print(f"{name}: PGD-20 {robust.float().mean():.4f} on {len(x)}", flush=True)
    out = {"file": path, "member": member, "name": name, "eps": eps, "test_images": len(x),
           "clean": clean.float().mean().item(), "pgd20": robust.float().mean().item(),
           "clean_per_image": encode_per_image(clean), "pgd20_per_image": encode_per_image(robust),
           "pgd20_attack": pgd20(eps).describe(), "provenance": provenance()}
    if autoattack_images:
        aa = autoattack_accuracy(model, x[:autoattack_images], y[:autoattack_images], eps=eps, version="standard")
        aa.pop("log", None)
        out["autoattack"] = aa
        print(f"{name}: AutoAttack {aa['robust']:.4f} on {aa['n_images']}", flush=True)
    return out


def compare(a: dict, b: dict) -> dict:
    from rst.evaluation.compare import decode_per_image, paired_difference, standard_error
    rows = {}
    pairs = [("pgd20", a["pgd20_per_image"], b["pgd20_per_image"]), ("clean", a["clean_per_image"], b["clean_per_image"])]
    if "autoattack" in a and "autoattack" in b:
        pairs.append(("autoattack", a["autoattack"]["robust_per_image"], b["autoattack"]["robust_per_image"]))
    for what, sa, sb in pairs:
        n = min(len(sa), len(sb))
        pa, pb = decode_per_image(sa[:n]), decode_per_image(sb[:n])
        rows[what] = {"n_images": n, "a": float(pa.mean()), "b": float(pb.mean()),   # names may be equal
                      "se_a": standard_error(float(pa.mean()), n), "se_b": standard_error(float(pb.mean()), n),
                      "b_minus_a": paired_difference(pb, pa)}
    return {"a": a["file"], "b": b["file"], "a_name": a["name"], "b_name": b["name"], "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("file", help="dense .weights.safetensors or a .rst.safetensors mask file")
    m.add_argument("--member", type=int, default=0, help="ticket index in a mask file (default 0)")
    m.add_argument("--test-images", type=int, default=10000)
    m.add_argument("--autoattack-images", type=int, default=1000)
    m.add_argument("--eps", type=float, default=0.1)
    m.add_argument("--data-dir")
    m.add_argument("--json", required=True)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json")
    args = p.parse_args(argv)
    if args.command == "measure":
        if args.test_images < 1 or args.autoattack_images < 0 or args.autoattack_images > args.test_images:
            p.error("need --test-images >= 1 and 0 <= --autoattack-images <= --test-images")
        out = measure(args.file, args.member, args.test_images, args.autoattack_images, args.eps, args.data_dir)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        return 0
    res = compare(json.loads(Path(args.a).read_text()), json.loads(Path(args.b).read_text()))
    for what, r in res["rows"].items():
        d = r["b_minus_a"]
        print(f"{what:10s} n={r['n_images']:5d}  " + "  ".join(f"{k} {v:.4f}" for k, v in r.items()
                                                           if isinstance(v, float) and not k.startswith("se"))
              + f"  b-a {d['difference']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
