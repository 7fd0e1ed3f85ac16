"""Seeded random weights: the frozen network is a function of (architecture, arguments, init, seed).

Every tensor is drawn on the CPU from one ``torch.Generator`` in module registration order and only
then moved to the target device, so the same seed gives the same bits on any machine and device.
:func:`weight_checksum` hashes those bits; a mask file stores it and loading refuses a mismatch.

Inits (Fu et al. 2021, §4.3; signed Kaiming constant was best in every setting of the paper):

    signed_kaiming_constant   w = sign(w0) * sqrt(2 / fan_in),  w0 ~ N(0, 1)   (default)
    kaiming_normal            w ~ N(0, 2 / fan_in)
    kaiming_uniform           w ~ U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))
    xavier_normal             w ~ N(0, 2 / (fan_in + fan_out))

Scores: U(-1/sqrt(fan_in), +1/sqrt(fan_in)) from a second generator (seed-derived), so that
changing the score seed never changes the weights.
"""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn as nn

from .masked import masked_layers

INITS = ("signed_kaiming_constant", "kaiming_normal", "kaiming_uniform", "xavier_normal")


def _fans(shape: torch.Size) -> tuple[int, int]:
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def draw_weight(shape: torch.Size, init: str, generator: torch.Generator) -> torch.Tensor:
    """One weight tensor (float32, CPU) drawn with ``init`` from ``generator``."""
    fan_in, fan_out = _fans(shape)
    if init == "signed_kaiming_constant":
        w0 = torch.randn(shape, generator=generator)
        return torch.where(w0 >= 0, 1.0, -1.0) * math.sqrt(2.0 / fan_in)
    if init == "kaiming_normal":
        return torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
    if init == "kaiming_uniform":
        bound = math.sqrt(6.0 / fan_in)
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    if init == "xavier_normal":
        return torch.randn(shape, generator=generator) * math.sqrt(2.0 / (fan_in + fan_out))
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


@torch.no_grad()
def init_weights(model: nn.Module, init: str = "signed_kaiming_constant", seed: int = 0) -> None:
    """Overwrite every masked layer's frozen weight from ``seed`` (drawn on CPU, copied to device)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    for _, layer in masked_layers(model):
        layer.weight.copy_(draw_weight(layer.weight.shape, init, g))


@torch.no_grad()
def init_scores(model: nn.Module, seed: int = 0) -> None:
    """Scores ~ U(-1/sqrt(fan_in), +1/sqrt(fan_in)) from a generator derived from ``seed``."""
    g = torch.Generator(device="cpu").manual_seed(int(seed) + 0x5C0E5)
    for _, layer in masked_layers(model):
        fan_in, _ = _fans(layer.weight.shape)
        bound = 1.0 / math.sqrt(fan_in)
        layer.scores.copy_((torch.rand(layer.scores.shape, generator=g) * 2 - 1) * bound)


@torch.no_grad()
def weight_checksum(model: nn.Module) -> str:
    """SHA-256 over every masked layer's frozen weight (name, shape, float32 little-endian bytes)."""
    h = hashlib.sha256()
    for name, layer in masked_layers(model):
        w = layer.weight.detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(w.shape)).encode())
        h.update(w.numpy().astype("<f4").tobytes())
    return h.hexdigest()
