"""Per-image results and their uncertainty: the 0/1 strings reports store, the binomial standard
error of an accuracy, and the paired difference of two models on the same images.

The lowest evaluation module (no rst import): every evaluation that keeps per-image results
(AutoAttack, the like-with-like suite, the zoo's reports, the benchmarks) shares these four.
"""
from __future__ import annotations

import math

import torch


def standard_error(p: float, n: int) -> float:
    """``sqrt(p (1 - p) / n)``: the binomial standard error of an accuracy ``p`` on ``n`` images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else float("nan")


def encode_per_image(correct) -> str:
    """Per-image 0/1 results as one compact string ("1": correct/survived), the form reports store."""
    return "".join("1" if v else "0" for v in (correct.tolist() if hasattr(correct, "tolist") else correct))


def decode_per_image(bits: str) -> torch.Tensor:
    """The inverse of :func:`encode_per_image`: a float64 tensor of 0/1, ready for :func:`paired_difference`."""
    return torch.tensor([c == "1" for c in bits], dtype=torch.float64)


def paired_difference(a: torch.Tensor, b: torch.Tensor, z: float = 1.96) -> dict:
    """Paired difference of per-image scores ``a - b`` (same images): mean, SE, ``z``-interval, significance."""
    a, b = a.double().flatten(), b.double().flatten()
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"need two equal-length score vectors of >= 2 images, got {tuple(a.shape)} and {tuple(b.shape)}")
    d = a - b
    n = d.numel()
    mean = float(d.mean())
    se = float(d.std(unbiased=True)) / math.sqrt(n)
    lo, hi = mean - z * se, mean + z * se
    return {"difference": mean, "se": se, "ci_low": lo, "ci_high": hi, "z": z, "n_images": n,
            "significant": bool(lo > 0 or hi < 0),
            "n_only_first": int(((a > b)).sum()), "n_only_second": int((b > a).sum())}
