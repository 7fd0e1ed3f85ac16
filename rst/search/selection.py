"""Validation and model selection of a fit: never the test set (spec §3).

:func:`validate` measures clean and PGD accuracy on the held-out validation split (per member for a
``rst.search.batched.TicketBatch``; shared over ranks under ``torchrun``). A selection policy keeps the
state to end with:

* :class:`BestValidation` (``selection="val"``): the epoch with the best validation robust accuracy;
* :class:`LastEpoch` (``selection="last"``): the last epoch;
* :class:`PerMemberBest`: for a TicketBatch with ``selection="val"``, each member its own best epoch
  (the batch keeps those states in its buffers: :meth:`TicketBatch.select` / ``load_best``).

    >>> policy = selection_for(cfg, model)
    >>> policy.observe(epoch, record, model)   # after each epoch's validation
    >>> policy.restore(model)                  # at the end: the chosen state
"""
from __future__ import annotations

import torch
import torch.nn as nn

from . import distributed
from rst.evaluation.attacks import AttackConfig
from rst.evaluation.metrics import accuracy, robust_accuracy


def validate(model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, attack: AttackConfig, seed: int) -> dict:
    """``{"val_clean", "val_robust"}`` (and ``"members"`` for a TicketBatch); {} without images.

    Eval mode, fp32. A plain network under ``torchrun``: every rank evaluates
    ``x_val[rank::world_size]`` and all get the same weighted mean.
    """
    if not len(x_val):
        return {}
    if getattr(model, "n_members", 1) > 1:
        clean = model.member_accuracies(x_val, y_val)
        robust = model.member_accuracies(x_val, y_val, attack, seed=seed)
        return {"val_clean": sum(clean) / len(clean), "val_robust": sum(robust) / len(robust),
                "members": [{"val_clean": c, "val_robust": r} for c, r in zip(clean, robust)]}
    return {"val_clean": distributed.sharded_mean(lambda xs, ys: accuracy(model, xs, ys), x_val, y_val),
            "val_robust": distributed.sharded_mean(
                lambda xs, ys: robust_accuracy(model, xs, ys, attack, seed=seed), x_val, y_val)}


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class LastEpoch:
    """Keep the last epoch's state."""

    def __init__(self):
        self.best = {"epoch": -1, "val_robust": -1.0, "state": None}

    @property
    def epoch(self) -> int:
        return self.best["epoch"]

    def improves(self, record: dict) -> bool:
        return True

    def observe(self, epoch: int, record: dict, model: nn.Module) -> None:
        if self.improves(record):
            self.best = {"epoch": epoch, "val_robust": record.get("val_robust", float("nan")), "state": _state(model)}

    def restore(self, model: nn.Module) -> bool:
        """Put the chosen state back into ``model``; False if there was none (no epoch ran)."""
        if self.best["state"] is None:
            return False
        model.load_state_dict(self.best["state"])
        return True

    def state_dict(self) -> dict:
        return self.best

    def load_state_dict(self, best: dict) -> None:
        self.best = best


class BestValidation(LastEpoch):
    """Keep the state of the epoch with the best validation robust accuracy."""

    def improves(self, record: dict) -> bool:
        return record.get("val_robust", -1.0) > self.best["val_robust"]


class PerMemberBest(LastEpoch):
    """A TicketBatch: every member its own best validation epoch (kept in the batch's buffers)."""

    def observe(self, epoch: int, record: dict, model: nn.Module) -> None:
        if "members" in record and "val_robust" in record["members"][0]:
            model.select(epoch, [m["val_robust"] for m in record["members"]])
        super().observe(epoch, record, model)          # the batch's state carries the per-member bests

    def restore(self, model: nn.Module) -> bool:
        if not super().restore(model):
            return False
        model.load_best()
        return True


def selection_for(cfg, model: nn.Module) -> LastEpoch:
    """The policy ``cfg.selection`` names, per member for a TicketBatch."""
    if cfg.selection == "last":
        return LastEpoch()
    return PerMemberBest() if getattr(model, "n_members", 1) > 1 else BestValidation()


__all__ = ["BestValidation", "LastEpoch", "PerMemberBest", "selection_for", "validate"]
