"""Randomized ensembles of hand-made binary members for the attack and switch-probability tests."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn


class BinaryMembers(nn.Module):
    """K members with logits ``(0, margin(k, x))`` (class 1 iff the margin is positive), the interface
    of ``rst.evaluation.r2s.R2S`` that the ensemble attacks use: ``K``, ``member_logits``, ``use_member``, forward."""

    def __init__(self, K: int, probs=None):
        super().__init__()
        self.K = K
        self.member_probs = probs
        self._fixed: list[int] = []
        self.unused = nn.Parameter(torch.zeros(()))        # something to take the device from

    def margin(self, k: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _logits(self, k, x):
        g = self.margin(k, x)
        return torch.stack([torch.zeros_like(g), g], 1)                                 # (B, 2)

    def member_logits(self, x):
        return torch.stack([self._logits(k, x) for k in range(self.K)])

    @contextlib.contextmanager
    def use_member(self, k):
        self._fixed.append(k)
        try:
            yield self
        finally:
            self._fixed.pop()

    def forward(self, x):
        return self._logits(self._fixed[-1], x)
