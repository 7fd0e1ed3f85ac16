"""The command line's tqdm progress bars: :class:`StepBar` over a search's or a training's optimiser steps
(a ``progress(event)`` callback), :class:`CountBar` over ``progress(done, total)`` callbacks."""
from __future__ import annotations


class StepBar:
    """tqdm bar over optimiser steps, with the epoch's validation numbers in the postfix."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet, self.bar = label, quiet, None

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        from tqdm.auto import tqdm
        if event["event"] == "step":
            if self.bar is None:
                self.bar = tqdm(total=event["steps"] * event["epochs"], desc=self.label, unit="step",
                                dynamic_ncols=True)
            self.bar.n = event["epoch"] * event["steps"] + event["step"]
            if "loss" in event:                   # reported every few steps (each report is a device sync)
                self.bar.set_postfix(epoch=event["epoch"] + 1, loss=f"{event['loss']:.3f}", refresh=False)
            self.bar.refresh()
        elif event["event"] == "epoch" and self.bar is not None:
            msg = f"epoch {event['epoch'] + 1}/{event['epochs']}: adv loss {event['train_adv_loss']:.3f}"
            if "val_robust" in event:
                msg += f", val clean {event['val_clean']:.3f}, val robust {event['val_robust']:.3f}"
            self.bar.write(msg)

    def close(self):
        """Close the bar (when one was opened)."""
        if self.bar is not None:
            self.bar.close()


class CountBar:
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
        """Close the bar (when one is open); the next callback opens a new one."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
