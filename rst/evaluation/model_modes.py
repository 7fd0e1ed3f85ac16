"""The model's mode during an attack: ``train(train_mode)`` for the body, every submodule's mode restored.

Evaluation attacks run the model in ``eval()``; the paper's search runs its inner attack with
BatchNorm in train mode (batch statistics, running statistics updated by every attack step). The
previous mode of every submodule is restored afterwards, also on error. :func:`attack_mode` also
enters :func:`rst.network.masked.cached_masks`, so each layer's ``w * mask`` is computed once per attack.

    >>> with attack_mode(model, train_mode=True):
    ...     logits = model(x_adv)
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn

from rst.network.masked import cached_masks


@contextlib.contextmanager
def attack_mode(model: nn.Module, train_mode: bool = False) -> Iterator[nn.Module]:
    """Run the body with ``model.train(train_mode)`` and cached masks; restore every submodule's mode.

    Example:
        >>> with attack_mode(model, train_mode=True):   # BN batch statistics, running stats updated
        ...     logits = model(x)
    """
    with model_mode(model, train_mode), cached_masks(model):
        yield model


@contextlib.contextmanager
def model_mode(model: nn.Module, train_mode: bool = False) -> Iterator[nn.Module]:
    """Run the body with ``model.train(train_mode)``; restore every submodule's own mode afterwards."""
    modes = [m.training for m in model.modules()]
    model.train(train_mode)
    try:
        yield model
    finally:
        for module, was_training in zip(model.modules(), modes):
            module.training = was_training


__all__ = ["attack_mode", "model_mode"]
