"""The adaptive attacks on R2S's random switch (spec §5), each a function of ``(r2s, x, y)``: PGD on the
exact expectation over the members, PGD on the members' mean logits, EOT-PGD on sampled switches,
APGD-CE / APGD-DLR on the expected loss, ARC, AutoAttack version='rand' (:data:`rst.evaluation.r2s.ADAPTIVE`;
the threat models in :data:`rst.evaluation.r2s.THREAT_MODELS`), and :class:`AdaptiveAttack`, one of them
as an evaluation attack of a suite (:mod:`rst.evaluation.suite`).

    >>> x_adv, log = adaptive_examples("expectation", r2s, x, y, eps=0.1, alpha=0.025)
    >>> member_correct(r2s, x_adv, y).float().mean(1)           # each member's accuracy on them
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pgd_family import pgd
from .r2s import ADAPTIVE, R2S
from .suite import EvalAttack, correct_per_member


def member_weighted_mean(model: R2S, v: torch.Tensor) -> torch.Tensor:
    """``sum_k alpha_k v[k]`` over the first dimension (the plain mean for a uniform switch)."""
    if getattr(model, "uniform", True):
        return v.mean(0)
    p = model.member_probs.to(device=v.device, dtype=v.dtype)
    return (p.view(-1, *([1] * (v.dim() - 1))) * v).sum(0)


def expectation_loss(model: R2S, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Expected cross-entropy over the switch (``alpha``-weighted), per example (B,): the exact EOT objective."""
    logits = model.member_logits(x_adv)                                      # (K, B, C)
    K, B, C = logits.shape
    ce = F.cross_entropy(logits.reshape(K * B, C), y.repeat(K), reduction="none")
    return member_weighted_mean(model, ce.view(K, B))


def ensemble_loss(model: R2S, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the members' (``alpha``-weighted) mean logits, per example (B,)."""
    return F.cross_entropy(member_weighted_mean(model, model.member_logits(x_adv)), y, reduction="none")


def member_correct(r2s: R2S, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K, B) bool: member k classifies example b correctly (:func:`rst.evaluation.suite.correct_per_member`)."""
    return correct_per_member(r2s, x, y)


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device):
    """Seed torch's global RNG inside the block (for libraries that use it) and restore it afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _eot_examples(r2s: R2S, x, y, eps, alpha, steps, eot_samples, seed) -> torch.Tensor:
    import torchattacks
    with _seeded_global_rng(seed, x.device):
        atk = torchattacks.EOTPGD(r2s, eps=eps, alpha=alpha, steps=steps, eot_iter=eot_samples)
        return atk(x, y).detach()


def adaptive_examples(protocol: str, r2s: R2S, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                      steps: int = 20, eot_samples: int = 10, apgd_steps: int = 100, arc_steps: int = 10,
                      arc_topk: int | None = None, generator: torch.Generator | None = None,
                      seed: int = 0) -> tuple[torch.Tensor, str]:
    """One adaptive attack of :data:`ADAPTIVE` on a batch: ``(x_adv, log text)``.

    "expectation" / "ensemble": PGD-``steps`` (step ``alpha``, random start from ``generator``);
    "eot": torchattacks EOTPGD (``eot_samples`` switches per step; global RNG seeded with ``seed``);
    "apgd_ce" / "apgd_dlr": :func:`rst.evaluation.ensemble_attacks.apgd_expectation`, ``apgd_steps`` iterations;
    "arc": :func:`rst.evaluation.ensemble_attacks.arc`, ``arc_steps`` iterations of step ``alpha`` (``arc_topk``:
    ARC-lite, only the top classes' boundaries);
    "autoattack_rand": AutoAttack version='rand'.
    """
    from .ensemble_attacks import apgd_expectation, arc
    if protocol == "expectation":
        return pgd(r2s, x, y, eps, alpha, steps, loss=expectation_loss, generator=generator), ""
    if protocol == "ensemble":
        return pgd(r2s, x, y, eps, alpha, steps, loss=ensemble_loss, generator=generator), ""
    if protocol == "eot":
        return _eot_examples(r2s, x, y, eps, alpha, steps, eot_samples, seed), ""
    if protocol in ("apgd_ce", "apgd_dlr"):
        return apgd_expectation(r2s, x, y, eps, loss=protocol[5:], steps=apgd_steps, seed=seed), ""
    if protocol == "arc":
        return arc(r2s, x, y, eps, steps=arc_steps, step_size=alpha, topk=arc_topk), ""
    if protocol == "autoattack_rand":
        from .autoattack import autoattack_examples
        r2s.reseed(seed)
        return autoattack_examples(r2s, x, y, eps=eps, version="rand", batch_size=len(x), seed=seed)
    raise ValueError(f"unknown adaptive protocol {protocol!r}; known: {ADAPTIVE}")


def describe_adaptive(protocol: str, *, K: int, eps: float, alpha: float, steps: int = 20, eot_samples: int = 10,
                      apgd_steps: int = 100, arc_steps: int = 10, arc_topk: int | None = None,
                      switch: str = "batch") -> str:
    """A one-line description of an adaptive attack with its budget, e.g. for report rows."""
    tail = f" Linf eps={eps:.4g} alpha={alpha:.4g}, 1 restart, no early stop"
    return {"expectation": f"PGD-{steps} on mean CE over {K} members" + tail,
            "ensemble": f"PGD-{steps} on CE of mean logits over {K} members" + tail,
            "eot": f"EOT-PGD-{steps} ({eot_samples} samples/step, switch={switch})" + tail,
            "apgd_ce": f"APGD-CE-{apgd_steps} on mean CE over {K} members, Linf eps={eps:.4g}, 1 restart",
            "apgd_dlr": f"APGD-DLR-{apgd_steps} on mean DLR over {K} members, Linf eps={eps:.4g}, 1 restart",
            "arc": f"ARC-{arc_steps} (step {alpha:.4g}, "
                   + ("all class boundaries" if arc_topk is None else f"ARC-lite: top {arc_topk} classes")
                   + f") over {K} members, Linf eps={eps:.4g}",
            "autoattack_rand": f"AutoAttack rand (APGD-CE, APGD-DLR; EOT=20) Linf eps={eps:.4g}"}[protocol]


@dataclass(eq=False)
class AdaptiveAttack(EvalAttack):
    """One adaptive attack of :data:`ADAPTIVE` as an evaluation attack: at every pass a fresh generator
    from ``seed`` (and, for "eot", the switch reseeded with ``seed``); batch ``i`` gets ``seed + i``.
    The non-empty logs of its batches are appended to ``logs``."""
    protocol: str
    eps: float
    alpha: float
    steps: int = 20
    eot_samples: int = 10
    apgd_steps: int = 100
    arc_steps: int = 10
    arc_topk: int | None = None
    seed: int = 0
    logs: list[str] = field(default_factory=list)
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.protocol not in ADAPTIVE:
            raise ValueError(f"unknown adaptive protocol {self.protocol!r}; known: {ADAPTIVE}")

    @property
    def name(self) -> str:
        return self.protocol

    def describe(self, model: nn.Module | None = None) -> str:
        return describe_adaptive(self.protocol, K=model.K, eps=self.eps, alpha=self.alpha, steps=self.steps,
                                 eot_samples=self.eot_samples, apgd_steps=self.apgd_steps, arc_steps=self.arc_steps,
                                 arc_topk=self.arc_topk, switch=model.switch)

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        self._generator = torch.Generator(device=next(model.parameters()).device).manual_seed(self.seed)
        if self.protocol == "eot":
            model.reseed(self.seed)
        yield

    def examples(self, model, x, y, batch_index=0):
        x_adv, text = adaptive_examples(self.protocol, model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps,
                                        eot_samples=self.eot_samples, apgd_steps=self.apgd_steps,
                                        arc_steps=self.arc_steps, arc_topk=self.arc_topk, generator=self._generator,
                                        seed=self.seed + batch_index)
        if text:
            self.logs.append(text)
        return x_adv


__all__ = ["AdaptiveAttack", "adaptive_examples", "describe_adaptive", "ensemble_loss", "expectation_loss",
           "member_correct", "member_weighted_mean"]
