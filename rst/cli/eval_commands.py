"""``python -m rst eval {curve,transfer,r2s,autoattack} FILE``: evaluation commands over a mask file.

    python -m rst eval curve tickets.rst.safetensors --eps 0.1 --steps 20 --out runs/eval
    python -m rst eval transfer tickets.rst.safetensors [--early-stop]
    python -m rst eval r2s tickets.rst.safetensors --members 0,1,2 --protocols paper,expectation,ensemble,eot
    python -m rst eval autoattack tickets.rst.safetensors --version standard --images 1000

Each command writes ``NAME.json`` (numbers, configuration, provenance), ``NAME.csv`` and ``NAME.png``
into ``--out`` through :mod:`rst.evaluation.reports`, prints a compact table and every failed sanity check.
``rst.cli.commands`` registers these commands with :func:`add_eval_commands` (``python -m rst eval`` is the
one entry point).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .input import UsageError, count, images, r2s_protocols_or_all, radius

_DATASET_EPS = {"cifar10": 8 / 255, "cifar100": 8 / 255, "svhn": 8 / 255}   # else 0.1 (Fashion-MNIST, synthetic)


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


class _Bar:
    """A tqdm bar driven by ``progress(done, total)`` callbacks."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet, self.bar = label, quiet, None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=self.label, dynamic_ncols=True, leave=False)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _int_list(text: str | None) -> list[int] | None:
    if text is None or text == "":
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise UsageError(f"expected a comma-separated list of integers, got {text!r}") from None


def _str_list(text: str | None) -> list[str] | None:
    return None if not text else [t.strip() for t in text.split(",") if t.strip()]


def default_eps(cs) -> float:
    """The eps the tickets were adversarially searched with (their search config), else the data set's
    usual radius (8/255 for CIFAR / SVHN, 0.1 for Fashion-MNIST and synthetic)."""
    for t in cs.tickets:
        cfg = t.search_config or {}
        if cfg.get("eps") is not None and cfg.get("inner_attack") not in ("none", None):
            return float(cfg["eps"])
    return _DATASET_EPS.get(cs.spec.dataset, 0.1)


def _setup(args):
    """Load the candidate set, the test images, the device and the attack from the common options."""
    from rst.evaluation.attacks import AttackConfig
    from rst.data.datasets import DataUnavailableError
    from rst.runtime.device import resolve_device
    from rst.network.masks import load_tickets

    cs = load_tickets(args.file)
    try:       # --images N up to the shipped subset's size: its images, offline (see evaluation_images)
        x, y, _ = evaluation_images(cs, args.images or None, getattr(args, "subset", None), args.data_dir)
    except DataUnavailableError as e:
        raise DataUnavailableError(f"no test images: {e}") from None      # rst.cli.commands.main: one line, exit 2
    eps = args.eps if args.eps is not None else default_eps(cs)
    alpha = args.alpha if args.alpha is not None else eps / 4
    attack = AttackConfig("pgd", eps=eps, alpha=alpha, steps=args.steps)
    return cs, x, y, resolve_device(args.device), attack


def test_data(cs, data_dir=None):
    """The test split of the candidate set's data set ("synthetic": 512 images drawn with seed + 1)."""
    from rst.data.datasets import test_split
    return test_split(cs.spec.dataset, cs.spec.seed, data_dir)


def _base_payload(args, cs, x, device, attack) -> dict:
    return {"command": f"eval {getattr(args, 'eval_command', '?')}", "file": str(args.file), "network": cs.spec.to_dict(),
            "weight_checksum": cs.weight_checksum,
            "tickets": [{"index": i, "name": t.name, "keep_ratio": t.keep_ratio} for i, t in enumerate(cs.tickets)],
            "data": {"dataset": cs.spec.dataset, "split": f"test[:{len(x)}]"}, "n_images": len(x),
            "attack": attack.to_dict(), "attack_description": attack.describe(), "seed": args.seed,
            "device": str(device)}


def _print_written(paths: dict) -> None:
    print("written: " + ", ".join(str(p) for p in paths.values()))


def _print_checks(checks) -> int:
    failed = [c for c in checks if not c.passed]
    for c in failed:
        print(f"SANITY CHECK FAILED  {c.name}: {c.detail}")
    if checks and not failed:
        print(f"sanity checks: all {len(checks)} passed")
    return len(failed)


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def cmd_curve(args) -> int:
    """Clean and robust accuracy of every ticket against keep ratio."""
    import pandas as pd

    from rst.evaluation.metrics import sparsity_curve
    from rst.evaluation.reports import curve_figure, write_report
    cs, x, y, device, attack = _setup(args)
    bar = _Bar("sparsity curve (tickets)", args.quiet)
    try:
        rows = sparsity_curve(cs, x, y, attack, device=device, batch_size=args.batch_size, seed=args.seed,
                              progress=bar)
    finally:
        bar.close()
    frame = pd.DataFrame(rows)
    print(frame[["name", "keep_ratio", "clean", "robust"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"attack: {attack.describe()}; {len(x)} test images")
    paths = write_report(args.out, "curve", {**_base_payload(args, cs, x, device, attack), "rows": rows},
                         frame, curve_figure(rows), device=str(device))
    _print_written(paths)
    return 0


def cmd_transfer(args) -> int:
    """K x K transfer matrix between the tickets (source attacked once each)."""
    from rst.evaluation.metrics import transfer_matrix
    from rst.evaluation.reports import transfer_figure, write_report
    cs, x, y, device, attack = _setup(args)
    bar = _Bar("transfer (source attacks)", args.quiet)
    try:
        tr = transfer_matrix(cs, x, y, attack, early_stop=args.early_stop, device=device,
                             batch_size=args.batch_size, seed=args.seed, progress=bar)
    finally:
        bar.close()
    _print_matrix(tr)
    name = "transfer_early_stop" if args.early_stop else "transfer"
    paths = write_report(args.out, name, {**_base_payload(args, cs, x, device, attack), "transfer": tr.to_dict()},
                         tr.to_frame(), transfer_figure(tr), device=str(device))
    _print_written(paths)
    return 0


def _print_matrix(tr) -> None:
    print(tr.label)
    print(f"{tr.attack}; {tr.n_images} images; rows = source (attacked), columns = target (answers)")
    head = "source\\target " + " ".join(f"{r:>8g}" for r in tr.keep_ratios)
    print(head)
    for i, r in enumerate(tr.keep_ratios):
        print(f"{r:>13g} " + " ".join(f"{100 * v:8.2f}" for v in tr.matrix[i].tolist()))
    d = tr.to_dict()
    print(f"diagonal (white-box) mean {100 * d['diagonal_mean']:.2f}%, off-diagonal (transfer) mean "
          f"{100 * (d['off_diagonal_mean'] or float('nan')):.2f}%, all cells {100 * d['mean']:.2f}%")


def cmd_r2s_all(args) -> int:
    """``eval r2s --protocols all``: the like-with-like table (rst.evaluation.compare): R2S under every attack on
    the random switch, each member and dense AT under PGD-20 / PGD-100 with restarts / APGD-T, per-image
    worst cases on the same images, standard errors and the paired R2S - best member interval."""
    import argparse as _argparse
    from pathlib import Path

    from rst.evaluation.compare import SuiteConfig, compare_like_with_like, format_report
    from rst.evaluation.reports import write_report
    r2s_images = args.images or 500
    single_images = args.single_images or 1000
    cs, x, y, device, attack = _setup(_argparse.Namespace(**{**vars(args), "images": max(r2s_images, single_images)}))
    dense = None
    dense_path = Path(args.dense) if args.dense else Path(args.file).with_name("dense_at.weights.safetensors")
    if dense_path.exists():
        from rst.network.masks import load_weights
        dense = load_weights(dense_path, device=device)[0]
    elif args.dense:
        raise UsageError(f"--dense {args.dense}: no such file")
    cfg = SuiteConfig(eps=attack.eps, alpha=attack.alpha, steps=attack.steps, long_steps=args.long_steps,
                      long_restarts=args.long_restarts, apgd_t_targets=args.apgd_t_targets,
                      apgd_steps=args.apgd_steps, apgd_t_steps=args.apgd_t_steps, arc_topk=args.arc_topk,
                      eot_samples=args.eot_samples, batch_size=args.batch_size, seed=args.seed)
    members = _int_list(args.members)
    n_single = 1 + len(members or cs.tickets) + (dense is not None)
    print(f"like-with-like: R2S on the first {min(r2s_images, len(x))} test images, {n_single - 1} single models "
          f"on the first {min(single_images, len(x))}; eps={attack.eps:.4g}"
          + ("" if dense is not None else "; no dense baseline found"), flush=True)
    bar = _Bar("like-with-like (model x attack)", args.quiet)
    base = _base_payload(args, cs, x[:max(r2s_images, single_images)], device, attack)

    def write(rep):
        bar.close()
        r = rep.rows[-1]
        print(f"  {r.name:18s} clean {100 * r.clean:6.2f}%  worst case {100 * r.worst_case:6.2f}% "
              f"± {100 * r.se:.2f} ({r.n_images} images)", flush=True)
        write_report(args.out, "r2s_compare", {**base, "command": "eval r2s --protocols all",
                                               "compare": rep.to_dict(), "complete": False},
                     rep.to_frame(), device=str(device))

    reuse = []
    for path in args.reuse or []:
        import json

        from rst.evaluation.compare import CompareReport
        reuse.append(CompareReport.from_dict(json.loads(Path(path).read_text())["compare"]))
    rows = _str_list(args.rows) or ["r2s", "members", "dense"]
    try:
        report = compare_like_with_like(cs, x, y, eps=attack.eps, dense=dense, r2s_images=r2s_images,
                                        single_images=single_images, members=members, cfg=cfg, device=device,
                                        progress=bar, on_row=write, rows=rows, reuse=reuse)
    finally:
        bar.close()
    print(format_report(report))
    paths = write_report(args.out, "r2s_compare", {**base, "command": "eval r2s --protocols all",
                                                   "compare": report.to_dict(), "complete": True},
                         report.to_frame(), device=str(device))
    _print_written(paths)
    return 0


def cmd_r2s(args) -> int:
    """R2S under the paper's protocol and adaptive attacks, with sanity checks."""
    from rst.evaluation.r2s import PROTOCOLS, R2S, evaluate_r2s
    from rst.evaluation.reports import r2s_figure, write_report
    if _str_list(args.protocols) == ["all"]:
        return cmd_r2s_all(args)
    cs, x, y, device, attack = _setup(args)
    protocols = _str_list(args.protocols) or list(PROTOCOLS)       # known ones: r2s_protocols_or_all
    r2s = R2S(cs, members=_int_list(args.members), switch=args.switch, seed=args.seed, device=device)
    if "autoattack_rand" in protocols and device.type == "cpu" and len(x) > 16:
        print(f"note: autoattack_rand runs APGD-CE/DLR with EOT=20 (4000 gradient steps per batch) on "
              f"{len(x)} images on the CPU, which is slow; leave it out with --protocols to skip it", flush=True)
    bar = _Bar("R2S evaluation (batches)", args.quiet)
    try:
        report = evaluate_r2s(r2s, x, y, eps=attack.eps, steps=attack.steps, alpha=attack.alpha,
                              eot_samples=args.eot_samples, protocols=protocols, batch_size=args.batch_size,
                              seed=args.seed, progress=bar)
    finally:
        bar.close()
    if args.sanity:
        from rst.evaluation.sanity import sanity_checks
        n = min(len(x), args.sanity_images)
        report.sanity.extend(sanity_checks(r2s, x[:n], y[:n], eps=attack.eps, steps=(5, attack.steps),
                                           square_queries=args.square_queries, seed=args.seed,
                                           batch_size=args.batch_size))
    frame = report.to_frame()
    cols = ["protocol", "adaptive", "expected_acc", "worst_member_acc"]
    print(f"R2S over {r2s.K} members {r2s.names} (switch={r2s.switch}); eps={attack.eps:.4g}, "
          f"{attack.steps} steps; {len(x)} test images")
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("the 'paper' row is the non-adaptive transfer protocol; 'worst_case_adaptive' is the honest number")
    _print_checks(report.sanity)
    payload = {**_base_payload(args, cs, x, device, attack), "r2s": report.to_dict(),
               "members": r2s.members, "switch": r2s.switch, "members_memory_bytes": r2s.members_memory_bytes()}
    paths = write_report(args.out, "r2s", payload, frame, r2s_figure(report), device=str(device))
    _print_written(paths)
    return 0


def cmd_autoattack(args) -> int:
    """AutoAttack on each selected ticket (or on their R2S with --r2s)."""
    import pandas as pd

    from rst.evaluation.autoattack import autoattack_accuracy
    from rst.evaluation.reports import write_report
    cs, x, y, device, attack = _setup(args)
    indices = _int_list(args.tickets) or list(range(len(cs)))
    attacks = _str_list(args.attacks)
    version = "custom" if attacks else args.version
    rows, logs = [], {}
    targets = []
    if args.r2s:
        from rst.evaluation.r2s import R2S
        targets.append(("r2s", float("nan"), R2S(cs, members=indices, switch=args.switch, seed=args.seed,
                                                 device=device)))
    else:
        targets = [(cs.tickets[i].name or f"ticket{i}", cs.tickets[i].keep_ratio, i) for i in indices]
    for name, kr, target in targets:
        model = target if args.r2s else cs.model(target, device=device)
        res = autoattack_accuracy(model, x, y, eps=attack.eps, version=version, batch_size=args.batch_size,
                                  seed=args.seed, attacks=attacks)
        logs[name] = res.pop("log")
        rows.append({"name": name, "keep_ratio": kr, **{k: v for k, v in res.items() if k != "attacks"},
                     "attacks": ",".join(res["attacks"])})
        print(f"{name:14s} clean {res['clean']:.4f}  AutoAttack robust {res['robust']:.4f}  "
              f"({version}: {', '.join(res['attacks'])}; eps={attack.eps:.4g}; {len(x)} images)", flush=True)
        warn = [line for line in logs[name].splitlines() if line.startswith("WARNING")]
        for line in warn:
            print(f"  autoattack {line}")
    frame = pd.DataFrame(rows)
    payload = {**_base_payload(args, cs, x, device, attack), "rows": rows, "version": version, "log": logs}
    fig = None
    if not args.r2s and len(rows) > 0:
        from rst.evaluation.reports import curve_figure
        fig = curve_figure([{"keep_ratio": r["keep_ratio"], "clean": r["clean"], "robust": r["robust"],
                             "attack": f"AutoAttack {version}, eps={attack.eps:.4g}"} for r in rows])
    paths = write_report(args.out, "autoattack", payload, frame, fig, device=str(device))
    _print_written(paths)
    return 0


# --------------------------------------------------------------------------------------------
# eval accuracy: every ticket's clean and robust accuracy, offline by default
# --------------------------------------------------------------------------------------------

DEFAULT_IMAGES = 1000          # the shipped subset's size: the same images as the test split's first 1000
SUBSET_ENV = "RST_TEST_SUBSET"


def default_subset_path() -> Path:
    """``$RST_TEST_SUBSET``, else the repository's ``assets/fashion_mnist_test_subset.safetensors``."""
    env = os.environ.get(SUBSET_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "assets" / "fashion_mnist_test_subset.safetensors"


def evaluation_images(cs, n: int | None, subset: str | os.PathLike | None = None, data_dir=None):
    """``(x, y, description)``: the first ``n`` test images of the set's data set (``None``: all of them).

    From the subset file (``subset``, else :func:`default_subset_path`) when it is of that data set and
    holds ``n`` images — a subset written by ``zoo build --subset`` holds the test split's first images,
    so the numbers are the same and no data set is needed — else from the test split
    (:func:`rst.data.datasets.test_split`, which raises ``DataUnavailableError`` saying why)."""
    from rst.data.datasets import DataUnavailableError, load_subset, test_split
    dataset = cs.spec.dataset
    path = Path(subset) if subset else default_subset_path()
    why = ""
    if n is not None and dataset != "synthetic":
        if os.path.lexists(path):             # a FIFO, device or /proc file is refused, never read
            from rst.network.mask_checks import regular_file_stat
            regular_file_stat(path, 2**40)
        if not path.is_file():
            why = f"no test subset at {path}"
        else:
            try:
                xs, ys, meta = load_subset(path)
            except ValueError as e:
                why = str(e)
            else:
                if meta.get("dataset") != dataset:
                    why = f"the test subset {path} is of {meta.get('dataset')}, not {dataset}"
                elif len(ys) < n:
                    why = f"the test subset {path} has {len(ys)} images, fewer than {n}"
                else:
                    return xs[:n], ys[:n], f"the first {n} test images, from the shipped subset {path.name}"
    try:
        x, y = test_split(dataset, cs.spec.seed, data_dir, n)
    except DataUnavailableError as e:
        raise DataUnavailableError(f"{why + '; ' if why else ''}{e}".strip()) from None
    where = "seeded synthetic test draw" if dataset == "synthetic" else f"{dataset} test split on disk"
    return x, y, f"{'all' if n is None else 'the first'} {len(y)} test images of the {where}"


def _write_rows(path: Path, payload: dict) -> None:
    """Atomically (a killed run leaves the previous complete file, never half a JSON)."""
    import json

    from rst.runtime.atomic import atomic_write
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(payload, indent=2, default=str))


def cmd_accuracy(args) -> int:
    """Clean and robust accuracy of every ticket; each ticket's row is written as soon as it is done."""
    from rst.evaluation.attacks import AttackConfig
    from rst.data.datasets import DataUnavailableError
    from rst.runtime.device import resolve_device
    from rst.evaluation.metrics import accuracy, adversarial_examples
    from rst.network.masks import MaskFileError, load_tickets

    try:
        cs = load_tickets(args.file)
    except (MaskFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        x, y, where = evaluation_images(cs, args.images, args.subset, args.data_dir)
    except DataUnavailableError as e:
        print(f"error: no test images: {e}", file=sys.stderr)
        return 2
    eps = args.eps if args.eps is not None else default_eps(cs)
    attack = AttackConfig(args.attack, eps=eps, alpha=args.alpha if args.alpha is not None else eps / 4,
                          steps=args.steps)
    device = resolve_device(args.device)
    indices = _int_list(args.tickets) or list(range(len(cs)))
    out = Path(args.out)
    if out.is_dir():                              # refused before any attack runs, not after the first ticket
        from rst.runtime.atomic import OutputError
        raise OutputError(21, f"cannot write {out}: it is a folder; give a file name (e.g. {out / 'accuracy.json'})")
    chosen = "the default" if args.images == DEFAULT_IMAGES else "chosen with"
    print(f"{len(indices)} ticket(s) of {args.file} on {where} ({chosen} --images {args.images or 'all'}; "
          f"--images N or 'all' to change); {attack.describe()}; device {device}; each ticket's row is written "
          f"to {out} when it finishes", flush=True)
    payload = {"command": "eval accuracy", "file": str(args.file), "network": cs.spec.to_dict(),
               "weight_checksum": cs.weight_checksum, "data": where, "n_images": len(y),
               "attack": attack.to_dict(), "attack_description": attack.describe(), "seed": args.seed,
               "device": str(device), "complete": False, "rows": []}
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(indices) * len(y), unit="img", desc="attacking", dynamic_ncols=True)
    try:
        for k, i in enumerate(indices):
            t = cs.tickets[i]
            model = cs.model(i, device=device)
            if bar is not None:
                bar.set_postfix_str(f"ticket {k + 1}/{len(indices)} {t.name}")
            done0 = k * len(y)

            def step(done, total, _d=done0):
                if bar is not None:
                    bar.n = _d + done
                    bar.refresh()
            clean = accuracy(model, x, y, args.batch_size)
            if attack.name == "none":
                robust = clean
                step(len(y), len(y))
            else:
                x_adv = adversarial_examples(model, x, y, attack, args.batch_size, args.seed, progress=step,
                                             precision=args.precision)
                robust = accuracy(model, x_adv, y, args.batch_size)
            payload["rows"].append({"ticket": t.name, "index": i, "keep_ratio": t.keep_ratio, "clean": clean,
                                    "robust": robust, "attack": attack.describe(), "images": len(y),
                                    "attack_precision": args.precision})
            _write_rows(out, payload)
            line = (f"{t.name or i:12} keep {t.keep_ratio:<6g} clean {clean:.4f}  robust {robust:.4f}  "
                    f"({attack.describe()}, {len(y)} images)")
            (bar.write if bar is not None else print)(line)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"\ninterrupted: {len(payload['rows'])} of {len(indices)} tickets done, kept in {out}", file=sys.stderr)
        return 130
    if bar is not None:
        bar.close()
    payload["complete"] = True
    _write_rows(out, payload)
    print(f"written: {out}")
    return 0


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("file", help="mask file (.rst.safetensors) with one or more tickets")
    s.add_argument("--eps", type=radius, default=None,
                   help="L-inf radius in [0, 1] pixel units (default: the tickets' search eps, else 8/255 for "
                        "CIFAR/SVHN, 0.1 otherwise)")
    s.add_argument("--alpha", type=radius, default=None, help="PGD step size (default eps/4)")
    s.add_argument("--steps", type=count, default=20, help="PGD steps (default 20)")
    s.add_argument("--images", type=images, default=None, help="first N test images (default: all)")
    s.add_argument("--batch-size", dest="batch_size", type=count, default=256)
    s.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, ...")
    s.add_argument("--data-dir", dest="data_dir", help="data folder (else $RST_DATA_DIR, then defaults)")
    s.add_argument("--out", default="runs/eval", help="output folder for NAME.json/.csv/.png (default runs/eval)")
    s.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts and of R2S draws")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def add_eval_commands(eval_subparsers) -> None:
    """Register ``accuracy``, ``curve``, ``transfer``, ``r2s`` and ``autoattack`` on the ``eval`` subparser group."""
    s = eval_subparsers.add_parser("accuracy", help="clean and robust test accuracy of every ticket in a file")
    s.add_argument("file", help="mask file (.rst.safetensors) with one or more tickets")
    s.add_argument("--attack", default="pgd", choices=("fgsm", "fgsm_rs", "pgd", "cw", "none"))
    s.add_argument("--eps", type=radius, default=None,
                   help="L-inf radius in [0, 1] pixel units (default: the tickets' search eps, else 8/255 for "
                        "CIFAR/SVHN, 0.1 otherwise)")
    s.add_argument("--alpha", type=radius, default=None, help="step size (default eps/4)")
    s.add_argument("--steps", type=count, default=20, help="attack steps (default 20)")
    s.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="the attack's arithmetic (default fp32; bf16/auto: autocast where native, rst.runtime.speed)")
    s.add_argument("--images", type=images, default=DEFAULT_IMAGES,
                   help=f"the first N test images (default {DEFAULT_IMAGES}: the shipped test subset, offline); "
                        "'all' for the whole test split (needs the data set)")
    s.add_argument("--subset", help=f"test subset file (default ${SUBSET_ENV}, else assets/fashion_mnist_test_subset"
                                    ".safetensors); used when it is of the tickets' data set and has N images")
    s.add_argument("--tickets", help="ticket indices, e.g. 0,2 (default: all)")
    s.add_argument("--batch-size", dest="batch_size", type=count, default=250)
    s.add_argument("--seed", type=int, default=0, help="seed of the attack's random start")
    s.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, ...")
    s.add_argument("--data-dir", dest="data_dir", help="data folder (else $RST_DATA_DIR, then defaults)")
    s.add_argument("--out", default="runs/eval/accuracy.json",
                   help="JSON file, rewritten after every ticket (default runs/eval/accuracy.json)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_accuracy)

    s = eval_subparsers.add_parser("curve", help="clean and robust accuracy of every ticket against keep ratio")
    _common(s)
    s.set_defaults(func=cmd_curve)

    s = eval_subparsers.add_parser("transfer", help="transfer matrix between the tickets (K source attacks)")
    _common(s)
    s.add_argument("--early-stop", dest="early_stop", action="store_true",
                   help="the reference code's source-side early stop (inflates transfer; labelled as such)")
    s.set_defaults(func=cmd_transfer)

    s = eval_subparsers.add_parser("r2s", help="R2S: paper's protocol and adaptive attacks, exact expectation")
    _common(s)
    s.add_argument("--members", help="ticket indices, e.g. 0,1,2 (default: all)")
    s.add_argument("--protocols", type=r2s_protocols_or_all,
                   help="comma-separated subset of paper,expectation,ensemble,eot,apgd_ce,apgd_dlr,"
                        "arc,autoattack_rand (default: each of them; autoattack_rand is slow on a "
                        "CPU), or 'all': the like-with-like table of R2S, every member and dense AT "
                        "(--images for R2S, default 500; --single-images, default 1000)")
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
    s.add_argument("--eot-samples", dest="eot_samples", type=count, default=10, help="EOT samples per step (eot)")
    s.add_argument("--switch", choices=("call", "batch", "example"), default="batch",
                   help="how R2S draws members (eot / autoattack_rand attack this switching)")
    s.add_argument("--sanity", action="store_true",
                   help="also run rst.evaluation.sanity's attack-based checks on R2S (eps sweep, steps, EOT, Square)")
    s.add_argument("--sanity-images", dest="sanity_images", type=count, default=128)
    s.add_argument("--square-queries", dest="square_queries", type=count, default=1000)
    s.set_defaults(func=cmd_r2s)

    s = eval_subparsers.add_parser("autoattack", help="AutoAttack (Croce & Hein 2020) on each ticket or on R2S")
    _common(s)
    s.add_argument("--version", choices=("standard", "plus", "rand"), default="standard")
    s.add_argument("--attacks", help="custom attack list, e.g. apgd-ce,square (implies version=custom)")
    s.add_argument("--tickets", help="ticket indices (default: all)")
    s.add_argument("--r2s", action="store_true", help="attack the R2S of the selected tickets (use --version rand)")
    s.add_argument("--switch", choices=("call", "batch", "example"), default="batch")
    s.set_defaults(func=cmd_autoattack)
