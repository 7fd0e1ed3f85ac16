"""``python -m rst eval autoattack FILE``: AutoAttack (Croce & Hein 2020) on each selected ticket, or on their
R2S with ``--r2s`` (``autoattack.json`` / ``.csv``, and a curve figure for the tickets)."""
from __future__ import annotations

from .eval_output import base_payload, print_written
from .eval_setup import add_common_eval_args, setup_evaluation
from .input import int_list, str_list


def add_autoattack_command(eval_subparsers) -> None:
    """Register ``autoattack`` on the ``eval`` subparser group."""
    s = eval_subparsers.add_parser("autoattack", help="AutoAttack (Croce & Hein 2020) on each ticket or on R2S")
    add_common_eval_args(s)
    s.add_argument("--version", choices=("standard", "plus", "rand"), default="standard")
    s.add_argument("--attacks", help="custom attack list, e.g. apgd-ce,square (implies version=custom)")
    s.add_argument("--tickets", help="ticket indices (default: all)")
    s.add_argument("--r2s", action="store_true", help="attack the R2S of the selected tickets (use --version rand)")
    s.add_argument("--switch", choices=("call", "batch", "example"), default="batch")
    s.set_defaults(func=cmd_autoattack)


def cmd_autoattack(args) -> int:
    """AutoAttack on each selected ticket (or on their R2S with --r2s)."""
    import pandas as pd

    from rst.evaluation.autoattack import autoattack_accuracy
    from rst.evaluation.reports import write_report
    cs, x, y, device, attack = setup_evaluation(args)
    indices = int_list(args.tickets) or list(range(len(cs)))
    attacks = str_list(args.attacks)
    version = "custom" if attacks else args.version
    rows, logs = [], {}
    for name, kr, target in _targets(args, cs, indices, device):
        model = target if args.r2s else cs.model(target, device=device)
        res = autoattack_accuracy(model, x, y, eps=attack.eps, version=version, batch_size=args.batch_size,
                                  seed=args.seed, attacks=attacks)
        logs[name] = res.pop("log")
        rows.append({"name": name, "keep_ratio": kr, **{k: v for k, v in res.items() if k != "attacks"},
                     "attacks": ",".join(res["attacks"])})
        _print_result(name, res, version, attack.eps, len(x), logs[name])
    frame = pd.DataFrame(rows)
    payload = {**base_payload(args, cs, x, device, attack), "rows": rows, "version": version, "log": logs}
    fig = None if args.r2s else _curve(rows, version, attack.eps)
    paths = write_report(args.out, "autoattack", payload, frame, fig, device=str(device))
    print_written(paths)
    return 0


def _targets(args, cs, indices: list[int], device) -> list[tuple]:
    """``(name, keep ratio, target)``: one R2S over the tickets with ``--r2s``, else each ticket's index."""
    if args.r2s:
        from rst.evaluation.r2s import R2S
        return [("r2s", float("nan"), R2S(cs, members=indices, switch=args.switch, seed=args.seed, device=device))]
    return [(cs.tickets[i].name or f"ticket{i}", cs.tickets[i].keep_ratio, i) for i in indices]


def _print_result(name: str, res: dict, version: str, eps: float, n_images: int, log: str) -> None:
    """A target's clean and robust accuracy, then each warning of AutoAttack's log."""
    print(f"{name:14s} clean {res['clean']:.4f}  AutoAttack robust {res['robust']:.4f}  "
          f"({version}: {', '.join(res['attacks'])}; eps={eps:.4g}; {n_images} images)", flush=True)
    warn = [line for line in log.splitlines() if line.startswith("WARNING")]
    for line in warn:
        print(f"  autoattack {line}")


def _curve(rows: list[dict], version: str, eps: float):
    """The tickets' clean and AutoAttack accuracy against keep ratio (``None`` without rows)."""
    if not rows:
        return None
    from rst.evaluation.reports import curve_figure
    return curve_figure([{"keep_ratio": r["keep_ratio"], "clean": r["clean"], "robust": r["robust"],
                          "attack": f"AutoAttack {version}, eps={eps:.4g}"} for r in rows])
