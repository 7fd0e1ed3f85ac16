"""The options of a run (``search``, ``train``, ``finetune``): their flags, and the
:class:`rst.search.loop.SearchConfig` they give (``--preset`` with ``--set key=value`` and the named flags)."""
from __future__ import annotations

import ast
import contextlib

from .input import UsageError


def add_run_args(s, preset_default: str | None = "fmnist") -> None:
    """The flags every run command takes: the recipe, its overrides, the output folder, device and data."""
    s.add_argument("--preset", default=preset_default, help="named recipe (python -m rst presets)")
    s.add_argument("--keep-ratio", dest="keep_ratio", type=float, help="fraction of weights kept per layer")
    s.add_argument("--epochs", type=int)
    s.add_argument("--seed", type=int, help="seed of the random network, split, shuffling and attacks")
    s.add_argument("--batch-size", dest="batch_size", type=int)
    s.add_argument("--train-subset", dest="train_subset", type=int, help="use only N training images")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any SearchConfig field")
    s.add_argument("--out", required=True, help="output folder (checkpoint, files, log.json)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (refused if its recipe differs)")
    s.add_argument("--allow-change", dest="allow_changes", action="append", default=[], metavar="FIELD",
                   help="with --resume: accept a checkpoint whose recorded FIELD differs (e.g. epochs); repeatable")
    s.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1, ...")
    s.add_argument("--data-dir", dest="data_dir", help="data folder (else $RST_DATA_DIR, then defaults)")
    s.add_argument("--test-images", dest="test_images", type=int, default=None,
                   help="evaluate on the first N test images afterwards (0: skip; default: all)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--deterministic", action="store_true",
                   help="PyTorch's deterministic algorithms (rst.runtime.device.deterministic): reproducible CUDA runs, "
                        "slower; refuses ops without a deterministic CUDA kernel (Conv-4's pooling backward)")


def parse_overrides(pairs: list[str]) -> dict:
    """``["epochs=5", "eps=0.1", "lr_milestones=(0.5,)"]`` → dict with Python literals."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass                                   # a string: inner_attack=pgd
        out[key.strip()] = tuple(value) if isinstance(value, list) else value   # lr_milestones=[0.5]
    return out


def _overrides(args) -> dict:
    """SearchConfig fields given on the command line: ``--set k=v`` and the named flags."""
    overrides = parse_overrides(args.set)
    for name in ("keep_ratio", "epochs", "seed", "train_subset", "batch_size"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return overrides


def config_from_args(args, base=None):
    """``--preset`` with the command line's overrides (or ``base`` with them when no preset is named)."""
    from rst.search.loop import preset
    with bad_configuration():
        if args.preset or base is None:
            return preset(args.preset or "fmnist", **_overrides(args))
        return base.replace(**_overrides(args))


@contextlib.contextmanager
def bad_configuration():
    """A preset, override or keep ratio the configuration refuses → :class:`UsageError` (one line, exit 2)."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as e:      # KeyError: an unknown preset (its str() is quoted)
        raise UsageError(f"bad configuration: {e.args[0] if e.args else e}") from None
