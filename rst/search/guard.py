"""Guards that watch a fit after each epoch's validation and may roll it back: catastrophic overfitting.

Single-step adversarial training (FGSM, FGSM-RS, sometimes N-FGSM) can *catastrophically overfit*
(Wong et al., ICLR 2020, arXiv:2001.03994; de Jorge et al., NeurIPS 2022, arXiv:2202.01181): within
an epoch or two the network learns to defeat the single-step attack while multi-step PGD robustness
collapses towards zero. The symptom the loop can see: validation PGD accuracy drops sharply while
training accuracy under the single-step attack *rises*.

:class:`CollapseGuard` watches exactly that after every epoch. On a collapse it

1. rolls the fit back to the state (network and optimiser) of the best validation epoch so far,
2. switches the inner attack to ``fallback`` (default PGD with the config's ``steps`` and ``alpha``),
3. notes what it did in the epoch's record (``record["guard"]``), and goes on.

The schedule is not rolled back (the epochs spent still count). A guard plugs in through
:data:`GUARDS` (``SearchConfig.guard`` names it) and needs no branch in the loop::

    guard.after_epoch(fit, record)       # fit: rst.search.loop.Fit (model, optimiser, inner attack)
"""
from __future__ import annotations

import copy
from typing import Callable

from .inner import build_inner_attack


class Guard:
    """Does nothing: the base and the "none" guard."""

    def after_epoch(self, fit, record: dict) -> None:
        """Look at ``record`` (the epoch's train and validation numbers); may change ``fit``."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def resumed(self, fit) -> None:
        """Called after a resume has loaded :meth:`state_dict` (re-apply what it had changed)."""


class CollapseGuard(Guard):
    """Catastrophic-overfitting guard (see the module docstring).

    Arguments:
        drop (float): a collapse is validation robust accuracy more than ``drop`` (absolute, as a
            fraction) below its best so far ... (Default: 0.15)
        fallback (str): ... while training accuracy under the inner attack rose since the previous
            epoch; the fit then goes on with the inner attack ``fallback``. (Default: "pgd")
    """

    def __init__(self, cfg, drop: float = 0.15, fallback: str = "pgd"):
        self.cfg, self.drop, self.fallback = cfg, drop, fallback
        self.best_val, self.prev_train = -1.0, None
        self.snapshot: dict | None = None      # {"model": ..., "optimizer": ...} at the best epoch
        self.switched = False

    def after_epoch(self, fit, record: dict) -> None:
        val, train = record.get("val_robust"), record["train_adv_acc"]
        if val is None or not record.get("complete", True):
            return
        rose = self.prev_train is not None and train > self.prev_train
        if self.snapshot is not None and val < self.best_val - self.drop and rose and not self.switched:
            fit.model.load_state_dict(self.snapshot["model"])
            fit.optimizer.load_state_dict(self.snapshot["optimizer"])
            fit.inner = build_inner_attack(self.cfg.replace(inner_attack=self.fallback))
            self.switched = True
            record["guard"] = (f"catastrophic overfitting at epoch {record['epoch'] + 1}: val robust "
                               f"{val:.3f} (best {self.best_val:.3f}) while train adv acc rose "
                               f"{self.prev_train:.3f} -> {train:.3f}; rolled back to the best epoch, "
                               f"inner attack now {fit.inner.describe()}")
            self.prev_train = None
            return
        if val > self.best_val:
            self.best_val = val
            self.snapshot = {"model": _copy(fit.model.state_dict()), "optimizer": _copy(fit.optimizer.state_dict())}
        self.prev_train = train

    def state_dict(self) -> dict:
        return {"best_val": self.best_val, "prev_train": self.prev_train, "snapshot": self.snapshot,
                "switched": self.switched}

    def load_state_dict(self, state: dict) -> None:
        self.best_val, self.prev_train = state["best_val"], state["prev_train"]
        self.snapshot, self.switched = state["snapshot"], state["switched"]

    def resumed(self, fit) -> None:
        """After a resume: a fit that had switched goes on with the fallback attack."""
        if self.switched:
            fit.inner = build_inner_attack(self.cfg.replace(inner_attack=self.fallback))


def _copy(state: dict) -> dict:
    return copy.deepcopy({k: v.detach().clone() if hasattr(v, "detach") else v for k, v in state.items()})


#: name -> factory(cfg) -> Guard (``SearchConfig.guard``)
GUARDS: dict[str, Callable[..., Guard]] = {
    "none": lambda cfg: Guard(),
    "collapse": lambda cfg: CollapseGuard(cfg, drop=cfg.guard_drop, fallback=cfg.guard_fallback),
}


def build_guard(cfg) -> Guard:
    if cfg.guard not in GUARDS:
        raise ValueError(f"unknown guard {cfg.guard!r}; known: {', '.join(GUARDS)}")
    return GUARDS[cfg.guard](cfg)


__all__ = ["GUARDS", "CollapseGuard", "Guard", "build_guard"]
