"""The checks of an attack's inputs: shapes, eps, the generator's device and x in [0, 1] pixel space.

The model normalises its inputs itself, so an attack refuses ``x`` outside [0, 1]. That range
check reads x's minimum and maximum (one device synchronisation): a caller that attacks many
batches of one source checks the source once (:func:`check_pixel_range`) and passes
``check_range=False`` for its batches.

    >>> check_pixel_range(x_test)                                 # once
    >>> x_adv = pgd(model, x_test[:512], y_test[:512], 8/255, 2/255, 20, check_range=False)
"""
from __future__ import annotations

import math

import torch


def check_pixel_range(x: torch.Tensor) -> None:
    """Refuse ``x`` outside [0, 1] pixel space (ValueError): the model normalises its inputs itself.

    It reads x's minimum and maximum, so on a GPU it waits for the device (one synchronisation).
    Every attack calls it unless told ``check_range=False``: a caller that attacks many batches of
    one source (a data set, an evaluation's images) checks that source once and passes
    ``check_range=False`` for its batches (crops with zero padding and flips stay in range).

    Example:
        >>> check_pixel_range(x_test)                                 # once
        >>> x_adv = pgd(model, x_test[:512], y_test[:512], 8/255, 2/255, 20, check_range=False)
    """
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        lo, hi = torch.stack([lo, hi]).tolist()                   # one read of the device, not two
        if lo < 0 or hi > 1:
            raise ValueError("x must be in [0, 1] pixel space (the model normalises its inputs itself); "
                             f"got values in [{lo:.3g}, {hi:.3g}]")


def check_attack_inputs(x: torch.Tensor, y: torch.Tensor, eps: float, generator: torch.Generator | None,
                        check_range: bool = True) -> None:
    """Shapes, eps and the generator's device (no device synchronisation); x's range when ``check_range``."""
    if x.dim() < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"expected x of shape (B, ...) and y of shape (B,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if check_range:
        check_pixel_range(x)
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, x on {x.device}: create it with "
                         f"torch.Generator(device=x.device)")


__all__ = ["check_attack_inputs", "check_pixel_range"]
