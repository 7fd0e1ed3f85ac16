"""A probability vector over K members (R2S's switch probabilities): the one check, shared by the
mask file reader and :class:`rst.evaluation.r2s.R2S`."""
from __future__ import annotations

import math

import torch

TOLERANCE = 1e-4            # |sum - 1| accepted in a file or an argument


def check_probabilities(p, K: int, what: str = "switch probabilities") -> list[float]:
    """``p`` as K floats that are finite, >= 0 and sum to 1 (within :data:`TOLERANCE`), else ValueError."""
    if isinstance(p, torch.Tensor):
        p = p.detach().flatten().tolist()
    if not isinstance(p, (list, tuple)):
        raise ValueError(f"{what} must be a list of {K} numbers")
    if len(p) != K:
        raise ValueError(f"{what} must have one value per member ({K}), got {len(p)}")
    if any(type(v) not in (int, float) for v in p):
        raise ValueError(f"{what} must be a list of {K} numbers")
    if not all(math.isfinite(v) for v in p) or any(v < 0 for v in p):
        raise ValueError(f"{what} must be finite and non-negative, got {[round(v, 6) for v in p][:8]}")
    if abs(sum(p) - 1.0) > TOLERANCE:
        raise ValueError(f"{what} must sum to 1 (within {TOLERANCE:g}), got {sum(p):.6g}")
    return [float(v) for v in p]
