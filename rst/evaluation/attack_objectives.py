"""What a white-box attack maximises: per-example losses on logits ("ce", "cw") or a user callable.

An objective maps ``(model, x_adv, y)`` to ``(per-example loss (B,), per-example "misclassified"
(B,) bool or None)``; the attacks of :mod:`rst.evaluation.pgd_family` ascend its loss and use
"misclassified" for the early stop and to compare restarts (None for a user callable).

    >>> objective = attack_objective("cw")
    >>> loss, misclassified = objective(model, x_adv, y)        # (B,), (B,) bool
"""
from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

# A user loss: (model, x_adv (B, ...), y (B,)) -> per-example loss to maximise, (B,).
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Loss = Union[str, LossFn]

# An objective returns (per-example loss (B,), per-example "misclassified" (B,) bool or None).
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Union[torch.Tensor, None]]]


def _ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per example, (B,)."""
    return F.cross_entropy(logits, y, reduction="none")


def _margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin on logits, ``max_{j != y} z_j - z_y`` per example, (B,).

    Positive exactly when the example is misclassified.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)                                   # (B,)
    is_true = F.one_hot(y, logits.shape[1]).bool()                                   # (B, K)
    z_other = logits.masked_fill(is_true, float("-inf")).amax(dim=1)                # (B,)
    return z_other - z_y


_LOGIT_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": _ce_loss,
    "cw": _margin_loss,
}


def _user_objective(loss: LossFn) -> Objective:
    """The objective of a loss callable: its checked per-example loss, "misclassified" undefined (None)."""
    def user_objective(model, x, y):
        value = loss(model, x, y)
        if not isinstance(value, torch.Tensor) or value.shape != (x.shape[0],):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"a loss callable must return a per-example loss of shape ({x.shape[0]},), "
                             f"got {shape}")
        return value, None
    return user_objective


def attack_objective(loss: Loss) -> Objective:
    """The objective of ``loss``: a name of :data:`_LOGIT_LOSSES` ("ce", "cw") or a loss callable."""
    if callable(loss):
        return _user_objective(loss)
    if loss not in _LOGIT_LOSSES:
        raise ValueError(f"loss must be one of {sorted(_LOGIT_LOSSES)} or a callable "
                         f"loss(model, x_adv, y) -> (B,), got {loss!r}")
    per_example = _LOGIT_LOSSES[loss]

    def logit_objective(model, x, y):
        logits = model(x)                                                            # (B, K)
        return per_example(logits, y), logits.argmax(dim=1) != y
    return logit_objective


__all__ = ["Loss", "LossFn", "Objective", "attack_objective"]
