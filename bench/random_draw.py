"""How much a robust scratch ticket depends on the random network it is drawn from.

The zoo index holds sibling zoos: one recipe, several seeds (``rst.zoo.across_networks``). This script
measures what the index alone cannot give, and prints the tables of ``docs/random-draw.md``:

    python bench/random_draw.py measure fmnist-wide           # per-image clean + PGD-20 on 10,000 test
                                                              # images: each sibling's keep0.2 and dense AT
    python bench/random_draw.py transfer fmnist-wide          # PGD-20 examples of each source, scored on
                                                              # every target: same network vs other networks
    python bench/random_draw.py table fmnist-wide             # markdown on stdout (nothing recomputed)

``measure`` and ``transfer`` write JSON under ``bench/random-draw/`` and skip what is there, so a
killed run resumes. The per-image results are ``bench/recipe_probe.py measure``'s (the zoo's PGD-20:
step eps/4, one random start, no early stop, generator seed 0, fp32), so each network's accuracy is
the one its index entry records, and ticket − dense is paired on the same images.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "random-draw"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from rst.zoo.across_networks import across_networks, sibling_zoos  # noqa: E402
from rst.zoo.build import read_index  # noqa: E402

TRANSFER_SOURCES = ("keep0.2", "keep0.05", "keep0.7")      # of the first network; keep0.2 of the others


def _per_image_path(zoo: str, name: str, n: int, out: Path = OUT) -> Path:
    """Where the per-image results of one model live; the probe rounds' files are reused."""
    stem = f"{zoo}-{name.replace(' ', '-').replace('-AT', '')}-{n}.json"
    probe = BENCH / "recipe-probe" / stem
    return probe if probe.exists() and out == OUT else out / stem


def _model_file(root: Path, entry: dict, name: str) -> tuple[str, int]:
    if name == "dense AT":
        return str(root / entry["dense_baseline"]), 0
    members = [t["name"] for t in entry["tickets"]]
    return str(root / entry["candidate_set"]), members.index(name)


def measure(zoo_id: str, names: list[str], n: int, root: Path, out: Path, data_dir=None) -> list[Path]:
    """Per-image clean and PGD-20 results of ``names`` (and dense AT) of every sibling network."""
    from recipe_probe import measure as probe_measure
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for entry in sibling_zoos(read_index(root), zoo_id):
        for name in [*names, "dense AT"]:
            path = _per_image_path(entry["id"], name, n, out)
            if not path.exists():
                file, member = _model_file(root, entry, name)
                res = probe_measure(file, member, n, 0, entry["eps"], data_dir)
                path.write_text(json.dumps(res, indent=1, default=str))
            done.append(path)
    return done


def transfer(zoo_id: str, n: int, root: Path, out: Path, data_dir=None) -> Path:
    """Transfer matrix between tickets of one network and the same keep ratio of the other networks."""
    from rst.data.datasets import test_split
    from rst.evaluation.metrics import pgd20, transfer_matrix
    from rst.network.masks import load_tickets
    sibs = sibling_zoos(read_index(root), zoo_id)
    path = out / f"{zoo_id}-transfer-{n}.json"
    if path.exists():
        return path
    picks = [(sibs[0], s) for s in TRANSFER_SOURCES] + [(e, TRANSFER_SOURCES[0]) for e in sibs[1:]]
    labels, models = [], []
    for entry, name in picks:
        cs = load_tickets(root / entry["candidate_set"])
        models.append(cs.model([t.name for t in cs.tickets].index(name)))
        labels.append(f"seed {entry['seed']} {name}")
    x, y = test_split(sibs[0]["dataset"], seed=sibs[0]["seed"], data_dir=data_dir, n=n)
    tr = transfer_matrix(models, x, y, pgd20(sibs[0]["eps"]))
    res = tr.to_dict() | {"names": labels, "zoos": [e["id"] for e, _ in picks]}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    return path


def _pct(p: float, se: float) -> str:
    return f"{100 * p:.2f} % ± {100 * se:.2f}"


def _spread(mean: float | None, std: float | None, unit: str = " %") -> str:
    if mean is None:
        return "—"
    sd = "n/a" if std != std else f"{100 * std:.2f}"
    return f"{100 * mean:+.2f}{unit} ± {sd}" if unit == " pt" else f"{100 * mean:.2f}{unit} ± {sd}"


def _paired(zoo: str, name: str, n: int, out: Path) -> str:
    from rst.evaluation.compare import decode_per_image, paired_difference
    a, b = _per_image_path(zoo, name, n, out), _per_image_path(zoo, "dense AT", n, out)
    if not (a.exists() and b.exists()):
        return "not measured"
    pa, pb = (decode_per_image(json.loads(p.read_text())["pgd20_per_image"]) for p in (a, b))
    d = paired_difference(pa, pb)
    return f"{100 * d['difference']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"


def table(zoo_id: str, root: Path, n: int = 10000, transfer_images: int = 2000, out_dir: Path = OUT) -> str:
    """The markdown of docs/random-draw.md: across networks, each network with its paired gap, transfer."""
    sibs = sibling_zoos(read_index(root), zoo_id)
    rows = across_networks(sibs)
    seeds = ", ".join(str(e["seed"]) for e in sibs)
    out = [f"Networks: {len(sibs)} random draws of one recipe (seeds {seeds}; zoos "
           + ", ".join(f"`{e['id']}`" for e in sibs) + "). ± is the standard deviation over networks.", "",
           "| model | networks | clean | PGD-20 | ticket − dense AT (PGD-20) |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['name']} | {r['n_networks']} | {_spread(r['clean_mean'], r['clean_std'])} | "
                   f"{_spread(r['robust_mean'], r['robust_std'])} | {_spread(r['gap_mean'], r['gap_std'], ' pt')} |")
    out += ["", "Each network on its own: ± is the binomial standard error on its test images; the paired "
            "difference and its 95 % interval are on the same images.", "",
            "| seed | model | test images | clean | PGD-20 | ticket − dense AT, paired 95 % |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        for p in r["per_network"]:
            gap = "—" if r["name"] == "dense AT" else _paired(p["zoo"], r["name"], n, out_dir)
            out.append(f"| {p['seed']} | {r['name']} | {p['n_images']} | {_pct(p['clean'], p['clean_se'])} | "
                       f"{_pct(p['robust'], p['robust_se'])} | {gap} |")
    tp = out_dir / f"{zoo_id}-transfer-{transfer_images}.json"
    if tp.exists():
        tr = json.loads(tp.read_text())
        out += ["", f"Transfer on the first {tr['n_images']} test images ({tr['attack']}): row = source, "
                "column = target, accuracy of the target; the diagonal is white-box.", "",
                "| source \\ target | " + " | ".join(tr["names"]) + " |", "|---" * (len(tr["names"]) + 1) + "|"]
        for name, row in zip(tr["names"], tr["matrix"]):
            out.append(f"| {name} | " + " | ".join(f"{100 * v:.2f} %" for v in row) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("measure", "transfer", "table"))
    p.add_argument("zoo", help="a zoo id of the index; its siblings are found by recipe")
    p.add_argument("--root", default=str(ROOT / "pretrained_masks"))
    p.add_argument("--tickets", default="keep0.2", help="comma-separated ticket names for measure")
    p.add_argument("--test-images", dest="test_images", type=int, default=10000)
    p.add_argument("--transfer-images", dest="transfer_images", type=int, default=2000)
    p.add_argument("--data-dir", dest="data_dir")
    a = p.parse_args(argv)
    if a.test_images < 2 or a.transfer_images < 2:
        p.error("need at least 2 test images")
    root = Path(a.root)
    try:
        if a.command == "measure":
            for path in measure(a.zoo, a.tickets.split(","), a.test_images, root, OUT, a.data_dir):
                print(path)
        elif a.command == "transfer":
            print(transfer(a.zoo, a.transfer_images, root, OUT, a.data_dir))
        else:
            print(table(a.zoo, root, a.test_images, a.transfer_images), end="")
    except (KeyError, ValueError) as e:
        p.exit(2, f"random_draw: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
