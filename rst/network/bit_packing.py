"""Bit packing of boolean masks: 1 bit per element, MSB first (``np.packbits``' layout).

The mask file format (:mod:`rst.network.masks`) stores every mask this way, as its
``t{i}/mask/{layer}`` uint8 tensors; :class:`rst.evaluation.r2s.R2S` keeps its members packed on the
device and unpacks one on every switch.
"""
from __future__ import annotations

import numpy as np
import torch


def bit_shift_table(device: torch.device | str | None = None) -> torch.Tensor:
    """The (8,) uint8 shifts ``7 .. 0`` that :func:`unpack_bits` applies to every byte (MSB first).

    A module that unpacks often (``rst.evaluation.r2s.R2S`` on every member switch) keeps one as a buffer on its
    own device and passes it in, so unpacking never copies a table from the host.
    """
    return torch.arange(7, -1, -1, dtype=torch.uint8, device=device)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor (any shape, any device) -> uint8 ``(ceil(n / 8),)`` on the CPU, MSB first
    (``np.packbits``' layout, the mask file's ``t{i}/mask/{layer}`` tensors)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().flatten().numpy().astype(np.uint8)))


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...],
                shifts: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ``(ceil(n / 8),)`` on any device -> bool tensor of ``shape`` on the same device.

    ``shifts``: a :func:`bit_shift_table` on ``packed``'s device (default: one made there).
    ``unpack_bits(pack_bits(m), m.shape)`` equals ``m``.
    """
    n = int(np.prod(shape))
    if shifts is None:
        shifts = bit_shift_table(packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1                                   # (nbytes, 8)
    return bits.flatten()[:n].view(shape).bool()
