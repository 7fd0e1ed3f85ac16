"""A fit's checkpoint: written atomically after every complete epoch, resumed only into the same recipe.

``checkpoint.pt`` (torch.save of tensors and plain Python values, loaded with ``weights_only=True``)
holds the model, optimiser and scheduler states, the history, the selection's best state, the
guard's state, the epoch and the config. It is the run's own scratch file, not a file users
exchange (those are the mask files of :mod:`rst.network.masks`).

Resuming a checkpoint written by a different recipe would silently mix two runs ("seed 1, keep 0.1"
carrying the old run's validation score): :func:`load_checkpoint` refuses with the differing fields
named (:func:`check_same_recipe`), unless ``allow_changes`` lists them. Speed settings (``precision``, ``channels_last``,
``compile``) change numerics, not the recipe, and may differ.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import atomic_write

#: SearchConfig fields that may differ between a checkpoint and the run that resumes it.
SPEED_FIELDS = ("precision", "channels_last", "compile")


class ResumeMismatchError(ValueError):
    """The checkpoint was written by another recipe; the message names the differing fields."""


def checkpoint_in(workdir: str | os.PathLike | None) -> Path | None:
    """``workdir/checkpoint.pt`` (the folder created), or None without a workdir: where a fit checkpoints."""
    if workdir is None:
        return None
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return Path(workdir) / "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (unique temporary name, fsync, rename)."""
    atomic_write(path, lambda f: torch.save(state, f))


def config_differences(recorded: dict, wanted: dict, ignore=SPEED_FIELDS) -> dict[str, tuple]:
    """``{field: (in checkpoint, requested)}`` for every recipe field that differs."""
    keys = (set(recorded) | set(wanted)) - set(ignore)
    return {k: (recorded.get(k), wanted.get(k)) for k in sorted(keys) if recorded.get(k) != wanted.get(k)}


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """The checkpoint at ``path``, tensors on ``device`` (``weights_only``: no code is unpickled)."""
    return torch.load(path, map_location=device, weights_only=True)


def check_same_recipe(path: Path, recorded: dict, wanted: dict, allow_changes: tuple[str, ...] = ()) -> None:
    """Refuse (:class:`ResumeMismatchError`) to resume ``path`` if its ``recorded`` config differs from ``wanted``
    in a recipe field that ``allow_changes`` does not list."""
    diff = {k: v for k, v in config_differences(recorded, wanted).items() if k not in allow_changes}
    if diff:
        fields = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diff.items())
        raise ResumeMismatchError(f"cannot resume {path}: it was written by another recipe ({fields}); "
                                  "start a new run folder, or allow the change explicitly")


__all__ = ["ResumeMismatchError", "SPEED_FIELDS", "check_same_recipe", "checkpoint_in", "config_differences",
           "load_checkpoint", "save_checkpoint"]
