"""Augmentation on the device: random crop with zero padding plus random horizontal flip, per example.

The random numbers are drawn where the batch lives, from a generator made there
(:func:`augment_generator`); which ``(pad, flip)`` each data set gets is
``rst.data.datasets.default_augment``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding plus random horizontal flip, per example, on x's device.

    Each image is padded by ``pad`` zero pixels on every side and cropped back to ``(H, W)`` at an
    offset drawn uniformly from ``0 .. 2 * pad`` per axis; with ``flip`` it is then mirrored
    left-right with probability 1/2. The random numbers are drawn on x's device from
    ``generator`` (which must live there: no draw on the host, no copy per batch) in this order:
    offsets ``(B, 2)`` as (row, column), then flips ``(B,)``. No Python loop over examples, no
    host-device synchronisation.

    Args:
        x: images ``(B, C, H, W)``, in [0, 1].
        pad: padding in pixels (0: no crop).
        flip: random horizontal flips.
        generator: a ``torch.Generator`` on x's device; None uses the global RNG of x's device.

    Returns:
        ``(B, C, H, W)`` on x's device, still in [0, 1] (``x`` itself when pad=0 and not flip).

    Raises:
        ValueError: ``pad < 0``, or a generator on another device type than x.

    Example:
        >>> xb = augment(xb, pad=4, flip=True, generator=torch.Generator(device=xb.device).manual_seed(0))
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, x on {x.device}: create it with "
                         f"torch.Generator(device=x.device)")
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=x.device)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)                       # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)                       # (B, W)
    if flip:
        mirror = torch.rand(b, generator=generator, device=x.device) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)                   # (B, H+2p, W+2p, C)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, rows[:, :, None], cols[:, None, :]]                       # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def augment_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """The generator :func:`augment` draws from: on ``device`` (crop offsets and flips are drawn
    where the batch lives), seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))
