"""Every member's verdict (right or wrong) on a batch, fast: bf16 on the members' BN-folded copies,
rechecked in fp32 on the members themselves wherever the top-two margin is small.

A verdict only changes where the two largest logits swap. bf16 moves a logit of these networks by at
most about 0.05 (measured on the default zoo's members, adversarial and clean images,
docs/app-speed.md), so a margin of :data:`RECHECK_MARGIN` or more in bf16 has the same winner in
fp32; every verdict below it is computed again in fp32 on the member. Scoring then costs a bf16
forward of every image plus an fp32 forward of the near-ties (about a fifth of attacked images)
instead of an fp32 forward of every image.

    >>> member_verdicts(r2s, x_adv, y)               # (K, B) bool, the fp32 members' verdicts
    >>> member_verdicts(r2s, x_adv, y, fast=False)   # the same, every image in fp32
"""
from __future__ import annotations

import torch

from .r2s import R2S
from .suite import correct_per_member

RECHECK_MARGIN = 0.25    # logits: 2.4x the largest swing of a margin measured in bf16 (two logits, 0.052 each)


@torch.no_grad()
def member_verdicts(r2s: R2S, x: torch.Tensor, y: torch.Tensor, *, fast: bool = True,
                    recheck_margin: float = RECHECK_MARGIN) -> torch.Tensor:
    """(K, B) bool: member k classifies example b correctly, as its fp32 forward says. ``fast``: bf16
    autocast on the folded copies (``R2S.fast_members``), then fp32 on the member for every example
    whose bf16 top-two margin is below ``recheck_margin``; else fp32 on the members throughout."""
    if not recheck_margin >= 0:
        raise ValueError(f"recheck_margin must be >= 0, got {recheck_margin!r}")
    if not fast:
        return correct_per_member(r2s, x, y)
    with r2s.fast_members(), torch.autocast(x.device.type, dtype=torch.bfloat16):
        logits = r2s.member_logits(x).float()                               # (K, B, C)
    top2 = logits.topk(2, dim=-1).values
    unsure = (top2[..., 0] - top2[..., 1]) < recheck_margin                 # (K, B)
    right = logits.argmax(-1) == y.unsqueeze(0)
    for k in unsure.any(1).nonzero().flatten().tolist():
        idx = unsure[k].nonzero().flatten()
        with r2s.use_member(k):
            right[k, idx] = r2s(x.index_select(0, idx)).argmax(-1) == y.index_select(0, idx)
    return right


__all__ = ["RECHECK_MARGIN", "member_verdicts"]
