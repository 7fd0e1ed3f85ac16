"""``python -m rst eval r2s FILE``: R2S (the random switch over the tickets) under the paper's protocol and
adaptive attacks, with sanity checks (``r2s.json`` / ``.csv`` / ``.png``); ``--protocols all`` is the
like-with-like table of :mod:`rst.cli.eval_r2s_compare`."""
from __future__ import annotations

from .eval_output import base_payload, print_checks, print_written
from .eval_r2s_compare import add_compare_args, cmd_r2s_all
from .eval_setup import add_common_eval_args, setup_evaluation
from .input import count, int_list, r2s_protocols_or_all, str_list
from .progress_bars import CountBar


def add_r2s_command(eval_subparsers) -> None:
    """Register ``r2s`` on the ``eval`` subparser group."""
    s = eval_subparsers.add_parser("r2s", help="R2S: paper's protocol and adaptive attacks, exact expectation")
    add_common_eval_args(s)
    s.add_argument("--members", help="ticket indices, e.g. 0,1,2 (default: all)")
    s.add_argument("--protocols", type=r2s_protocols_or_all,
                   help="comma-separated subset of paper,expectation,ensemble,eot,apgd_ce,apgd_dlr,"
                        "arc,autoattack_rand (default: each of them; autoattack_rand is slow on a "
                        "CPU), or 'all': the like-with-like table of R2S, every member and dense AT "
                        "(--images for R2S, default 500; --single-images, default 1000)")
    add_compare_args(s)
    s.add_argument("--eot-samples", dest="eot_samples", type=count, default=10, help="EOT samples per step (eot)")
    s.add_argument("--switch", choices=("call", "batch", "example"), default="batch",
                   help="how R2S draws members (eot / autoattack_rand attack this switching)")
    s.add_argument("--sanity", action="store_true",
                   help="also run rst.evaluation.sanity's attack-based checks on R2S (eps sweep, steps, EOT, Square)")
    s.add_argument("--sanity-images", dest="sanity_images", type=count, default=128)
    s.add_argument("--square-queries", dest="square_queries", type=count, default=1000)
    s.set_defaults(func=cmd_r2s)


def cmd_r2s(args) -> int:
    """R2S under the paper's protocol and adaptive attacks, with sanity checks."""
    from rst.evaluation.protocols import evaluate_r2s
    from rst.evaluation.r2s import PROTOCOLS, R2S
    from rst.evaluation.reports import r2s_figure, write_report
    if str_list(args.protocols) == ["all"]:
        return cmd_r2s_all(args)
    cs, x, y, device, attack = setup_evaluation(args)
    protocols = str_list(args.protocols) or list(PROTOCOLS)       # known ones: r2s_protocols_or_all
    r2s = R2S(cs, members=int_list(args.members), switch=args.switch, seed=args.seed, device=device)
    _note_slow_autoattack_rand(protocols, device, len(x))
    bar = CountBar("R2S evaluation (batches)", args.quiet)
    try:
        report = evaluate_r2s(r2s, x, y, eps=attack.eps, steps=attack.steps, alpha=attack.alpha,
                              eot_samples=args.eot_samples, protocols=protocols, batch_size=args.batch_size,
                              seed=args.seed, progress=bar)
    finally:
        bar.close()
    if args.sanity:
        report.sanity.extend(_sanity_checks(r2s, x, y, attack, args))
    frame = report.to_frame()
    _print_table(r2s, attack, len(x), frame)
    print_checks(report.sanity)
    payload = {**base_payload(args, cs, x, device, attack), "r2s": report.to_dict(),
               "members": r2s.members, "switch": r2s.switch, "members_memory_bytes": r2s.members_memory_bytes()}
    paths = write_report(args.out, "r2s", payload, frame, r2s_figure(report), device=str(device))
    print_written(paths)
    return 0


def _note_slow_autoattack_rand(protocols: list[str], device, n_images: int) -> None:
    """Say that ``autoattack_rand`` on more than 16 images on a CPU is slow, and how to leave it out."""
    if "autoattack_rand" in protocols and device.type == "cpu" and n_images > 16:
        print(f"note: autoattack_rand runs APGD-CE/DLR with EOT=20 (4000 gradient steps per batch) on "
              f"{n_images} images on the CPU, which is slow; leave it out with --protocols to skip it", flush=True)


def _sanity_checks(r2s, x, y, attack, args) -> list:
    """``--sanity``: rst.evaluation.sanity's attack-based checks on the first ``--sanity-images`` images."""
    from rst.evaluation.sanity import sanity_checks
    n = min(len(x), args.sanity_images)
    return sanity_checks(r2s, x[:n], y[:n], eps=attack.eps, steps=(5, attack.steps),
                         square_queries=args.square_queries, seed=args.seed, batch_size=args.batch_size)


def _print_table(r2s, attack, n_images: int, frame) -> None:
    """The members and attack, then one row per protocol: expected and worst-member accuracy."""
    cols = ["protocol", "adaptive", "expected_acc", "worst_member_acc"]
    print(f"R2S over {r2s.K} members {r2s.names} (switch={r2s.switch}); eps={attack.eps:.4g}, "
          f"{attack.steps} steps; {n_images} test images")
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("the 'paper' row is the non-adaptive transfer protocol; 'worst_case_adaptive' is the honest number")
