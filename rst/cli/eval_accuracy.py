"""``python -m rst eval accuracy FILE``: every ticket's clean and robust accuracy, offline by default (the
shipped test subset), each ticket's row written to the ``--out`` JSON file as soon as it is done."""
from __future__ import annotations

import sys
from pathlib import Path

from .eval_images import DEFAULT_IMAGES, SUBSET_ENV, evaluation_images
from .eval_setup import default_eps
from .input import count, images, int_list, radius
from .run_results import write_json


def add_accuracy_command(eval_subparsers) -> None:
    """Register ``accuracy`` on the ``eval`` subparser group."""
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


def cmd_accuracy(args) -> int:
    """Clean and robust accuracy of every ticket; each ticket's row is written as soon as it is done."""
    from rst.runtime.device import resolve_device
    inputs = _tickets_and_images(args)
    if inputs is None:
        return 2                                  # refused: the one-line error is printed
    cs, x, y, where = inputs
    attack = _attack_config(args, cs)
    device = resolve_device(args.device)
    indices = int_list(args.tickets) or list(range(len(cs)))
    out = _output_file(args.out)
    _print_plan(args, len(indices), where, attack, device, out)
    payload = _payload(args, cs, where, len(y), attack, device)
    bar = _image_bar(len(indices) * len(y), args.quiet)
    try:
        for k, i in enumerate(indices):
            model = cs.model(i, device=device)
            if bar is not None:
                bar.set_postfix_str(f"ticket {k + 1}/{len(indices)} {cs.tickets[i].name}")
            clean, robust = _clean_and_robust(model, x, y, attack, args, _offset_progress(bar, k * len(y)))
            row = _row(cs.tickets[i], i, clean, robust, attack, len(y), args.precision)
            payload["rows"].append(row)
            _write_rows(out, payload)
            (bar.write if bar is not None else print)(_row_line(row))
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


def _tickets_and_images(args):
    """``(cs, x, y, where)``: the tickets and their test images; ``None`` after a one-line error on stderr."""
    from rst.data.datasets import DataUnavailableError
    from rst.network.masks import MaskFileError, load_tickets
    try:
        cs = load_tickets(args.file)
    except (MaskFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    try:
        x, y, where = evaluation_images(cs, args.images, args.subset, args.data_dir)
    except DataUnavailableError as e:
        print(f"error: no test images: {e}", file=sys.stderr)
        return None
    return cs, x, y, where


def _attack_config(args, cs):
    """The ``--attack`` with ``--eps`` (default: the tickets' search eps), ``--alpha`` (eps/4), ``--steps``."""
    from rst.evaluation.attacks import AttackConfig
    eps = args.eps if args.eps is not None else default_eps(cs)
    return AttackConfig(args.attack, eps=eps, alpha=args.alpha if args.alpha is not None else eps / 4,
                        steps=args.steps)


def _output_file(out: str) -> Path:
    """``--out`` as a path; a folder is refused before any attack runs, not after the first ticket."""
    out = Path(out)
    if out.is_dir():
        from rst.runtime.atomic import OutputError
        raise OutputError(21, f"cannot write {out}: it is a folder; give a file name (e.g. {out / 'accuracy.json'})")
    return out


def _print_plan(args, n_tickets: int, where: str, attack, device, out: Path) -> None:
    """The first line: which tickets, which images (and how to change them), the attack, device and output."""
    chosen = "the default" if args.images == DEFAULT_IMAGES else "chosen with"
    print(f"{n_tickets} ticket(s) of {args.file} on {where} ({chosen} --images {args.images or 'all'}; "
          f"--images N or 'all' to change); {attack.describe()}; device {device}; each ticket's row is written "
          f"to {out} when it finishes", flush=True)


def _payload(args, cs, where: str, n_images: int, attack, device) -> dict:
    """The JSON record before any ticket is done (``complete`` False, no rows)."""
    return {"command": "eval accuracy", "file": str(args.file), "network": cs.spec.to_dict(),
            "weight_checksum": cs.weight_checksum, "data": where, "n_images": n_images,
            "attack": attack.to_dict(), "attack_description": attack.describe(), "seed": args.seed,
            "device": str(device), "complete": False, "rows": []}


def _image_bar(total: int, quiet: bool):
    """A tqdm bar over every (ticket, image) pair attacked; ``None`` with ``--quiet``."""
    if quiet:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="img", desc="attacking", dynamic_ncols=True)


def _offset_progress(bar, offset: int):
    """A ``progress(done, total)`` callback that moves ``bar`` to ``offset + done`` (no bar: does nothing)."""
    def step(done, total):
        if bar is not None:
            bar.n = offset + done
            bar.refresh()
    return step


def _clean_and_robust(model, x, y, attack, args, step) -> tuple[float, float]:
    """The model's clean accuracy and its accuracy on the attack's adversarial examples (``none``: clean)."""
    from rst.evaluation.metrics import accuracy, adversarial_examples
    clean = accuracy(model, x, y, args.batch_size)
    if attack.name == "none":
        step(len(y), len(y))
        return clean, clean
    x_adv = adversarial_examples(model, x, y, attack, args.batch_size, args.seed, progress=step,
                                 precision=args.precision)
    return clean, accuracy(model, x_adv, y, args.batch_size)


def _row(ticket, index: int, clean: float, robust: float, attack, n_images: int, precision: str) -> dict:
    """One ticket's record in the JSON file."""
    return {"ticket": ticket.name, "index": index, "keep_ratio": ticket.keep_ratio, "clean": clean,
            "robust": robust, "attack": attack.describe(), "images": n_images, "attack_precision": precision}


def _row_line(row: dict) -> str:
    """The line printed when a ticket is done."""
    return (f"{row['ticket'] or row['index']:12} keep {row['keep_ratio']:<6g} clean {row['clean']:.4f}  "
            f"robust {row['robust']:.4f}  ({row['attack']}, {row['images']} images)")


def _write_rows(path: Path, payload: dict) -> None:
    """Atomically (a killed run leaves the previous complete file, never half a JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, payload)
