"""The pixel convention of every data set in rst: float32 ``(N, C, H, W)`` in [0, 1], from uint8 images.

No normalisation here: the model's first layer normalises (``rst.network.models.DATASET_STATS``).
"""
from __future__ import annotations

import torch


def to_float_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return images.to(torch.float32).div_(255)
