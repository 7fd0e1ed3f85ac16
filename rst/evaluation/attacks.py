"""White-box attacks in [0, 1] pixel space: FGSM, FGSM with random start, PGD (L∞ / L2), CW-L∞, and their
registry: :class:`AttackConfig` names an attack and its hyper-parameters, :func:`run_attack` runs it.

Every attack is a function of ``(model, x, y)`` returning ``x_adv`` (detached, same shape) with
``||x_adv - x||_p <= eps`` and ``x_adv`` in [0, 1]. The model normalises its inputs itself (its
first layer), so ``x`` and ``eps`` stay in pixel space. The device is taken from ``x``.

Conventions shared by all attacks (Fu et al., NeurIPS 2021, https://arxiv.org/abs/2110.14068,
spec §2 and §3):

* Only the input gradient is computed (``torch.autograd.grad(loss, x_adv)``), never
  ``loss.backward()``: no gradient reaches the scores or the weights. The loop runs inside
  :func:`rst.network.masked.cached_masks`, so each layer's ``w * mask`` is computed once per attack.
* ``train_mode=False`` (evaluation attacks) puts the model in ``eval()``; ``train_mode=True`` runs
  it in ``train()`` — the paper's search runs its inner attack with BatchNorm in train mode (batch
  statistics, running statistics updated by every attack step). The previous mode of every
  submodule is restored afterwards, also on error.
* Randomness only through ``generator`` (a ``torch.Generator`` on ``x``'s device); ``None`` uses
  torch's global RNG.

The attacks live in :mod:`rst.evaluation.pgd_family`, built from :mod:`~rst.evaluation.threat_models`
(start, step, projection), :mod:`~rst.evaluation.attack_objectives` (the losses),
:mod:`~rst.evaluation.model_modes` and :mod:`~rst.evaluation.attack_inputs`; this module re-exports them.

    >>> import rst, torch
    >>> from rst.evaluation.attacks import pgd, AttackConfig, run_attack
    >>> model = rst.build_network(rst.NetworkSpec("fmnist_conv4", dataset="fashion_mnist"), keep_ratio=0.5)
    >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    >>> x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)        # (8, 1, 28, 28)
    >>> x_adv = run_attack(AttackConfig("pgd", steps=20), model, x, y)  # the same, from a config
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from rst.runtime.config import check_field_types, strict_from_dict
from .attack_inputs import check_pixel_range  # noqa: F401 (re-exported)
from .attack_objectives import Loss, LossFn  # noqa: F401 (re-exported)
from .model_modes import attack_mode, model_mode  # noqa: F401 (re-exported)
from .pgd_family import cw_linf, fgsm, fgsm_rs, pgd
from .threat_models import NORMS, check_norm


def no_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The clean inputs (a detached copy of ``x``): the "none" entry of the registry."""
    return x.detach().clone()


# --------------------------------------------------------------------------------------------
# Registry and configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackEntry:
    """How an attack is called from an :class:`AttackConfig`.

    ``config_fields``: the config fields passed as keyword arguments; ``runtime_args``: which of
    ``train_mode`` / ``generator`` / ``loss`` / ``check_range`` the function accepts; ``norms``: supported threat models.
    """
    fn: Callable[..., torch.Tensor]
    label: str
    iterative: bool
    config_fields: tuple[str, ...]
    runtime_args: tuple[str, ...]
    norms: tuple[str, ...] = ("linf",)


_PGD_FIELDS = ("eps", "alpha", "steps", "random_start", "restarts", "early_stop")

_ENTRIES: dict[str, AttackEntry] = {
    "fgsm": AttackEntry(fgsm, "FGSM", False, ("eps",), ("train_mode", "loss", "check_range")),
    "fgsm_rs": AttackEntry(fgsm_rs, "FGSM-RS", False, ("eps", "alpha"),
                           ("train_mode", "generator", "loss", "check_range")),
    "pgd": AttackEntry(pgd, "PGD", True, _PGD_FIELDS + ("norm",), ("train_mode", "generator", "loss", "check_range"),
                       norms=("linf", "l2")),
    "cw": AttackEntry(cw_linf, "CW", True, _PGD_FIELDS, ("train_mode", "generator", "check_range")),
    "none": AttackEntry(no_attack, "no attack", False, (), ()),
}

#: name -> attack function ``(model, x, y, ...) -> x_adv``.
ATTACKS: dict[str, Callable[..., torch.Tensor]] = {name: e.fn for name, e in _ENTRIES.items()}


def _format_pixels(v: float) -> str:
    """``8/255`` when ``v`` is a whole number of 255ths in (0, 1), else a short decimal."""
    k = v * 255
    if 0 < v < 1 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{v:g}"


@dataclass(frozen=True)
class AttackConfig:
    """An attack and its hyper-parameters (eps and alpha in [0, 1] pixel units).

    ``name`` is a key of :data:`ATTACKS`: "fgsm", "fgsm_rs", "pgd", "cw", "none". Fields an attack
    does not use are ignored (FGSM ignores ``alpha`` and ``steps``). Note: ``alpha`` is used as is by
    "fgsm_rs" — set ``alpha=1.25 * eps`` (Wong et al.) explicitly.

    Example:
        >>> AttackConfig("pgd", steps=20).describe()
        'PGD-20 Linf eps=8/255 alpha=2/255, 1 restart, no early stop'
    """
    name: str = "pgd"
    eps: float = 8 / 255          # radius, pixel units
    alpha: float = 2 / 255        # step size, pixel units
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    early_stop: bool = False

    def __post_init__(self):
        check_field_types(self)
        if self.name not in _ENTRIES:
            raise ValueError(f"unknown attack {self.name!r}; known: {', '.join(sorted(_ENTRIES))}")
        entry = _ENTRIES[self.name]
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {self.eps}")
        check_norm(self.norm)
        if "eps" in entry.config_fields and self.norm not in entry.norms:
            raise ValueError(f"attack {self.name!r} supports norms {entry.norms}, got {self.norm!r}")
        if "alpha" in entry.config_fields and not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha}")
        if entry.iterative:
            if self.steps < 1:
                raise ValueError(f"attack {self.name!r} needs steps >= 1, got {self.steps}")
            if self.restarts < 1:
                raise ValueError(f"restarts must be >= 1, got {self.restarts}")
            if self.restarts > 1 and not self.random_start:
                raise ValueError("restarts > 1 needs random_start=True (every restart would be identical)")

    def describe(self) -> str:
        """Short human description, e.g. ``'PGD-20 Linf eps=8/255 alpha=2/255, 1 restart, no early stop'``."""
        entry = _ENTRIES[self.name]
        fields = entry.config_fields
        head = entry.label + (f"-{self.steps}" if entry.iterative else "")
        if "eps" in fields:
            head += f" {NORMS[self.norm].label} eps={_format_pixels(self.eps)}"
        if "alpha" in fields:
            head += f" alpha={_format_pixels(self.alpha)}"
        tail = []
        if "random_start" in fields and not self.random_start:
            tail.append("no random start")
        if "restarts" in fields:
            tail.append(f"{self.restarts} restart" + ("s" if self.restarts > 1 else ""))
        if "early_stop" in fields:
            tail.append("early stop" if self.early_stop else "no early stop")
        return ", ".join([head, *tail])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AttackConfig":
        return strict_from_dict(cls, d, "attack config")


def run_attack(cfg: AttackConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               train_mode: bool = False, generator: torch.Generator | None = None,
               loss: Loss | None = None, check_range: bool = True) -> torch.Tensor:
    """Run the attack described by ``cfg`` (dispatch through the registry).

    ``train_mode`` and ``generator`` go to the attacks that take them (deterministic attacks ignore
    ``generator``); ``loss=None`` keeps the attack's own loss; a loss for an attack that fixes its
    loss ("cw", "none") is a ValueError. ``check_range=False`` skips the [0, 1] check of ``x`` (and
    its device synchronisation) for a caller that checked x's source once (:func:`check_pixel_range`).

    Example:
        >>> x_adv = run_attack(AttackConfig("pgd", steps=20), model, x, y)   # PGD-20, eval mode
    """
    entry = _ENTRIES[cfg.name]
    kwargs = {f: getattr(cfg, f) for f in entry.config_fields}
    runtime = {"train_mode": train_mode, "generator": generator, "loss": loss, "check_range": check_range}
    if loss is not None and "loss" not in entry.runtime_args:
        raise ValueError(f"attack {cfg.name!r} does not take a loss")
    kwargs.update({k: v for k, v in runtime.items() if k in entry.runtime_args and v is not None})
    return entry.fn(model, x, y, **kwargs)


__all__ = ["ATTACKS", "NORMS", "AttackConfig", "AttackEntry", "attack_mode", "check_pixel_range", "cw_linf", "fgsm",
           "fgsm_rs", "no_attack", "pgd", "run_attack"]
