"""The boosted search's inner attack: PGD on the expected loss of the current randomized ensemble.

After BARRE (Dbouk & Shanbhag, ICML 2023, arXiv:2302.01375, code ``hsndbk4/BARRE``): member ``m``
is searched against adversarial examples of the *current randomized ensemble*, the earlier members
frozen with their switch probabilities plus the new member, and the switch probabilities are refit
on validation images after each member (:func:`rst.evaluation.switch_probabilities.optimal_probabilities`,
ARC inside). Over one random network the K members are K masks of the same frozen weights.

The inner attack (registered as ``"boosted"`` in :mod:`rst.search.inner`) is PGD on

    L(u) = sum_k w_k [CE(f_k(u), y) + lambda * W(f_k(u), y)],   W(z, y) = mean_{j != y} -log softmax(-z)_j

over the earlier members ``k < m`` (frozen, ``w_k = alpha_k (m - 1) / m``) and the new member
(``w_m = 1 / m``); ``W`` is BARRE's wrong-class term, ``lambda`` = ``SearchConfig.boost_wrong_class``.
The earlier members come from the candidate-set file ``SearchConfig.boost_members`` ("" for the
first member: plain PGD on the new member). The search loop is unchanged.

With ``SearchConfig.boost_inner = "apgd"`` the same loss is ascended by APGD (:class:`BoostedAPGD`: Croce &
Hein's step-size schedule and momentum, through the authors' ``pyautoattack`` loop, as
:func:`rst.evaluation.ensemble_attacks.apgd_expectation` runs it) instead of fixed-step PGD.

The search over K members (warm start, alpha refit, resume) is :func:`rst.search.boosted.boosted_search`.

    >>> attack = BoostedPGD(frozen=r2s, eps=0.1, step=0.025, steps=7, wrong_class=0.5)
    >>> x_adv = attack(model, x, y, generator=g)            # what rst.search.loop's loop calls
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from rst.evaluation.attacks import attack_mode
from .inner import InnerAttack, register_inner_attack


def wrong_class_term(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BARRE's term on the wrong-class outputs: ``mean_{j != y} -log softmax(-z)_j``, (B,)."""
    C = z.shape[1]
    other = 1 - F.one_hot(y, C).to(z.dtype)
    return (-F.log_softmax(-z, dim=1) * other).sum(1) / (C - 1)


def ensemble_logits(frozen: nn.Module | None, model: nn.Module, u: torch.Tensor) -> list[torch.Tensor]:
    """``frozen``'s members' logits then ``model``'s, each (B, C) float."""
    z = [model(u).float()]
    if frozen is not None:
        # the frozen members only shape the attack: their BN-folded copies (R2S.fast_members) suffice
        with frozen.fast_members():
            z = list(frozen.member_logits(u).float()) + z                         # K x (B, C)
    return z


def weighted_loss(z: list[torch.Tensor], y: torch.Tensor, weights: torch.Tensor, wrong_class: float) -> torch.Tensor:
    """``sum_k w_k [CE(z_k, y) + wrong_class * W(z_k, y)]``, (B,)."""
    per = [F.cross_entropy(zk, y, reduction="none") + wrong_class * wrong_class_term(zk, y) for zk in z]
    return sum(w * p for w, p in zip(weights, per))


def ensemble_loss(frozen: nn.Module | None, weights: torch.Tensor, model: nn.Module, u: torch.Tensor,
                  y: torch.Tensor, wrong_class: float) -> torch.Tensor:
    """``sum_k w_k [CE + wrong_class * W]`` over ``frozen``'s members then ``model`` (last weight), (B,)."""
    return weighted_loss(ensemble_logits(frozen, model, u), y, weights, wrong_class)


class BoostedPGD(InnerAttack):
    """PGD on the alpha-weighted expected loss of the current ensemble (earlier members frozen).

    Arguments:
        frozen (R2S | None): the earlier members with their switch probabilities (None: none yet).
        eps, step, steps: the L-inf radius, step size and number of PGD steps (random start).
        wrong_class (float): weight of BARRE's wrong-class term. (Default: 0)
        train_mode (bool): BN of the *new* member in train mode during the attack. (Default: True)
    """

    def __init__(self, frozen: nn.Module | None, eps: float, step: float, steps: int,
                 wrong_class: float = 0.0, train_mode: bool = True):
        self.frozen, self.eps, self.step, self.steps = frozen, eps, step, steps
        self.wrong_class, self.train_mode = wrong_class, train_mode
        m = 1 if frozen is None else frozen.K + 1
        earlier = [] if frozen is None else (frozen.member_probs.double() * (m - 1) / m).tolist()
        self.weights = torch.tensor(earlier + [1.0 / m], dtype=torch.float32)   # (m,), sums to 1
        if frozen is not None:
            for p in frozen.parameters():
                p.requires_grad_(False)

    def loss(self, model: nn.Module, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The attack's objective per example, (B,)."""
        if self.frozen is not None and next(self.frozen.buffers()).device != u.device:
            self.frozen.to(u.device)
        return ensemble_loss(self.frozen, self.weights.to(u.device), model, u, y, self.wrong_class)

    def __call__(self, model, x, y, *, generator=None):
        x = x.detach()
        delta = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=generator)
        u = (x + delta).clamp(0, 1)
        with torch.enable_grad(), attack_mode(model, self.train_mode):
            for _ in range(self.steps):
                u.requires_grad_(True)
                grad, = torch.autograd.grad(self.loss(model, u, y).sum(), u)
                u = (u.detach() + self.step * grad.sign())
                u = torch.min(torch.max(u, x - self.eps), x + self.eps).clamp(0, 1)
        return u.detach()

    def describe(self) -> str:
        m = len(self.weights)
        return (f"boosted PGD-{self.steps} Linf eps={self.eps:g} step={self.step:g} on the expected loss of "
                f"{m - 1} frozen member(s) + the new one, wrong-class weight {self.wrong_class:g}")


class _StackedLogits(nn.Module):
    """What APGD queries: the earlier members' logits then the new member's, side by side (B, m * C)."""

    def __init__(self, attack: BoostedPGD, model: nn.Module):
        super().__init__()
        self.attack, self.model = attack, model

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.cat(ensemble_logits(self.attack.frozen, self.model, u), dim=1)

    def loss(self, flat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:func:`weighted_loss` of the stacked logits, (B,): the same objective as :func:`ensemble_loss`."""
        z = flat.view(flat.shape[0], len(self.attack.weights), -1).unbind(1)
        return weighted_loss(list(z), y, self.attack.weights.to(flat.device), self.attack.wrong_class)


class BoostedAPGD(BoostedPGD):
    """:class:`BoostedPGD`'s loss ascended by APGD (``steps`` iterations, one restart, random start;
    ``step`` is unused: APGD starts at 2 eps and halves at its checkpoints). Returns, per example,
    the queried point of highest loss."""

    def __call__(self, model, x, y, *, generator=None):
        import contextlib
        import io

        from pyautoattack.autopgd_base import APGDAttack
        x = x.detach()
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
        target = _StackedLogits(self, model)
        fork = [x.device] if x.device.type == "cuda" else []
        with torch.enable_grad(), attack_mode(model, self.train_mode), torch.random.fork_rng(devices=fork), \
                contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(seed)
            apgd = APGDAttack(target, n_iter=self.steps, norm="Linf", n_restarts=1, eps=self.eps, seed=seed,
                              loss="ce", device=x.device)
            apgd.init_hyperparam(x)
            apgd.loss, apgd.ce_loss_targeted = "ce-targeted", target.loss     # its slot for a supplied loss
            x_best = apgd.attack_single_run(x, y)[0]
        return x_best.detach().clamp(0, 1)

    def describe(self) -> str:
        return super().describe().replace(f"boosted PGD-{self.steps}", f"boosted APGD-{self.steps}") \
            .replace(f" step={self.step:g}", "")


@register_inner_attack("boosted")
def _boosted(cfg):
    frozen = None
    if cfg.boost_members:
        from rst.network.masks import load_tickets
        from rst.evaluation.r2s import R2S
        frozen = R2S(load_tickets(cfg.boost_members), keep_member_weights=True)
    kind = BoostedAPGD if cfg.boost_inner == "apgd" else BoostedPGD
    return kind(frozen, cfg.eps, cfg.alpha, cfg.steps, cfg.boost_wrong_class, train_mode=cfg.attack_bn_mode == "train")


__all__ = ["BoostedAPGD", "BoostedPGD", "ensemble_logits", "ensemble_loss", "weighted_loss", "wrong_class_term"]
