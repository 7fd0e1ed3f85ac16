"""Masked layers: frozen random weights, one learnable score per mask element.

The whole algorithm of edge-popup (Ramanujan et al., CVPR 2020, arXiv:1911.13299) as used by
Fu et al. (NeurIPS 2021, arXiv:2110.14068) is the straight-through top-k below plus one
``forward`` that multiplies the frozen weight by the mask:

    mask  = top-k(|s|)            (per layer, k = keep_ratio * #scores)
    w_eff = w * mask              (broadcast over the granularity's groups)
    dL/ds = sign(s) * dL/dw_eff * w   (straight-through; sign(s) comes from autograd of |s|)

Dropping ``sign(s)`` (i.e. ranking |s| but passing the gradient to ``s`` as if it were |s|) is the
silent bug the spec warns about: the search then stays at chance. We never write that gradient by
hand; autograd differentiates ``scores.abs()``.

Granularity is one parameter of one implementation: the score tensor has the weight's shape with
the dimensions below the group size collapsed to 1, and the mask is broadcast back.

    granularity   conv weight (O, I, kh, kw) scores   linear weight (O, I) scores
    element       (O, I, kh, kw)                      (O, I)
    row           (O, I, kh, 1)                       (O, I)
    kernel        (O, I, 1, 1)                        (O, I)
    channel       (O, 1, 1, 1)                        (O, 1)
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

GRANULARITIES = ("element", "row", "kernel", "channel")
_KEPT_DIMS = {"element": 4, "row": 3, "kernel": 2, "channel": 1}


def score_shape(weight_shape: torch.Size | tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """Shape of the score (and mask) tensor of a weight of ``weight_shape`` at ``granularity``."""
    if granularity not in _KEPT_DIMS:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    keep = _KEPT_DIMS[granularity]
    return tuple(d if i < keep else 1 for i, d in enumerate(weight_shape))


def n_keep(n_scores: int, keep_ratio: float) -> int:
    """Number of score elements kept: ``round(keep_ratio * n)``, at least 1."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    return max(1, min(n_scores, int(round(keep_ratio * n_scores))))


class TopKMask(torch.autograd.Function):
    """Binary mask of the ``k`` largest entries of ``magnitude``; straight-through backward."""

    @staticmethod
    def forward(ctx, magnitude: torch.Tensor, k: int) -> torch.Tensor:
        flat = magnitude.flatten()
        mask = torch.zeros_like(flat)
        mask[torch.topk(flat, k, sorted=False).indices] = 1.0
        return mask.view_as(magnitude)

    @staticmethod
    def backward(ctx, grad_mask: torch.Tensor):
        return grad_mask, None


class MaskedMixin:
    """Shared state of :class:`MaskedConv2d` and :class:`MaskedLinear`.

    ``weight`` is frozen (``requires_grad=False``; fine-tuning turns it on). ``scores`` is the only
    tensor the search learns. A ticket loaded from a file sets ``fixed_mask`` (bool, score shape),
    which then takes precedence over the scores. ``dense=True`` uses every weight (the dense
    adversarial-training baseline).
    """

    weight: nn.Parameter
    scores: nn.Parameter

    def _init_masking(self, keep_ratio: float, granularity: str) -> None:
        self.granularity = granularity
        self.keep_ratio = float(keep_ratio)
        n_keep(1, self.keep_ratio)  # validates
        self.scores = nn.Parameter(torch.empty(score_shape(self.weight.shape, granularity)))
        self.weight.requires_grad_(False)
        self.register_buffer("fixed_mask", None, persistent=False)
        self.k_override: int | None = None   # set by global (network-wide) top-k
        self.dense = False
        self._cached_weight: torch.Tensor | None = None

    @property
    def n_keep(self) -> int:
        return self.k_override if self.k_override is not None else n_keep(self.scores.numel(), self.keep_ratio)

    def mask(self) -> torch.Tensor:
        """The current mask in score shape (float 0/1), differentiable w.r.t. ``scores``."""
        if self.fixed_mask is not None:
            return self.fixed_mask.to(self.weight.dtype)
        return TopKMask.apply(self.scores.abs(), self.n_keep)

    def effective_weight(self) -> torch.Tensor:
        """``w * mask`` broadcast to the weight's shape (or the cached copy inside :func:`cached_masks`)."""
        if self._cached_weight is not None:
            return self._cached_weight
        if self.dense:
            return self.weight
        return self.weight * self.mask()

    def kept_weights(self) -> int:
        """Number of weights (not score groups) the current mask keeps."""
        if self.dense:
            return self.weight.numel()
        group = self.weight.numel() // self.scores.numel()
        return int(self.mask().detach().sum().item()) * group


class MaskedConv2d(MaskedMixin, nn.Conv2d):
    """``nn.Conv2d`` without bias whose weight is ``frozen_weight * top-k(|scores|)``.

    Example:
        >>> conv = MaskedConv2d(3, 16, 3, padding=1, keep_ratio=0.1)
        >>> y = conv(torch.rand(2, 3, 8, 8))   # (2, 16, 8, 8)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, *, keep_ratio: float = 1.0, granularity: str = "element"):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         groups=groups, bias=False)
        self._init_masking(keep_ratio, granularity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), None)


class MaskedLinear(MaskedMixin, nn.Linear):
    """``nn.Linear`` without bias whose weight is ``frozen_weight * top-k(|scores|)``."""

    def __init__(self, in_features: int, out_features: int, *, keep_ratio: float = 1.0,
                 granularity: str = "element"):
        super().__init__(in_features, out_features, bias=False)
        self._init_masking(keep_ratio, granularity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight())


MASKED_TYPES = (MaskedConv2d, MaskedLinear)


def masked_layers(model: nn.Module) -> Iterator[tuple[str, MaskedMixin]]:
    """``(name, layer)`` for every masked layer of ``model``, in registration order."""
    for name, module in model.named_modules():
        if isinstance(module, MASKED_TYPES):
            yield name, module


def set_keep_ratio(model: nn.Module, keep_ratio: float) -> None:
    """Set the same ``keep_ratio`` in every masked layer (the paper's uniform per-layer ratio)."""
    for _, layer in masked_layers(model):
        n_keep(1, keep_ratio)
        layer.keep_ratio = float(keep_ratio)
        layer.k_override = None


def set_global_keep(model: nn.Module, keep_ratio: float) -> dict[str, int]:
    """Network-wide top-k: keep the ``keep_ratio`` fraction of *all* scores ranked together.

    A departure from the paper (which keeps the same fraction in every layer): layers may end up
    with very different densities, and a layer can be emptied entirely. Call it after each optimiser
    step; it sets ``k_override`` per layer from the current scores and returns the counts.
    """
    layers = list(masked_layers(model))
    with torch.no_grad():
        mags = torch.cat([layer.scores.abs().flatten() for _, layer in layers])
        k_total = n_keep(mags.numel(), keep_ratio)
        threshold = torch.topk(mags, k_total, sorted=False).values.min()
        # one device sync for all layers (not one .item() per layer per step)
        kept = torch.stack([(layer.scores.abs() >= threshold).sum() for _, layer in layers]).tolist()
        counts = {}
        for (name, layer), k in zip(layers, kept):
            # topk needs k >= 1 (an empty layer would zero the network's output): keep one group at least
            layer.k_override = max(1, int(k))
            counts[name] = layer.k_override
    return counts


def set_dense(model: nn.Module, dense: bool = True) -> None:
    """Use every weight (dense baseline) or go back to masking."""
    for _, layer in masked_layers(model):
        layer.dense = dense


@contextlib.contextmanager
def cached_masks(model: nn.Module):
    """Compute each layer's ``w * mask`` once, detached, and reuse it for every forward inside.

    Use it around an attack's inner loop: the scores do not change there, the top-k is not
    recomputed, and no gradient flows to the scores (only the input gradient is needed).
    A module that computes its masks itself (``rst.search.batched.TicketBatch``) provides a
    ``cached_weights()`` context, entered here.
    """
    layers = [layer for _, layer in masked_layers(model)]
    previous = [layer._cached_weight for layer in layers]   # re-entrant: an outer cache survives
    try:
        with torch.no_grad():
            for layer in layers:
                if layer._cached_weight is None:
                    layer._cached_weight = layer.effective_weight().detach()
        with contextlib.ExitStack() as stack:
            for module in model.modules():
                if hasattr(module, "cached_weights"):
                    stack.enter_context(module.cached_weights())
            yield model
    finally:
        for layer, prev in zip(layers, previous):
            layer._cached_weight = prev


def layer_stats(model: nn.Module) -> list[dict]:
    """Per masked layer: name, type, weight shape, weights, kept weights, density."""
    rows = []
    for name, layer in masked_layers(model):
        kept = layer.kept_weights()
        rows.append({"layer": name, "type": type(layer).__name__, "shape": tuple(layer.weight.shape),
                     "weights": layer.weight.numel(), "kept": kept,
                     "density": kept / layer.weight.numel()})
    return rows


def fan_in(weight: torch.Tensor) -> int:
    return int(math.prod(weight.shape[1:]))
