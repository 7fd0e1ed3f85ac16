"""What the eval report commands (``curve``, ``transfer``, ``r2s``, ``autoattack``) share on the way in: their
common options, the default radius, and the candidate set, test images, device and PGD attack they set up."""
from __future__ import annotations

import argparse

from .eval_images import evaluation_images
from .input import count, images, radius

_DATASET_EPS = {"cifar10": 8 / 255, "cifar100": 8 / 255, "svhn": 8 / 255}   # else 0.1 (Fashion-MNIST, synthetic)


def add_common_eval_args(s: argparse.ArgumentParser) -> None:
    """The options every eval report command takes: file, attack radius/steps, images, device, output, seed."""
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


def default_eps(cs) -> float:
    """The eps the tickets were adversarially searched with (their search config), else the data set's
    usual radius (8/255 for CIFAR / SVHN, 0.1 for Fashion-MNIST and synthetic)."""
    for t in cs.tickets:
        cfg = t.search_config or {}
        if cfg.get("eps") is not None and cfg.get("inner_attack") not in ("none", None):
            return float(cfg["eps"])
    return _DATASET_EPS.get(cs.spec.dataset, 0.1)


def setup_evaluation(args):
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
