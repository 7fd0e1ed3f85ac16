"""The L∞ and L2 threat models in [0, 1] pixel space: random start, ascent step, projection.

Each :class:`_Norm` of :data:`NORMS` works per example on a batch ``x`` (B, ...): ``start`` draws a
uniform point of the eps-ball (through ``generator``; None uses torch's global RNG), ``step`` turns
a gradient into an ascent direction, ``project`` brings ``x_adv`` back into the ball and [0, 1].

    >>> threat = NORMS["l2"]
    >>> x_adv = threat.project(x + alpha * threat.step(grad), x, eps)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to broadcast against ``x`` (B, ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def _linf_start(x, eps, generator):
    """Uniform noise in the L∞ eps-ball, shaped like ``x``."""
    return torch.empty_like(x).uniform_(-eps, eps, generator=generator)


def _linf_step(grad):
    """The L∞ ascent direction: the gradient's sign."""
    return grad.sign()


def _linf_project(x_adv, x, eps):
    """Back into the L∞ eps-ball around ``x``, then into [0, 1]."""
    # torchattacks' order: clamp the perturbation, then the image.
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1)


def _l2_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, (B,)."""
    return v.flatten(1).norm(p=2, dim=1)                                             # (B,)


def _l2_start(x, eps, generator):
    """A uniform point of the L2 eps-ball per example, shaped like ``x``."""
    # Uniform in the L2 ball: uniform direction, radius eps * u^(1/d).
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / per_example(_l2_norm(direction).clamp_min(1e-12), x)
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / x[0].numel())
    return direction * per_example(radius, x)


def _l2_step(grad):
    """The L2 ascent direction: the gradient normalised per example."""
    return grad / per_example(_l2_norm(grad).clamp_min(1e-12), grad)


def _l2_project(x_adv, x, eps):
    """Back into the L2 eps-ball around ``x`` (radial shrink), then into [0, 1]."""
    delta = x_adv - x
    norm = _l2_norm(delta)
    factor = torch.where(norm > eps, eps / norm.clamp_min(1e-12), torch.ones_like(norm))
    # Clamping to [0, 1] after the projection only shrinks |delta| coordinate-wise.
    return torch.clamp(x + delta * per_example(factor, x), min=0, max=1)


@dataclass(frozen=True)
class _Norm:
    """A threat model: its label ("Linf", "L2") and its start, step and projection."""
    label: str
    start: Callable[[torch.Tensor, float, "torch.Generator | None"], torch.Tensor]
    step: Callable[[torch.Tensor], torch.Tensor]
    project: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


NORMS: dict[str, _Norm] = {
    "linf": _Norm("Linf", _linf_start, _linf_step, _linf_project),
    "l2": _Norm("L2", _l2_start, _l2_step, _l2_project),
}


def check_norm(norm: str) -> None:
    """Refuse a ``norm`` that is not a key of :data:`NORMS` (ValueError)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")


__all__ = ["NORMS", "check_norm", "per_example"]
