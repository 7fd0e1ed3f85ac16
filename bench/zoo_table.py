"""The README's tables for one shipped zoo, from its index entry and reports (nothing recomputed).

    python bench/zoo_table.py fmnist-full          # markdown on stdout

The README pastes this output as it is, and ``tests/test_readme.py`` checks that it still does.

Every accuracy gets its binomial standard error (sqrt(p(1-p)/n), n = the images it was measured
on). The AutoAttack difference between the best ticket and the dense baseline is paired, on the
same images, from the report's per-image results (``rst.evaluation.compare.paired_difference``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rst.evaluation.compare import decode_per_image, paired_difference, standard_error  # noqa: E402
from rst.zoo.build import read_index  # noqa: E402


def _n(split: str) -> int:
    m = re.search(r"\[:(\d+)\]", split)
    return int(m.group(1)) if m else 0


def pct(p: float, n: int) -> str:
    return f"{100 * p:.2f} % ± {100 * standard_error(p, n):.2f}"


def tables(zoo_id: str, root: str | Path = ROOT / "pretrained_masks") -> str:
    """The markdown of the README's tables for ``zoo_id``, from its index entry and reports."""
    root = Path(root)
    entry = next((z for z in read_index(root)["zoos"] if z["id"] == zoo_id), None)
    if entry is None:
        raise SystemExit(f"no zoo {zoo_id!r} in {root / 'index.json'}")
    rep = {k: json.loads((root / v).read_text()) for k, v in entry.get("reports", {}).items()}
    aa = {r["name"]: r for r in rep.get("autoattack", {}).get("rows", [])}
    out = []

    rows = [(t["name"], t["keep_ratio"], t["metrics"]) for t in entry["tickets"]]
    if entry.get("dense"):
        rows.append(("dense AT", 1.0, entry["dense"]["metrics"]))
    n_test = max(_n(m["test_pgd20"]["split"]) for _, _, m in rows)
    n_aa = max((a["n_images"] for a in aa.values()), default=0)
    aa_head = f"AutoAttack standard (first {n_aa:,} test)" if n_aa else "AutoAttack standard (not run)"
    out += [f"| network | keep ratio | natural ({n_test:,} test) | PGD-20 ({n_test:,} test) | {aa_head} | "
            "validation PGD-10 |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name, keep, m in rows:
        c, r = m["test_clean"], m["test_pgd20"]
        a = aa.get(name)
        v = m.get("val_robust")
        out.append(f"| {name} | {keep:g} | {pct(c['value'], _n(c['split']))} | {pct(r['value'], _n(r['split']))} | "
                   + (pct(a["robust"], a["n_images"]) + ("" if a["n_images"] == n_aa else f" ({a['n_images']:,})")
                      if a else "—") + " | "
                   + (f"{100 * v['value']:.1f} %" if v else "—") + " |")

    tickets = [n for n in aa if n != "dense AT"]
    if tickets and "dense AT" in aa and aa["dense AT"].get("robust_per_image"):
        best = max(tickets, key=lambda n: aa[n]["robust"])
        bits = [decode_per_image(aa[n]["robust_per_image"]) for n in (best, "dense AT")]
        d = paired_difference(bits[0], bits[1])
        out += ["", f"AutoAttack, {best} − dense AT on the same {d['n_images']:,} images: "
                    f"{100 * d['difference']:+.2f} points, paired 95 % interval "
                    f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}] "
                    f"(only the ticket survives: {d['n_only_first']} images, only dense: {d['n_only_second']})."]

    if "transfer" in rep:
        out += ["", "| transfer (PGD-20 on the row ticket) | diagonal | off-diagonal | all cells | images |",
                "| --- | --- | --- | --- | --- |"]
        for key, label in (("without_early_stop", "source without early stop"),
                           ("with_early_stop", "source with early stop (inflated)")):
            t = rep["transfer"][key]
            out.append(f"| {label} | {100 * t['diagonal_mean']:.2f} % | {100 * t['off_diagonal_mean']:.2f} % | "
                       f"{100 * t['mean']:.2f} % | {t['n_images']:,} |")

    if "r2s" in rep:
        r2s = rep["r2s"]
        n = r2s["results"][0]["n_images"]
        out += ["", f"| R2S protocol ({n:,} images) | expected accuracy | worst member |", "| --- | --- | --- |",
                f"| clean | {pct(r2s['clean_expected_acc'], n)} | — |"]
        for res in r2s["results"]:
            out.append(f"| {res['protocol']} ({'adaptive' if res['adaptive'] else 'non-adaptive'}) | "
                       f"{pct(res['expected_acc'], n)} | {100 * res['worst_member_acc']:.2f} % |")
        out.append(f"| per-example worst case over the adaptive attacks | {pct(r2s['worst_case_adaptive_acc'], n)} | — |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo_id")
    ap.add_argument("--root", default=str(ROOT / "pretrained_masks"))
    args = ap.parse_args(argv)
    print(tables(args.zoo_id, args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
