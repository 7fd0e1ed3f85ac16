"""Does R2S with switch probabilities chosen on validation beat the uniform switch and its best member?

    python bench/switch_probabilities.py fit fmnist-wide          # alpha on validation images (ARC inside)
    python bench/switch_probabilities.py compare fmnist-wide      # uniform vs fitted alpha vs each member,
                                                                  # the same attacks, the same test images

``fit`` runs :func:`rst.evaluation.switch_probabilities.optimal_probabilities` on the first ``--val-images`` of
the zoo's own validation split (the training images the search held out, ``rst.search.loop.search_data``
with the zoo's recipe), never on test images. ``compare`` runs :func:`rst.evaluation.compare.compare_like_with_like`
twice on the first ``--test-images`` test images, once with the uniform switch and once with the
fitted alpha (the members' rows are the same and computed once), and pairs R2S(alpha) with the uniform
R2S and with the best member. JSON under ``bench/switch-probabilities/``; a finished step is skipped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "switch-probabilities"
sys.path.insert(0, str(ROOT))


def _zoo(zoo_id: str, root: Path):
    from rst.network.masks import load_tickets
    from rst.search.loop import SearchConfig
    from rst.zoo.build import read_index
    entry = next((z for z in read_index(root)["zoos"] if z["id"] == zoo_id), None)
    if entry is None:
        raise SystemExit(f"switch_probabilities: no zoo {zoo_id!r} in {root / 'index.json'}")
    return entry, load_tickets(root / entry["candidate_set"]), SearchConfig.from_dict(entry["config"])


def fit(zoo_id: str, root: Path, n_val: int, iterations: int, arc_steps: int, arc_topk: int | None,
        lr: float, data_dir=None) -> Path:
    from rst.evaluation.r2s import R2S
    from rst.search.loop import search_data
    from rst.evaluation.switch_probabilities import optimal_probabilities
    path = OUT / f"{zoo_id}-alpha.json"
    if path.exists():
        return path
    entry, cs, cfg = _zoo(zoo_id, root)
    data = search_data(cfg, data_dir)
    x, y = data.x_val[:n_val], data.y_val[:n_val]
    t0 = time.time()
    res = optimal_probabilities(R2S(cs), x, y, eps=cfg.eps, iterations=iterations, lr=lr, steps=arc_steps,
                                step_size=cfg.eps / 4, topk=arc_topk,
                                progress=lambda t, n: print(f"iterate {t}/{n} ({time.time() - t0:.0f} s)", flush=True))
    res |= {"zoo": zoo_id, "members": [t.name for t in cs.tickets], "split": f"validation[:{len(x)}]",
            "arc_steps": arc_steps, "arc_topk": arc_topk, "lr": lr, "seconds": time.time() - t0}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    return path


def compare(zoo_id: str, root: Path, n_test: int, suite: tuple[str, ...], arc_steps: int,
            arc_topk: int | None, data_dir=None) -> Path:
    from rst.evaluation.compare import SuiteConfig, compare_like_with_like
    from rst.data.datasets import test_split
    path = OUT / f"{zoo_id}-compare-{n_test}.json"
    if path.exists():
        return path
    entry, cs, cfg = _zoo(zoo_id, root)
    alpha = json.loads((OUT / f"{zoo_id}-alpha.json").read_text())["alpha"]
    x, y = test_split(cfg.dataset, seed=cfg.seed, data_dir=data_dir, n=n_test)
    suite_cfg = SuiteConfig(eps=cfg.eps, single_suite=("pgd20",), r2s_suite=suite, arc_steps=arc_steps,
                            arc_topk=arc_topk)
    t0 = time.time()
    uniform = compare_like_with_like(cs, x, y, eps=cfg.eps, r2s_images=n_test, single_images=n_test,
                                     cfg=suite_cfg, rows=("r2s", "members"))
    weighted_cs = dataclasses.replace(cs, probabilities=alpha)
    weighted = compare_like_with_like(weighted_cs, x, y, eps=cfg.eps, r2s_images=n_test, single_images=n_test,
                                      cfg=suite_cfg, rows=("r2s",))
    res = {"zoo": zoo_id, "alpha": alpha, "n_images": n_test, "suite": dataclasses.asdict(suite_cfg),
           "uniform": uniform.to_dict(), "alpha_weighted": weighted.to_dict(), "seconds": time.time() - t0}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=str))
    return path


def summary(zoo_id: str) -> str:
    """Markdown: the rows with their standard errors, and the paired differences of R2S(alpha)."""
    import torch

    from rst.evaluation.compare import CompareReport
    from rst.evaluation.per_image import paired_difference, standard_error
    res = json.loads(next(OUT.glob(f"{zoo_id}-compare-*.json")).read_text())
    fitted = json.loads((OUT / f"{zoo_id}-alpha.json").read_text())
    uni, wei = CompareReport.from_dict(res["uniform"]), CompareReport.from_dict(res["alpha_weighted"])
    r_uni, r_wei = (next(r for r in rep.rows if r.kind == "r2s") for rep in (uni, wei))
    members = [r for r in uni.rows if r.kind == "ticket"]
    best = max(members, key=lambda r: r.worst_case)
    lines = [f"alpha fitted on {fitted['split']} ({len(fitted['history'])} iterates, ARC-{fitted['arc_steps']}"
             f"{'' if fitted['arc_topk'] is None else ', top ' + str(fitted['arc_topk'])}): "
             + ", ".join(f"{n} {a:.3f}" for n, a in zip(fitted["members"], fitted["alpha"])), "",
             "| model | test images | clean | worst case over the suite |", "|---|---|---|---|"]
    for r in [r_uni, r_wei, *members]:
        name = {id(r_uni): "R2S, uniform", id(r_wei): "R2S, fitted alpha"}.get(id(r), r.name)
        lines.append(f"| {name} | {r.n_images} | {100 * r.clean:.2f} % | {100 * r.worst_case:.2f} % "
                     f"± {100 * standard_error(r.worst_case, r.n_images):.2f} |")
    lines += ["", "| paired difference (same images) | difference | 95 % interval |", "|---|---|---|"]
    for label, a, b in (("R2S fitted − R2S uniform", r_wei, r_uni), (f"R2S fitted − best member ({best.name})", r_wei, best),
                        (f"R2S uniform − best member ({best.name})", r_uni, best)):
        d = paired_difference(torch.tensor(a.per_image), torch.tensor(b.per_image))
        lines.append(f"| {label} | {100 * d['difference']:+.2f} | [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}] |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("fit", "compare", "summary"))
    p.add_argument("zoo")
    p.add_argument("--root", default=str(ROOT / "pretrained_masks"))
    p.add_argument("--val-images", dest="val_images", type=int, default=256)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--test-images", dest="test_images", type=int, default=500)
    p.add_argument("--suite", default="expectation,arc", help="R2S attacks, comma-separated (rst.evaluation.r2s.ADAPTIVE)")
    p.add_argument("--arc-steps", dest="arc_steps", type=int, default=10)
    p.add_argument("--arc-topk", dest="arc_topk", type=int, default=None)
    p.add_argument("--data-dir", dest="data_dir")
    a = p.parse_args(argv)
    if min(a.val_images, a.iterations, a.test_images, a.arc_steps) < 1 or a.lr <= 0:
        p.error("sizes must be positive")
    root = Path(a.root)
    if a.command == "fit":
        print(fit(a.zoo, root, a.val_images, a.iterations, a.arc_steps, a.arc_topk, a.lr, a.data_dir))
    elif a.command == "compare":
        print(compare(a.zoo, root, a.test_images, tuple(a.suite.split(",")), a.arc_steps, a.arc_topk, a.data_dir))
    else:
        print(summary(a.zoo), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
