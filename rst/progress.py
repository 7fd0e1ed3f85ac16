"""Counting finished units of long work for a ``progress(done, total)`` callback (a bar, a page)."""
from __future__ import annotations

from typing import Callable


def ticker(progress: Callable[[int, int], None] | None, total: int) -> Callable[[], None]:
    """A callable that counts one finished unit per call and reports ``(done, total)`` (None: silent)."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
    return tick
