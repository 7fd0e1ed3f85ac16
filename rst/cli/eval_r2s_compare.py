"""``python -m rst eval r2s FILE --protocols all``: the like-with-like table (:mod:`rst.evaluation.compare`) of
R2S, every member and the dense AT baseline on the same images (``r2s_compare.json`` / ``.csv``, rewritten
after every row)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .eval_output import base_payload, print_written
from .eval_setup import setup_evaluation
from .input import UsageError, count, int_list, str_list
from .progress_bars import CountBar


def add_compare_args(s) -> None:
    """The ``eval r2s`` options that only ``--protocols all`` reads: image counts, baseline, suite, rows."""
    s.add_argument("--single-images", dest="single_images", type=count, default=None,
                   help="with --protocols all: first N test images for each single model (default 1000)")
    s.add_argument("--dense", help="with --protocols all: the dense baseline's weights (default: "
                                   "dense_at.weights.safetensors beside the tickets file, when present)")
    s.add_argument("--long-steps", dest="long_steps", type=count, default=100,
                   help="with --protocols all: steps of the single models' long PGD (default 100)")
    s.add_argument("--long-restarts", dest="long_restarts", type=count, default=2,
                   help="with --protocols all: restarts of the long PGD (default 2)")
    s.add_argument("--apgd-t-targets", dest="apgd_t_targets", type=count, default=9,
                   help="with --protocols all: APGD-T target classes (default 9, AutoAttack standard)")
    s.add_argument("--apgd-steps", dest="apgd_steps", type=count, default=100,
                   help="with --protocols all: APGD iterations (R2S's APGD-CE/DLR on the expectation; default 100)")
    s.add_argument("--apgd-t-steps", dest="apgd_t_steps", type=count, default=None,
                   help="with --protocols all: APGD-T iterations of the single models (default: --apgd-steps)")
    s.add_argument("--arc-topk", dest="arc_topk", type=count, default=None,
                   help="with --protocols all: ARC-lite, only the top-k classes' boundaries (default: all)")
    s.add_argument("--rows", help="with --protocols all: rows to compute, a subset of r2s,members,dense "
                                  "(default: all; run parts in parallel and join them with --reuse)")
    s.add_argument("--reuse", nargs="*", help="with --protocols all: earlier r2s_compare.json files whose rows "
                                              "(same images, radius, suite) are taken instead of recomputed")


def cmd_r2s_all(args) -> int:
    """``eval r2s --protocols all``: the like-with-like table (rst.evaluation.compare): R2S under every attack on
    the random switch, each member and dense AT under PGD-20 / PGD-100 with restarts / APGD-T, per-image
    worst cases on the same images, standard errors and the paired R2S - best member interval."""
    from rst.evaluation.compare import compare_like_with_like, format_report
    r2s_images = args.images or 500
    single_images = args.single_images or 1000
    n_images = max(r2s_images, single_images)
    cs, x, y, device, attack = setup_evaluation(argparse.Namespace(**{**vars(args), "images": n_images}))
    dense = _dense_baseline(args, device)
    cfg = _suite_config(args, attack)
    members = int_list(args.members)
    _print_plan(len(members or cs.tickets), dense is not None, min(r2s_images, len(x)),
                min(single_images, len(x)), attack.eps)
    bar = CountBar("like-with-like (model x attack)", args.quiet)
    base = base_payload(args, cs, x[:n_images], device, attack)

    def write(rep):
        """After each row: close the bar, print the row, rewrite the (incomplete) report."""
        bar.close()
        _print_row(rep.rows[-1])
        _write_compare(args, base, rep, device, complete=False)

    reuse = _reused_reports(args.reuse)
    rows = str_list(args.rows) or ["r2s", "members", "dense"]
    try:
        report = compare_like_with_like(cs, x, y, eps=attack.eps, dense=dense, r2s_images=r2s_images,
                                        single_images=single_images, members=members, cfg=cfg, device=device,
                                        progress=bar, on_row=write, rows=rows, reuse=reuse)
    finally:
        bar.close()
    print(format_report(report))
    print_written(_write_compare(args, base, report, device, complete=True))
    return 0


def _dense_baseline(args, device):
    """The dense AT model of ``--dense`` (else ``dense_at.weights.safetensors`` beside the tickets, when present)."""
    dense_path = Path(args.dense) if args.dense else Path(args.file).with_name("dense_at.weights.safetensors")
    if dense_path.exists():
        from rst.network.masks import load_weights
        return load_weights(dense_path, device=device)[0]
    if args.dense:
        raise UsageError(f"--dense {args.dense}: no such file")
    return None


def _suite_config(args, attack):
    """The :class:`rst.evaluation.compare.SuiteConfig` of the attack and the ``--protocols all`` options."""
    from rst.evaluation.compare import SuiteConfig
    return SuiteConfig(eps=attack.eps, alpha=attack.alpha, steps=attack.steps, long_steps=args.long_steps,
                       long_restarts=args.long_restarts, apgd_t_targets=args.apgd_t_targets,
                       apgd_steps=args.apgd_steps, apgd_t_steps=args.apgd_t_steps, arc_topk=args.arc_topk,
                       eot_samples=args.eot_samples, batch_size=args.batch_size, seed=args.seed)


def _print_plan(n_members: int, has_dense: bool, r2s_images: int, single_images: int, eps: float) -> None:
    """The first line: R2S's images, how many single models on how many images, the radius."""
    print(f"like-with-like: R2S on the first {r2s_images} test images, {n_members + has_dense} single models "
          f"on the first {single_images}; eps={eps:.4g}"
          + ("" if has_dense else "; no dense baseline found"), flush=True)


def _print_row(r) -> None:
    """A finished row: clean accuracy, worst case with its standard error, images."""
    print(f"  {r.name:18s} clean {100 * r.clean:6.2f}%  worst case {100 * r.worst_case:6.2f}% "
          f"± {100 * r.se:.2f} ({r.n_images} images)", flush=True)


def _reused_reports(paths) -> list:
    """The :class:`rst.evaluation.compare.CompareReport` of each ``--reuse`` file."""
    reuse = []
    for path in paths or []:
        import json

        from rst.evaluation.compare import CompareReport
        reuse.append(CompareReport.from_dict(json.loads(Path(path).read_text())["compare"]))
    return reuse


def _write_compare(args, base: dict, report, device, complete: bool) -> dict:
    """Write ``r2s_compare.json`` / ``.csv`` (``complete`` False while rows are missing); the paths written."""
    from rst.evaluation.reports import write_report
    return write_report(args.out, "r2s_compare", {**base, "command": "eval r2s --protocols all",
                                                  "compare": report.to_dict(), "complete": complete},
                        report.to_frame(), device=str(device))
