"""``python -m rst eval curve FILE``: clean and robust accuracy of every ticket against keep ratio
(``curve.json`` / ``.csv`` / ``.png``)."""
from __future__ import annotations

from .eval_output import base_payload, print_written
from .eval_setup import add_common_eval_args, setup_evaluation
from .progress_bars import CountBar


def add_curve_command(eval_subparsers) -> None:
    """Register ``curve`` on the ``eval`` subparser group."""
    s = eval_subparsers.add_parser("curve", help="clean and robust accuracy of every ticket against keep ratio")
    add_common_eval_args(s)
    s.set_defaults(func=cmd_curve)


def cmd_curve(args) -> int:
    """Clean and robust accuracy of every ticket against keep ratio."""
    import pandas as pd

    from rst.evaluation.metrics import sparsity_curve
    from rst.evaluation.reports import curve_figure, write_report
    cs, x, y, device, attack = setup_evaluation(args)
    bar = CountBar("sparsity curve (tickets)", args.quiet)
    try:
        rows = sparsity_curve(cs, x, y, attack, device=device, batch_size=args.batch_size, seed=args.seed,
                              progress=bar)
    finally:
        bar.close()
    frame = pd.DataFrame(rows)
    print(frame[["name", "keep_ratio", "clean", "robust"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"attack: {attack.describe()}; {len(x)} test images")
    paths = write_report(args.out, "curve", {**base_payload(args, cs, x, device, attack), "rows": rows},
                         frame, curve_figure(rows), device=str(device))
    print_written(paths)
    return 0
