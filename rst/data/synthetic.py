"""The "synthetic" data set: a learnable, seeded image classification task generated without files.

Every seed samples the same task (fixed class templates), so train and test are draws with
different seeds; ``rst.data.datasets`` serves it as the data set named "synthetic".
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

SYNTHETIC_SIZES = {True: 2048, False: 512}   # train / test examples of the "synthetic" data set
SYNTHETIC_SHAPE = (1, 28, 28)                 # (C, H, W), Fashion-MNIST-shaped


def synthetic_dataset(n: int, shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable, not trivial, seeded image classification set: no files, any shape.

    Each class has a fixed smooth random template ``t_k`` in [0, 1] (drawn from a fixed generator,
    so every seed samples the *same task*: draw train and test with different seeds);
    an example is ``x = clip(a * t_y + noise, 0, 1)`` with contrast ``a ~ U(0.5, 1)`` and pixel
    noise ``N(0, 0.25^2)``; labels are balanced and shuffled. Easy for a conv net with a linear
    head (near 100 % on held-out draws within ~100 Adam steps; an adversarial ticket search gets
    clearly above chance robust accuracy), harder for one that pools spatially first (~20 % after
    300 steps): the classes differ in where their patterns lie, not in local texture.

    Args:
        n: number of examples.
        shape: ``(C, H, W)`` of one image.
        num_classes: number of classes (labels ``0 .. num_classes - 1``).
        seed: seed of the examples (``torch.Generator``); same seed, identical tensors.

    Returns:
        ``(x, y)``: x float32 ``(n, C, H, W)`` in [0, 1], y int64 ``(n,)``.

    Example:
        >>> x, y = synthetic_dataset(256, shape=(3, 32, 32), seed=1)    # CIFAR-shaped
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sides, got {tuple(shape)}")
    if n < 0 or num_classes < 1:
        raise ValueError(f"need n >= 0 and num_classes >= 1, got n={n}, num_classes={num_classes}")
    c, h, w = (int(s) for s in shape)
    templates = _synthetic_templates(num_classes, c, h, w)                    # (K, C, H, W)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    contrast = 0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
    noise = 0.25 * torch.randn(n, c, h, w, generator=g)
    return (contrast * templates[y] + noise).clamp_(0, 1), y


def _synthetic_templates(num_classes: int, c: int, h: int, w: int) -> torch.Tensor:
    """Class templates ``(K, C, H, W)`` in [0, 1]: a shared pattern plus a class pattern, both smooth."""
    g = torch.Generator(device="cpu").manual_seed(0x5EED)
    grid = (max(2, h // 7), max(2, w // 7))                    # coarse random grid, upsampled: smooth
    shared = torch.randn(1, c, *grid, generator=g)
    own = torch.randn(num_classes, c, *grid, generator=g)
    coarse = 0.6 * shared + 0.8 * own
    return torch.sigmoid(1.5 * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False))
