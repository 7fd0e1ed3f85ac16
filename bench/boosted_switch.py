"""Does a boosted switch (tickets searched to cover each other) beat its best member, the default zoo's
switches and dense AT, under the same attacks on the same test images?

    python bench/boosted_switch.py run boosted_r2s            # one part (resumable: a finished part is skipped)
    python bench/boosted_switch.py run wide_uniform,dense     # several, one after another
    python bench/boosted_switch.py summary                    # the table and the paired intervals (Markdown)
    python bench/boosted_switch.py ship                       # the boosted set's like-with-like report for the app
    python bench/boosted_switch.py sets runs/boost-chain      # the ablation's two sets, from a `--boosted 2` build
    python bench/boosted_switch.py ablation                   # the ablation's table and paired intervals

Parts, each on the first ``--test-images`` test images (default 1000), each written to
``bench/boosted-switch/<part>-<n>.json`` as an :class:`rst.evaluation.compare.CompareReport`:

    boosted_r2s     the boosted set's R2S with its fitted alpha, under the R2S suite
    member<i>       member i of the boosted set alone, under the single-model suite
    wide_uniform    the default zoo's R2S, uniform switch, under the R2S suite
    wide_alpha      the default zoo's R2S with the alpha fitted on validation (bench/switch_probabilities.py)
    dense           the dense AT baseline of the default zoo's network, under the single-model suite
    wide_<ticket>   a ticket of the default zoo alone (wide_keep0.4, ...), under the single-model suite
                    (its keep0.2 is the boosted set's member 0)

The ablation (what boosting adds, and a warm start), on sets written by ``sets`` beside the results:

    chain_member<i> member i of the chain set (``chain.rst.safetensors``: a fresh ``--boosted 2`` build,
                    its member 0 searched with the boosted recipe against no earlier member, i.e. plain
                    PGD-2 plus the wrong-class term, its member 1 boosted and warm-started from it) alone
    chain_r2s       the chain set's R2S with its fitted alpha
    control_r2s     the control switch (``control.rst.safetensors``): the boosted set's member 0 and the
                    chain's member 0, the same recipe as the boosted member 1 without the switch in its
                    attack, alpha fitted on validation as the boosted search fits it

The suites (rst.evaluation.compare): R2S faces expectation PGD-20, ensemble PGD-20, APGD-CE and
APGD-DLR on the expected loss (100 iterations) and full ARC (10 iterations, every class boundary), all
weighted by the switch's alpha, scored as the expected accuracy per image; a single model faces
PGD-20, PGD-100 with 2 restarts and APGD-T (9 targets); per image the worst case over the suite.
Run parts in parallel processes (one per core); ``summary`` pairs them on the same images.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "boosted-switch"
ZOOS = ROOT / "pretrained_masks"
BOOSTED = "fmnist-wide-boost"
BASE = "fmnist-wide"
ALPHA = ROOT / "bench" / "switch-probabilities" / f"{BASE}-alpha.json"
sys.path.insert(0, str(ROOT))
# the suite on the random switch: no EOT (with the exact expectation over members it adds nothing
# the expectation attack lacks, and it was the costliest part)
R2S_SUITE = ("expectation", "ensemble", "apgd_ce", "apgd_dlr", "arc")


def suite():
    from rst.evaluation.compare import SuiteConfig
    return SuiteConfig(eps=0.1, r2s_suite=R2S_SUITE)


def _entry(zoo_id: str) -> dict:
    from rst.zoo.build import read_index
    entry = next((z for z in read_index(ZOOS)["zoos"] if z["id"] == zoo_id), None)
    if entry is None:
        raise SystemExit(f"boosted_switch: no zoo {zoo_id!r} in {ZOOS / 'index.json'}")
    return entry


def _sets():
    """``(boosted set, default zoo's set with its fitted alpha, default zoo's set uniform)``."""
    from rst.network.masks import load_tickets
    boosted = load_tickets(ZOOS / _entry(BOOSTED)["candidate_set"])
    wide = load_tickets(ZOOS / _entry(BASE)["candidate_set"])
    alpha = json.loads(ALPHA.read_text())["alpha"]
    return boosted, dataclasses.replace(wide, probabilities=alpha), dataclasses.replace(wide, probabilities=None)


ABLATION_SETS = {"chain": OUT / "chain.rst.safetensors", "control": OUT / "control.rst.safetensors"}


def _ablation_set(name: str):
    from rst.network.masks import load_tickets
    if not ABLATION_SETS[name].exists():
        raise SystemExit(f"boosted_switch: no {ABLATION_SETS[name]}; run `sets <build dir>` first")
    return load_tickets(ABLATION_SETS[name])


def write_ablation_sets(build: Path, data_dir=None) -> list[Path]:
    """``control.rst.safetensors`` ({boosted member 0, ``build``'s member 0}, alpha fitted on the build's
    validation images as the boosted search fits it) once ``build/set1`` exists, and
    ``chain.rst.safetensors`` (``build``'s ``set2``, alpha as the build fitted it) once that exists;
    masks only. Returns the files written."""
    from rst.network.masks import CandidateSet, load_tickets, save_tickets
    from rst.search.boosted import fit_alpha
    from rst.search.config import SearchConfig
    from rst.search.loop import search_data
    build, written = Path(build), []
    if not (build / "set1.rst.safetensors").exists():
        raise SystemExit(f"boosted_switch: {build} has no set1.rst.safetensors (its member 0 is not done)")
    OUT.mkdir(parents=True, exist_ok=True)
    if not ABLATION_SETS["control"].exists():
        first = load_tickets(build / "set1.rst.safetensors")
        cfg = SearchConfig.from_dict(SearchConfig.recipe(first.tickets[0].search_config))
        control = CandidateSet(first.spec, [_sets()[0].tickets[0], first.tickets[0]])
        control.probabilities = fit_alpha(control, search_data(cfg, data_dir), cfg.eps)
        save_tickets(ABLATION_SETS["control"], control)
        written.append(ABLATION_SETS["control"])
    if (build / "set2.rst.safetensors").exists() and not ABLATION_SETS["chain"].exists():
        save_tickets(ABLATION_SETS["chain"], load_tickets(build / "set2.rst.safetensors"))
        written.append(ABLATION_SETS["chain"])
    return written


def part_path(part: str, n: int) -> Path:
    return OUT / f"{part}-{n}.json"


CHUNK = 100   # images per resumable piece of a part


def _report(part: str, x, y):
    """The part's :class:`CompareReport` on the images ``x, y``."""
    from rst.evaluation.compare import compare_like_with_like
    from rst.network.masks import load_weights
    boosted, wide_alpha, wide_uniform = _sets()
    cfg = suite()
    common = dict(eps=cfg.eps, r2s_images=len(x), single_images=len(x), cfg=cfg)
    if part == "boosted_r2s":
        return compare_like_with_like(boosted, x, y, rows=("r2s",), **common)
    if part in ("wide_uniform", "wide_alpha"):
        return compare_like_with_like(wide_uniform if part == "wide_uniform" else wide_alpha, x, y, rows=("r2s",), **common)
    if part == "dense":
        dense = load_weights(ZOOS / _entry(BASE)["dense_baseline"])[0]
        return compare_like_with_like(boosted, x, y, dense=dense, rows=("dense",), **common)
    if part.startswith("wide_keep") and part[5:] in [t.name for t in wide_uniform.tickets]:
        return compare_like_with_like(wide_uniform, x, y, rows=(part[5:],), **common)
    if part.startswith("member") and part[6:].isdigit() and int(part[6:]) < len(boosted):
        return compare_like_with_like(boosted, x, y, rows=(boosted.tickets[int(part[6:])].name,), **common)
    if part in ("chain_r2s", "control_r2s"):
        return compare_like_with_like(_ablation_set(part[:-4]), x, y, rows=("r2s",), **common)
    if part.startswith("chain_member") and part[12:].isdigit():
        chain = _ablation_set("chain")
        if int(part[12:]) >= len(chain):
            raise SystemExit(f"boosted_switch: the chain set has {len(chain)} members, no {part!r}")
        return compare_like_with_like(chain, x, y, rows=(chain.tickets[int(part[12:])].name,), **common)
    raise SystemExit(f"boosted_switch: unknown part {part!r}")


def _write(path: Path, doc: dict) -> None:
    from rst.runtime.atomic import atomic_write
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent=1, default=str))


def _finished_prefix(part: str, n: int) -> dict | None:
    """The part's finished file on the most images fewer than ``n`` (its first images), or None."""
    found = [(int(m.group(1)), p) for p in OUT.glob(f"{part}-*.json")
             if (m := re.fullmatch(re.escape(part) + r"-(\d+)\.json", p.name)) and int(m.group(1)) < n]
    return json.loads(max(found)[1].read_text()) if found else None


def run_part(part: str, n: int, data_dir=None, chunk: int = CHUNK) -> Path:
    """Compute one part on the first ``n`` test images (skipped when its file exists), ``chunk`` images
    at a time: each piece is kept under ``chunks/`` as it finishes, so that a killed run resumes where it
    stopped, and a finished run of the part on fewer images is reused as its first piece."""
    from rst.data.datasets import test_split
    from rst.evaluation.compare import CompareReport, concat_reports
    path = part_path(part, n)
    if path.exists():
        return path
    x, y = test_split("fashion_mnist", data_dir=data_dir, n=n)
    pieces, start = [], 0
    prefix = _finished_prefix(part, n)
    if prefix is not None:
        pieces, start = [prefix], prefix["n_images"]
    for s in range(start, n, chunk):
        e, t0 = min(s + chunk, n), time.time()
        piece = OUT / "chunks" / f"{part}-{s}-{e}.json"
        if not piece.exists():
            rep = _report(part, x[s:e], y[s:e])
            _write(piece, {"part": part, "images": [s, e], "n_images": e - s, "seconds": time.time() - t0,
                           "report": rep.to_dict()})
            print(f"  {part}: images {s}-{e} in {time.time() - t0:.0f} s", flush=True)
        pieces.append(json.loads(piece.read_text()))
    rep = concat_reports([CompareReport.from_dict(p["report"]) for p in pieces])
    _write(path, {"part": part, "n_images": n, "seconds": sum(p["seconds"] for p in pieces),
                  "pieces": [p.get("images", [0, p["n_images"]]) for p in pieces], "report": rep.to_dict()})
    return path


def _rows(n: int, n_wide: int | None = None) -> dict:
    """``{part: CompareRow}`` of every finished part on ``n`` images (the default zoo's switches on
    ``n_wide`` images, when given: the first ``n_wide`` of the same images)."""
    from rst.evaluation.compare import CompareReport
    out = {}
    for path in sorted(OUT.glob(f"*-{n}.json")) + (sorted(OUT.glob(f"wide_*-{n_wide}.json")) if n_wide else []):
        doc = json.loads(path.read_text())
        if n_wide and doc["part"].startswith("wide_") and doc["n_images"] != n_wide:
            continue
        out[doc["part"]] = CompareReport.from_dict(doc["report"]).rows[0]
    return out


def _members(rows: dict) -> list[tuple[str, object]]:
    return sorted(((p, r) for p, r in rows.items() if p.startswith("member")), key=lambda pr: int(pr[0][6:]))


def _wide_tickets(rows: dict) -> list[tuple[str, object]]:
    """The default zoo's tickets alone (parts ``wide_<ticket>``), in order of keep ratio."""
    return sorted(((p, r) for p, r in rows.items() if p.startswith("wide_keep")), key=lambda pr: float(pr[0][9:]))


def _best_wide_ticket(rows: dict, n_wide: int | None) -> str | None:
    """The default zoo's ticket with the highest worst case on the images its switches saw (its keep0.2
    is the boosted set's member 0): chosen on those same test images, which favours the ticket."""
    m = n_wide or (rows["wide_alpha"].n_images if "wide_alpha" in rows else None)
    cands = [p for p in ("member0", *[p for p, _ in _wide_tickets(rows)]) if p in rows]
    if not m or not cands:
        return None
    return max(cands, key=lambda p: sum(rows[p].per_image[:m]) / m)


def summary(n: int, n_wide: int | None = None) -> str:
    """Markdown: every row with its standard error, and the paired differences of the boosted switch
    (over the images both rows saw: the first ``n_wide`` for the default zoo's switches)."""
    rows = _rows(n, n_wide)
    boosted = _sets()[0]
    alpha = boosted.probabilities or [1 / len(boosted)] * len(boosted)
    names = {"boosted_r2s": f"R2S, boosted set ({len(boosted)} members, fitted alpha)",
             "wide_uniform": f"R2S, {BASE} (6 members, uniform)", "wide_alpha": f"R2S, {BASE} (6 members, fitted alpha)",
             "dense": "dense AT (same random network's weights, trained)"}
    for i, t in enumerate(boosted.tickets):
        names[f"member{i}"] = f"{t.name} alone (boosted member {i}, alpha {alpha[i]:.3f})"
    wide_tickets = _wide_tickets(rows)
    for p, _ in wide_tickets:
        names[p] = f"{p[5:]} alone ({BASE} ticket)"
    lines = [f"The first {n} test images for every row"
             + (f", the first {n_wide} of them for the {BASE} switches and tickets" if n_wide else "") + ".", "",
             "| model | test images | clean | worst case over its suite | ± SE |", "|---|---:|---:|---:|---:|"]
    order = ["boosted_r2s", *[p for p, _ in _members(rows)], "wide_uniform", "wide_alpha",
             *[p for p, _ in wide_tickets], "dense"]
    lines += [_row_line(names[p], rows[p]) for p in order if p in rows]
    best = _best_of(rows, [p for p, _ in _members(rows)])
    wide_best = _best_wide_ticket(rows, n_wide)
    wide_best_name = boosted.tickets[0].name if wide_best == "member0" else (wide_best or "")[5:]
    pairs = [("boosted_r2s", best, "boosted R2S − its best member") if best else None,
             ("boosted_r2s", "dense", "boosted R2S − dense AT"),
             ("boosted_r2s", "wide_uniform", f"boosted R2S − {BASE} R2S, uniform"),
             ("boosted_r2s", "wide_alpha", f"boosted R2S − {BASE} R2S, fitted alpha"),
             ("wide_alpha", "wide_uniform", f"{BASE} R2S: fitted alpha − uniform"),
             ("wide_alpha", wide_best, f"{BASE} R2S, fitted alpha − its best ticket here ({wide_best_name})")
             if wide_best else None,
             ("wide_uniform", wide_best, f"{BASE} R2S, uniform − its best ticket here ({wide_best_name})")
             if wide_best else None,
             ("wide_alpha", "dense", f"{BASE} R2S, fitted alpha − dense AT"),
             (best or "member0", "dense", "best member − dense AT")]
    return "\n".join(lines + _pair_lines(rows, pairs)) + "\n"


def _row_line(label: str, r) -> str:
    from rst.evaluation.per_image import standard_error
    return (f"| {label} | {r.n_images} | {100 * r.clean:.2f} % | {100 * r.worst_case:.2f} % | "
            f"{100 * standard_error(r.worst_case, r.n_images):.2f} |")


def _pair_lines(rows: dict, pairs: list) -> list[str]:
    """The paired-difference table of ``pairs`` ``(part a, part b, label)`` (None and parts not run are
    skipped), each over the images both saw."""
    import torch

    from rst.evaluation.per_image import paired_difference
    lines = ["", "| paired difference (same images) | images | points | 95 % interval |", "|---|---:|---:|---:|"]
    for pair in pairs:
        if pair is None or pair[0] not in rows or pair[1] not in rows:
            continue
        a, b, label = pair
        m = min(rows[a].n_images, rows[b].n_images)
        d = paired_difference(torch.tensor(rows[a].per_image[:m]), torch.tensor(rows[b].per_image[:m]))
        lines.append(f"| {label} | {m} | {100 * d['difference']:+.2f} | "
                     f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}] |")
    return lines


def _best_of(rows: dict, parts: list[str]) -> str | None:
    """The part with the highest worst case among ``parts`` that were run (on the same test images)."""
    run = [p for p in parts if p in rows]
    return max(run, key=lambda p: rows[p].worst_case) if run else None


def ablation(n: int) -> str:
    """Markdown: what boosting adds over the same recipe without the switch in the attack, and what a
    warm start does; every row with its standard error, paired differences on the same images."""
    rows = _rows(n)
    boosted, chain, control = _sets()[0], _ablation_set("chain"), _ablation_set("control")
    a = lambda cs: ", ".join(f"{p:.3f}" for p in cs.probabilities)      # noqa: E731
    names = {"boosted_r2s": f"R2S, boosted set: keep0.2 + boosted member, fresh start (alpha {a(boosted)})",
             "control_r2s": f"R2S, control set: keep0.2 + control ticket (alpha {a(control)})",
             "chain_r2s": f"R2S, chain set: control ticket + boosted member, warm start (alpha {a(chain)})",
             "member0": "keep0.2 alone (the default zoo's ticket)",
             "member1": "boosted member, fresh start, alone (searched against keep0.2)",
             "chain_member0": "control ticket alone (the boosted member's recipe, no earlier member in its attack)",
             "chain_member1": "boosted member, warm start, alone (searched against the control ticket)"}
    lines = [f"The first {n} test images for every row.", "",
             "| model | test images | clean | worst case over its suite | ± SE |", "|---|---:|---:|---:|---:|"]
    lines += [_row_line(label, rows[p]) for p, label in names.items() if p in rows]
    control_best = _best_of(rows, ["member0", "chain_member0"])
    chain_best = _best_of(rows, ["chain_member0", "chain_member1"])
    pairs = [("member1", "chain_member0", "boosted member (fresh) − control ticket: what the switch in the attack adds"),
             ("boosted_r2s", "control_r2s", "boosted switch − control switch (same keep0.2, the other member boosted or not)"),
             ("control_r2s", control_best, "control switch − its best member") if control_best else None,
             ("chain_r2s", chain_best, "chain switch (warm start) − its best member") if chain_best else None,
             ("chain_member1", "chain_member0", "boosted member (warm start) − the control ticket it started from"),
             ("chain_r2s", "boosted_r2s", "chain switch (warm start) − boosted switch (fresh start)")]
    return "\n".join(lines + _pair_lines(rows, pairs)) + "\n"


def ship(n: int) -> Path:
    """The boosted set's like-with-like report (its R2S, its members, dense AT) at the index's
    ``reports.r2s_compare``, in the format of ``python -m rst eval r2s --protocols all``: the R2S live page shows it."""
    from rst.evaluation.compare import CompareReport, _paired
    rows = _rows(n)
    parts = ["boosted_r2s", *[p for p, _ in _members(rows)], "dense"]
    missing = [p for p in parts if p not in rows]
    if missing or len(parts) < 3:
        raise SystemExit(f"boosted_switch: parts not run yet: {missing or 'member0, member1'}")
    chosen = [rows[p] for p in parts]
    boosted = _sets()[0]
    report = CompareReport(chosen, _paired(chosen), {"suite": suite().to_dict(), "r2s_images": n,
                                                     "single_images": n, "members": list(range(len(boosted))),
                                                     "eps": suite().eps})
    path = ZOOS / _entry(BOOSTED)["reports"]["r2s_compare"]
    path.write_text(json.dumps({"command": f"python bench/boosted_switch.py ship --test-images {n}",
                                "test_images": f"test[:{n}]", "compare": report.to_dict(), "complete": True},
                               indent=1, default=str))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("run", "summary", "ship", "sets", "ablation"))
    p.add_argument("parts", nargs="?", default="", help="run: comma-separated parts; sets: the build directory")
    p.add_argument("--test-images", dest="test_images", type=int, default=1000)
    p.add_argument("--wide-images", dest="wide_images", type=int, default=None,
                   help="summary: the image count of the default zoo's switch parts (default: --test-images)")
    p.add_argument("--data-dir", dest="data_dir")
    p.add_argument("--chunk", type=int, default=CHUNK, help="run: images per resumable piece (default %(default)s)")
    a = p.parse_args(argv)
    if a.test_images < 2:
        p.error("--test-images must be at least 2")
    if a.chunk < 2:
        p.error("--chunk must be at least 2")
    if a.command == "run":
        for part in filter(None, a.parts.split(",")):
            t0 = time.time()
            print(run_part(part, a.test_images, a.data_dir, a.chunk), f"({time.time() - t0:.0f} s)", flush=True)
    elif a.command == "summary":
        print(summary(a.test_images, a.wide_images), end="")
    elif a.command == "ablation":
        print(ablation(a.test_images), end="")
    elif a.command == "sets":
        if not a.parts:
            p.error("sets needs the build directory of a `python -m rst search --boosted 2` run")
        print(*write_ablation_sets(Path(a.parts), a.data_dir), sep="\n")
    else:
        print(ship(a.test_images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
