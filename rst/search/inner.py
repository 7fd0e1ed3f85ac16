"""The search's inner attack: one object per method behind one interface, found by name in a registry.

The loop (:func:`rst.search.loop.adversarial_fit`) knows no attack by name. Per batch it does::

    for _ in range(attack.replays):                 # 1, or m for "free" adversarial training
        x_adv = attack(model, x, y, generator=g)    # (B, C, H, W) in [0, 1]
        loss = cross_entropy(model(x_adv), y); loss.backward(); optimizer.step()
        attack.after_update()                       # e.g. free AT moves its perturbation on

and ``attack.start_epoch()`` before each epoch. An attack keeps whatever it carries between
batches (free AT's perturbation) on itself. Registered:

========  =====================================================================================
pgd       PGD-``steps``, step ``alpha``, random start (Madry et al. 2018; the paper's PGD-7)
fgsm      one signed step of ``eps`` from the clean image (Goodfellow et al. 2015)
fgsm_rs   random start in the eps-ball, one step of 1.25 eps, projected (Wong et al. 2020)
n_fgsm    noise U(-2 eps, 2 eps), one step of eps, NOT projected (de Jorge et al., NeurIPS 2022)
free      "free" AT: each batch replayed ``steps`` times, the perturbation carried on (Shafahi 2019)
none      the clean batch (natural search)
========  =====================================================================================

A new method plugs in from anywhere, before the config that names it is built::

    >>> @rst.search.inner.register_inner_attack("my_attack")
    ... def my_attack(cfg):                   # cfg: rst.search.loop.SearchConfig
    ...     return MyAttack(cfg.eps)          # an InnerAttack
    >>> rst.run_search(rst.search.loop.preset("tiny", inner_attack="my_attack"))
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from rst.evaluation.attacks import AttackConfig, attack_mode, run_attack


class InnerAttack:
    """What the search loop calls. Subclass it and override :meth:`__call__` (at least)."""
    replays: int = 1                       # optimiser steps per batch

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The adversarial batch ``x_adv`` (B, C, H, W) in [0, 1] to train on."""
        raise NotImplementedError

    def start_epoch(self) -> None:
        """Called before every epoch (drop anything carried across batches)."""

    def after_update(self) -> None:
        """Called after every optimiser step, when the update's gradients are still there."""

    def describe(self) -> str:
        return type(self).__name__


class ConfiguredAttack(InnerAttack):
    """An evaluation attack of :mod:`rst.evaluation.attacks` used as the inner attack (PGD, FGSM, FGSM-RS, none).

    ``train_mode=True`` runs it with BN in train mode (the paper's search: batch statistics, running
    statistics updated by every attack step); False with BN in eval mode. The [0, 1] range of the
    training data is checked once, when the fit starts, not at every call (a device sync each).
    """

    def __init__(self, attack: AttackConfig, train_mode: bool = True):
        self.attack, self.train_mode = attack, train_mode

    def __call__(self, model, x, y, *, generator=None):
        return run_attack(self.attack, model, x, y, train_mode=self.train_mode, generator=generator,
                          check_range=False)

    def describe(self) -> str:
        return self.attack.describe()


class NFGSM(InnerAttack):
    r"""N-FGSM from 'Make Some Noise: Reliable and Efficient Single-Step Adversarial Training'
    [https://arxiv.org/abs/2202.01181] (de Jorge et al., NeurIPS 2022).

    Distance Measure : Linf, for TRAINING only. Noise ``eta ~ U(-k eps, k eps)``, one step
    ``alpha * sign(grad)`` from ``x + eta``, clamped to [0, 1] but NOT projected back onto the
    eps-ball (the paper's point: the larger, noisier perturbation avoids catastrophic overfitting
    without the cost of a regulariser). So ``||x_adv - x||_inf <= k eps + alpha``.

    Arguments:
        eps (float): the threat model's radius, pixel units.
        k (float): noise magnitude in units of eps. (Default: 2, the paper's)
        alpha (float | None): step size; None means ``eps`` (the paper's). (Default: None)
        train_mode (bool): BN in train mode during the attack. (Default: True)

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)`. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = NFGSM(eps=0.1)(model, x, y, generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, eps: float, k: float = 2.0, alpha: float | None = None, train_mode: bool = True):
        self.eps, self.k, self.train_mode = eps, k, train_mode
        self.alpha = eps if alpha is None else alpha

    def __call__(self, model, x, y, *, generator=None):
        noise = torch.empty_like(x).uniform_(-self.k * self.eps, self.k * self.eps, generator=generator)
        x_noisy = (x + noise).clamp(0, 1).requires_grad_(True)
        with torch.enable_grad(), attack_mode(model, self.train_mode):
            loss = nn.functional.cross_entropy(model(x_noisy).float(), y)
            grad, = torch.autograd.grad(loss, x_noisy)
        return (x_noisy.detach() + self.alpha * grad.sign()).clamp(0, 1)

    def describe(self) -> str:
        return f"N-FGSM Linf eps={self.eps:g} noise={self.k:g}eps step={self.alpha:g}"


class FreeAT(InnerAttack):
    r"""'Free' adversarial training from 'Adversarial Training for Free!'
    [https://arxiv.org/abs/1904.12843] (Shafahi et al., NeurIPS 2019).

    Distance Measure : Linf. Every batch is replayed ``replays`` times; each replay trains on
    ``x + delta`` and the SAME backward pass gives the input gradient, with which
    ``delta <- clip(delta + eps * sign(grad), -eps, eps)`` for the next replay (and the next batch).
    ``delta`` starts at zero every epoch.

    Arguments:
        eps (float): radius, pixel units. replays (int): replays per batch (``steps`` in the config).
    """

    def __init__(self, eps: float, replays: int):
        self.eps, self.replays = eps, replays
        self._delta: torch.Tensor | None = None
        self._live: torch.Tensor | None = None

    def start_epoch(self) -> None:
        self._delta = None

    def __call__(self, model, x, y, *, generator=None):
        if self._delta is None or self._delta.shape != x.shape:
            self._delta = torch.zeros_like(x)
        self._live = self._delta.clone().requires_grad_(True)
        return (x + self._live).clamp(0, 1)

    def after_update(self) -> None:
        d = self._live
        self._delta = (d + self.eps * d.grad.sign()).clamp(-self.eps, self.eps).detach()

    def describe(self) -> str:
        return f"free AT Linf eps={self.eps:g}, {self.replays} replays per batch"


# --------------------------------------------------------------------------------------------
# Registry: name -> factory(cfg) -> InnerAttack (cfg: rst.search.loop.SearchConfig)
# --------------------------------------------------------------------------------------------

INNER_ATTACKS: dict[str, Callable[..., InnerAttack]] = {}
SINGLE_STEP = {"fgsm", "fgsm_rs", "n_fgsm"}       # the ones catastrophic overfitting threatens


def register_inner_attack(name: str, *, single_step: bool = False):
    """Decorator: register ``factory(cfg) -> InnerAttack`` under ``name`` (``cfg.inner_attack``)."""
    def add(factory: Callable[..., InnerAttack]) -> Callable[..., InnerAttack]:
        INNER_ATTACKS[name] = factory
        if single_step:
            SINGLE_STEP.add(name)
        return factory
    return add


def build_inner_attack(cfg) -> InnerAttack:
    """The inner attack ``cfg.inner_attack`` names, built from ``cfg``."""
    if cfg.inner_attack not in INNER_ATTACKS:
        raise ValueError(f"unknown inner attack {cfg.inner_attack!r}; known: {', '.join(INNER_ATTACKS)}")
    return INNER_ATTACKS[cfg.inner_attack](cfg)


def _train_mode(cfg) -> bool:
    return cfg.attack_bn_mode == "train"


@register_inner_attack("pgd")
def _pgd(cfg):
    return ConfiguredAttack(AttackConfig("pgd", eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps), _train_mode(cfg))


@register_inner_attack("fgsm", single_step=True)
def _fgsm(cfg):
    return ConfiguredAttack(AttackConfig("fgsm", eps=cfg.eps), _train_mode(cfg))


@register_inner_attack("fgsm_rs", single_step=True)
def _fgsm_rs(cfg):
    return ConfiguredAttack(AttackConfig("fgsm_rs", eps=cfg.eps, alpha=1.25 * cfg.eps), _train_mode(cfg))


@register_inner_attack("n_fgsm", single_step=True)
def _n_fgsm(cfg):
    return NFGSM(cfg.eps, train_mode=_train_mode(cfg))


@register_inner_attack("free")
def _free(cfg):
    return FreeAT(cfg.eps, cfg.steps)


@register_inner_attack("none")
def _none(cfg):
    return ConfiguredAttack(AttackConfig("none"), _train_mode(cfg))


__all__ = ["INNER_ATTACKS", "SINGLE_STEP", "ConfiguredAttack", "FreeAT", "InnerAttack", "NFGSM",
           "build_inner_attack", "register_inner_attack"]
