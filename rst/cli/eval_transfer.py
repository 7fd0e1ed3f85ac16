"""``python -m rst eval transfer FILE``: the K x K transfer matrix between the tickets, each source attacked
once (``transfer.json`` / ``.csv`` / ``.png``; ``--early-stop``: ``transfer_early_stop.*``)."""
from __future__ import annotations

from .eval_output import base_payload, print_written
from .eval_setup import add_common_eval_args, setup_evaluation
from .progress_bars import CountBar


def add_transfer_command(eval_subparsers) -> None:
    """Register ``transfer`` on the ``eval`` subparser group."""
    s = eval_subparsers.add_parser("transfer", help="transfer matrix between the tickets (K source attacks)")
    add_common_eval_args(s)
    s.add_argument("--early-stop", dest="early_stop", action="store_true",
                   help="the reference code's source-side early stop (inflates transfer; labelled as such)")
    s.set_defaults(func=cmd_transfer)


def cmd_transfer(args) -> int:
    """K x K transfer matrix between the tickets (source attacked once each)."""
    from rst.evaluation.metrics import transfer_matrix
    from rst.evaluation.reports import transfer_figure, write_report
    cs, x, y, device, attack = setup_evaluation(args)
    bar = CountBar("transfer (source attacks)", args.quiet)
    try:
        tr = transfer_matrix(cs, x, y, attack, early_stop=args.early_stop, device=device,
                             batch_size=args.batch_size, seed=args.seed, progress=bar)
    finally:
        bar.close()
    _print_matrix(tr)
    name = "transfer_early_stop" if args.early_stop else "transfer"
    paths = write_report(args.out, name, {**base_payload(args, cs, x, device, attack), "transfer": tr.to_dict()},
                         tr.to_frame(), transfer_figure(tr), device=str(device))
    print_written(paths)
    return 0


def _print_matrix(tr) -> None:
    """The matrix as a table in percent (rows: source, columns: target), and its diagonal / off-diagonal means."""
    print(tr.label)
    print(f"{tr.attack}; {tr.n_images} images; rows = source (attacked), columns = target (answers)")
    head = "source\\target " + " ".join(f"{r:>8g}" for r in tr.keep_ratios)
    print(head)
    for i, r in enumerate(tr.keep_ratios):
        print(f"{r:>13g} " + " ".join(f"{100 * v:8.2f}" for v in tr.matrix[i].tolist()))
    d = tr.to_dict()
    print(f"diagonal (white-box) mean {100 * d['diagonal_mean']:.2f}%, off-diagonal (transfer) mean "
          f"{100 * (d['off_diagonal_mean'] or float('nan')):.2f}%, all cells {100 * d['mean']:.2f}%")
