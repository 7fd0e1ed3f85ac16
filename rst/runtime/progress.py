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


def epoch_lines(label: str) -> Callable[[dict], None]:
    """A search / training ``progress(event)`` that prints one line per finished epoch, prefixed
    with ``label`` and the minutes since the first event: what a job in a worker process reports
    (rst.runtime.workers), where one bar per process would interleave."""
    import time
    start = None

    def report(event: dict) -> None:
        nonlocal start
        start = start if start is not None else time.monotonic()
        if event.get("event") != "epoch":
            return
        msg = f"[{label}] epoch {event['epoch'] + 1}/{event['epochs']}: adv loss {event['train_adv_loss']:.3f}"
        if "val_robust" in event:
            msg += f", val clean {event['val_clean']:.3f}, val robust {event['val_robust']:.3f}"
        print(f"{msg} ({(time.monotonic() - start) / 60:.1f} min)", flush=True)
    return report
