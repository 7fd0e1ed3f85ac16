"""An evaluation job of a zoo build: its label, the top-level function a worker runs with its
arguments, and the network it AutoAttacks (rst.runtime.workers runs the jobs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, eq=False)
class EvalJob:
    """One report's job, or one AutoAttack job of ``network`` (its name and keep ratio)."""
    label: str
    fn: Callable
    args: tuple
    network: tuple[str, float] | None = None


def _call(fn, args):
    """``fn(*args)``: a top-level function, so that a job and its arguments travel to a worker together."""
    return fn(*args)
