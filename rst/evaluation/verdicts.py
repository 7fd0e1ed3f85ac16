"""Every member's verdict (right or wrong) on a batch, fast: bf16 on the members' BN-folded copies,
rechecked in fp32 wherever the top-two margin is small (on the folded copy, and on the member itself
where even the fp32 margin is within folding's rounding).

A verdict only changes where the two largest logits swap. bf16 moves a logit of these networks by at
most about 0.05 (measured on the default zoo's members, adversarial and clean images,
docs/app-speed.md), so a margin of :data:`RECHECK_MARGIN` or more in bf16 has the same winner in
fp32; every verdict below it is computed again in fp32: on the folded copy, and on the member itself
where the fp32 margin is below :data:`FOLD_MARGIN` (folding moves a logit by about 1e-6). Scoring then
costs a bf16 forward of every image plus an fp32 forward of the near-ties (about a fifth of attacked
images) instead of an fp32 forward of every image.

    >>> member_verdicts(r2s, x_adv, y)               # (K, B) bool, the fp32 members' verdicts
    >>> member_verdicts(r2s, x_adv, y, fast=False)   # the same, every image in fp32
"""
from __future__ import annotations

import torch

from .r2s import R2S
from .suite import correct_per_member

RECHECK_MARGIN = 0.25    # logits: 2.4x the largest swing of a margin measured in bf16 (two logits, 0.052 each)
FOLD_MARGIN = 1e-3       # logits: folding BN into the weights moves an fp32 logit by about 1e-6


@torch.no_grad()
def member_verdicts(r2s: R2S, x: torch.Tensor, y: torch.Tensor, *, fast: bool = True,
                    recheck_margin: float = RECHECK_MARGIN) -> torch.Tensor:
    """(K, B) bool: member k classifies example b correctly, as its fp32 forward says. ``fast``: bf16
    autocast on the folded copies (``R2S.fast_members``), then fp32 (:func:`_fp32_verdicts`) for every
    example whose bf16 top-two margin is below ``recheck_margin``; else fp32 on the members throughout."""
    if not recheck_margin >= 0:
        raise ValueError(f"recheck_margin must be >= 0, got {recheck_margin!r}")
    if not fast:
        return correct_per_member(r2s, x, y)
    with r2s.fast_members(), torch.autocast(x.device.type, dtype=torch.bfloat16):
        logits = r2s.member_logits(x).float()                               # (K, B, C)
    unsure = _margin(logits) < recheck_margin                                # (K, B)
    right = logits.argmax(-1) == y.unsqueeze(0)
    for k in unsure.any(1).nonzero().flatten().tolist():
        idx = unsure[k].nonzero().flatten()
        right[k, idx] = _fp32_verdicts(r2s, k, x.index_select(0, idx), y.index_select(0, idx))
    return right


def _fp32_verdicts(r2s: R2S, k: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Member ``k``'s fp32 verdicts: on its folded copy in fp32 (the same function up to fp32 rounding,
    cheaper), and on the member itself wherever the folded copy's top-two margin is below
    :data:`FOLD_MARGIN`, so that a verdict is never the folded copy's rounding."""
    with r2s.use_member(k), r2s.fast_members():
        logits = r2s(x).float()
    right = logits.argmax(-1) == y
    close = (_margin(logits) < FOLD_MARGIN).nonzero().flatten()
    if close.numel():
        with r2s.use_member(k):
            right[close] = r2s(x.index_select(0, close)).argmax(-1) == y.index_select(0, close)
    return right


def _margin(logits: torch.Tensor) -> torch.Tensor:
    """The top-two margin of each row of logits (..., C) -> (...): how far its verdict is from a swap."""
    top2 = logits.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


__all__ = ["FOLD_MARGIN", "RECHECK_MARGIN", "member_verdicts"]
