"""Bad command-line input, refused in one line: :class:`UsageError`, the argparse value types, the
comma-separated lists and :class:`OneLineParser`.

``rst.cli.commands.main`` prints a ``UsageError`` as ``error: ...`` on stderr and exits 2; ``OneLineParser`` does the
same for what argparse refuses (a mistyped flag, a value its ``type=`` refuses: ``--eps -1``, ``--steps 0``,
``--images -5``). Nothing has been written then.
"""
from __future__ import annotations

import argparse
import math


class UsageError(ValueError):
    """A command line the library refuses (a bad ``--set``, a bad list, a configuration out of range)."""


def count(text: str) -> int:
    """``type=`` for a whole number >= 1 (steps, a batch size, images)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {n}")
    return n


def _number(text: str, what: str, ok) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return v


def radius(text: str) -> float:
    """``type=`` for an attack radius or step in [0, 1] pixel units."""
    return _number(text, "a number in [0, 1] (pixel units)", lambda v: 0 <= v <= 1)


def positive(text: str) -> float:
    """``type=`` for a finite number > 0 (a width, a time budget in seconds)."""
    return _number(text, "a number > 0", lambda v: v > 0)


def fraction(text: str) -> float:
    """``type=`` for a keep ratio: a number in (0, 1]."""
    return _number(text, "a number in (0, 1]", lambda v: 0 < v <= 1)


def images(text: str) -> int | None:
    """``type=`` for ``--images``: the first N test images, or ``all`` / ``0`` for the whole test split."""
    if text.strip().lower() in ("all", "0"):
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or 'all', got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("the number of images must be positive")
    return n


def r2s_protocols(text: str) -> str:
    """``type=`` for known R2S protocols, comma-separated."""
    from rst.evaluation.r2s import PROTOCOLS
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in PROTOCOLS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown R2S protocols {unknown or text!r}; known: {', '.join(PROTOCOLS)}")
    return ",".join(names)


def r2s_protocols_or_all(text: str) -> str:
    """``type=`` for ``eval r2s --protocols``: known R2S protocols, or ``all`` (the like-with-like table)."""
    return "all" if text.strip() == "all" else r2s_protocols(text)



def int_list(text: str | None) -> list[int] | None:
    """``"0,2"`` → ``[0, 2]`` (``None`` or ``""``: ``None``); anything else a :class:`UsageError`."""
    if text is None or text == "":
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise UsageError(f"expected a comma-separated list of integers, got {text!r}") from None


def str_list(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]`` (empty or ``None``: ``None``)."""
    return None if not text else [t.strip() for t in text.split(",") if t.strip()]


def keep_ratio_list(text: str) -> tuple[float, ...]:
    """``--keep-ratios 0.05,0.1`` → ``(0.05, 0.1)``; anything else a :class:`UsageError`."""
    try:
        return tuple(float(r) for r in text.split(","))
    except ValueError:
        raise UsageError(f"--keep-ratios expects comma-separated numbers, got {text!r}") from None

class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose refusals are one line, ``error: PROG: MESSAGE (PROG --help)``, exit 2,
    instead of the whole usage block (subcommands' parsers are of this class too)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see: {self.prog} --help)\n")
