"""The reference recipe's search step, reimplemented for timing (the public reference code, an edge-popup fork).

fp32; every forward re-ranks each layer's scores with a FULL SORT of |s| (hidden-networks'
``GetSubnet``); the PGD inner attack calls ``loss.backward()`` at every step, so it also computes the
score gradients and throws them away; the batch comes from host memory (``.to(device)`` each step).
"""
from __future__ import annotations

import contextlib
import types
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from rst.evaluation.attacks import AttackConfig
from rst.network.masked import masked_layers
from rst.search.loop import score_parameters

# --------------------------------------------------------------------------------------------
# The reference recipe's step
# --------------------------------------------------------------------------------------------


class SortMask(torch.autograd.Function):
    """hidden-networks' ``GetSubnet``: a full sort of ``magnitude`` at every call, straight-through.

    Keeps the entries at sorted positions ``j = int((1 - keep_ratio) * numel)`` and above, i.e.
    ``numel - j`` entries: the same set as a top-k with that k (the count can exceed our
    ``round(keep_ratio * numel)`` by one).
    """

    @staticmethod
    def forward(ctx, magnitude: torch.Tensor, keep_ratio: float) -> torch.Tensor:
        out = magnitude.clone()
        _, idx = magnitude.flatten().sort()
        j = int((1 - keep_ratio) * magnitude.numel())
        flat = out.view(-1)                 # shares out's memory
        flat[idx[:j]] = 0
        flat[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def sort_mask(magnitude: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """The reference's mask of ``magnitude`` (= |scores|) at ``keep_ratio`` (float 0/1, same shape)."""
    return SortMask.apply(magnitude, keep_ratio)


def _reference_mask(layer) -> torch.Tensor:
    return sort_mask(layer.scores.abs(), layer.keep_ratio)


@contextlib.contextmanager
def reference_masks(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, every masked layer of ``model`` computes its mask by a full sort, at every forward."""
    layers = [layer for _, layer in masked_layers(model)]
    try:
        for layer in layers:
            layer.mask = types.MethodType(_reference_mask, layer)    # shadows MaskedMixin.mask
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop("mask", None)


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference code's PGD: ``loss.backward()`` at every step (score gradients computed too,
    then zeroed), L∞, uniform random start, model in whatever mode the caller set."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()                                    # also fills scores.grad: wasted work
        step = alpha * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv.detach() + step, x - eps), x + eps).clamp(0, 1)
        model.zero_grad(set_to_none=False)                 # the PyTorch-1.x default the code ran on
    return x_adv.detach()


class ReferenceStep:
    """One optimiser step of the reference recipe on ``model`` (a masked network, scores trainable).

    ``step(x, y)`` takes a host batch, copies it to the device, runs the reference PGD with BN in
    train mode under :func:`reference_masks`, then the SGD update of the scores (momentum 0.9,
    weight decay 5e-4, lr 0.1); fp32 throughout. Returns the loss (a device tensor).

    Example::

        >>> step = ReferenceStep(build_network(spec, device="cuda", keep_ratio=0.1), AttackConfig("pgd", steps=7))
        >>> loss = step(x_cpu, y_cpu)
    """

    def __init__(self, model: nn.Module, attack: AttackConfig, *, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 5e-4, seed: int = 0):
        self.model, self.attack = model, attack
        self.device = next(model.parameters()).device
        self.opt = torch.optim.SGD(score_parameters(model), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        with reference_masks(self.model):
            x_adv = reference_pgd(self.model, x, y, self.attack.eps, self.attack.alpha, self.attack.steps,
                                  self.generator)
            loss = F.cross_entropy(self.model(x_adv), y)
            self.opt.zero_grad(set_to_none=False)
            loss.backward()
            self.opt.step()
        return loss.detach()
