"""The PGD family of white-box attacks: PGD (L∞ / L2, restarts), FGSM, FGSM with random start, CW-L∞.

Each is a function of ``(model, x, y)`` returning ``x_adv`` (detached, same shape) with
``||x_adv - x||_p <= eps`` in [0, 1]; the conventions they share (input gradients only, model mode,
randomness through ``generator``) are those of :mod:`rst.evaluation.attacks`, which also holds the
registry that runs them from an :class:`rst.evaluation.attacks.AttackConfig`.

    >>> x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)        # (B, C, H, W)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .attack_inputs import check_attack_inputs
from .attack_objectives import Loss, Objective, attack_objective
from .model_modes import attack_mode
from .threat_models import NORMS, _Norm, check_norm, per_example

# A restart's per-example score: (loss (B,), misclassified (B,) bool).
Score = tuple[torch.Tensor, torch.Tensor]


def _pgd_once(model, x, y, objective, eps, alpha, steps, norm: _Norm, random_start, early_stop, generator):
    """One PGD run from one start; returns x_adv (B, ...)."""
    x_adv = x.detach().clone()
    if random_start:
        x_adv = torch.clamp(x_adv + norm.start(x, eps, generator), min=0, max=1)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)   # (B,) still being perturbed
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss, misclassified = objective(model, x_adv, y)
        grad, = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = x_adv.detach()
        if early_stop:
            # The reference code's early stop: an example fooled at the current point is frozen.
            active = active & ~misclassified
            if not active.any():
                break
        x_new = norm.project(x_adv + alpha * norm.step(grad), x, eps)
        x_adv = torch.where(per_example(active, x), x_new, x_adv) if early_stop else x_new
    return x_adv.detach()


def _check_pgd_args(norm: str, steps: int, restarts: int, random_start: bool, early_stop: bool, loss: Loss) -> None:
    """Refuse an unknown norm, steps < 0, restarts < 1, identical restarts and an early stop without logits."""
    check_norm(norm)
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs random_start=True (every restart would be identical)")
    if early_stop and callable(loss):
        raise ValueError("early_stop needs a logit loss ('ce' or 'cw'): with a loss callable, "
                         "'misclassified' is undefined")


def _restart_score(objective: Objective, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> Score:
    """A restart's per-example (loss, misclassified) without gradient; never misclassified for a callable."""
    with torch.no_grad():
        loss, fooled = objective(model, x_adv, y)
    if fooled is None:
        fooled = torch.zeros_like(loss, dtype=torch.bool)
    return loss, fooled


def _keep_better_restart(best: torch.Tensor, best_score: Score, x_adv: torch.Tensor,
                         score: Score) -> tuple[torch.Tensor, Score]:
    """Per example, the better of two restarts in the order (misclassified, loss), and the merged score."""
    (best_loss, best_fooled), (loss_r, fooled_r) = best_score, score
    # Lexicographic (misclassified, loss): an adversarial restart wins, then the higher loss.
    better = (fooled_r & ~best_fooled) | ((fooled_r == best_fooled) & (loss_r > best_loss))
    best = torch.where(per_example(better, x_adv), x_adv, best)
    return best, (torch.where(better, loss_r, best_loss), best_fooled | fooled_r)


def _pgd_restarts(model, x, y, objective, eps, alpha, steps, norm: _Norm, random_start, early_stop, generator,
                  restarts):
    """``restarts`` PGD runs; per example, the best one by (misclassified, loss) (a single run as it is)."""
    best = best_score = None
    for _ in range(restarts):
        x_adv = _pgd_once(model, x, y, objective, eps, alpha, steps, norm, random_start, early_stop, generator)
        if restarts == 1:
            return x_adv
        score = _restart_score(objective, model, x_adv, y)
        if best is None:
            best, best_score = x_adv, score
            continue
        best, best_score = _keep_better_restart(best, best_score, x_adv, score)
    return best


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int, *,
        norm: str = "linf", random_start: bool = True, restarts: int = 1, early_stop: bool = False,
        loss: Loss = "ce", train_mode: bool = False, generator: torch.Generator | None = None,
        check_range: bool = True) -> torch.Tensor:
    r"""PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083] (Madry et al., ICLR 2018).

    Distance Measure : Linf (sign step, clamp) or L2 (normalised-gradient step, projection onto the ball). The
    paper's evaluation (Fu et al. 2021, spec §3) is PGD-20, eps=8/255, alpha=2/255, one random start, Linf, model
    in eval mode; its search's inner attack is PGD-7 with BN in train mode (``train_mode=True``).

    Arguments:
        model (nn.Module): model to attack; takes inputs in [0, 1] and returns logits (B, K).
        x (Tensor): clean inputs in [0, 1]. y (Tensor): true labels.
        eps (float): threat radius, in pixel units. alpha (float): step size (Linf: per coordinate; L2: length).
        steps (int): number of steps (0 returns the random start). norm (str): "linf" or "l2". (Default: "linf")
        random_start (bool): start uniformly at random in the eps-ball (per example for L2), clamped to [0, 1];
            False starts at x. (Default: True)
        restarts (int): independent random starts; per example, keep a restart that misclassifies if any does (the
            one with the highest loss among those), else the one with the highest loss. Needs ``random_start=True``
            when > 1. (Default: 1)
        early_stop (bool): the reference code's early stop: an example is frozen as soon as it is misclassified at
            the current point (before a step). Off by default: inflates transfer rates when the adversarial examples
            are used on another model (spec §4). (Default: False)
        loss (str | callable): "ce" (cross-entropy), "cw" (margin ``max_{j≠y} z_j − z_y`` on logits), or
            ``loss(model, x_adv, y) -> (B,)`` to maximise (e.g. an expectation over R2S members; the members should
            be submodules of ``model`` so mask caching and mode handling reach them, and the callable must not
            change masks). With a callable, ``early_stop`` is undefined (ValueError) and restarts keep the highest
            loss. (Default: "ce")
        train_mode (bool): run the model in train mode (BN batch statistics; running statistics are updated by every
            forward, including the one that compares restarts). (Default: False)
        generator (torch.Generator | None): RNG for the random starts, on x's device; None uses torch's global RNG.
            (Default: None)
        check_range (bool): refuse x outside [0, 1] (:func:`check_pixel_range`, one device synchronisation); False
            when the caller checked x's source once. (Default: True)

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)` class indices. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)
        >>> x_adv = pgd(model, x, y, eps=0.5, alpha=0.1, steps=20, norm="l2", restarts=5,
        ...             generator=torch.Generator().manual_seed(0))
    """
    _check_pgd_args(norm, steps, restarts, random_start, early_stop, loss)
    check_attack_inputs(x, y, eps, generator, check_range)
    objective = attack_objective(loss)
    with torch.enable_grad(), attack_mode(model, train_mode):
        return _pgd_restarts(model, x, y, objective, eps, alpha, steps, NORMS[norm], random_start, early_stop,
                             generator, restarts)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, loss: Loss = "ce",
         train_mode: bool = False, check_range: bool = True) -> torch.Tensor:
    r"""FGSM in the paper 'Explaining and Harnessing Adversarial Examples'
    [https://arxiv.org/abs/1412.6572] (Goodfellow et al., ICLR 2015).

    Distance Measure : Linf. One step ``x + eps * sign(grad)``, clamped to [0, 1]. One of the inner
    attacks studied by Fu et al. 2021 for the search.

    Arguments:
        model (nn.Module): model to attack. x, y: inputs in [0, 1] and labels.
        eps (float): maximum perturbation.
        loss (str | callable): as in :func:`pgd`. (Default: "ce")
        train_mode, check_range: as in :func:`pgd`.

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)`. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = fgsm(model, x, y, eps=8/255)
    """
    return pgd(model, x, y, eps, alpha=eps, steps=1, random_start=False, loss=loss, train_mode=train_mode,
               check_range=check_range)


def fgsm_rs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float | None = None, *,
            loss: Loss = "ce", train_mode: bool = False, generator: torch.Generator | None = None,
            check_range: bool = True) -> torch.Tensor:
    r"""FGSM with random start in the paper 'Fast is better than free: Revisiting adversarial training'
    [https://arxiv.org/abs/2001.03994] (Wong et al., ICLR 2020).

    Distance Measure : Linf. Start uniformly in the eps-ball (clamped to [0, 1]), take one step
    ``alpha * sign(grad)``, project back onto the eps-ball and [0, 1]. One of the inner attacks
    studied by Fu et al. 2021 for the search.

    Arguments:
        model (nn.Module): model to attack. x, y: inputs in [0, 1] and labels.
        eps (float): maximum perturbation.
        alpha (float | None): step size; None means ``1.25 * eps`` (Wong et al.). (Default: None)
        loss, train_mode, generator, check_range: as in :func:`pgd`.

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)`. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = fgsm_rs(model, x, y, eps=8/255, generator=torch.Generator().manual_seed(0))
    """
    alpha = 1.25 * eps if alpha is None else alpha
    return pgd(model, x, y, eps, alpha=alpha, steps=1, random_start=True, loss=loss,
               train_mode=train_mode, generator=generator, check_range=check_range)


def cw_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int, *,
            random_start: bool = True, restarts: int = 1, early_stop: bool = False, train_mode: bool = False,
            generator: torch.Generator | None = None, check_range: bool = True) -> torch.Tensor:
    r"""CW-Linf: PGD on the Carlini-Wagner margin loss, from 'Towards Evaluating the Robustness of
    Neural Networks' [https://arxiv.org/abs/1608.04644] (Carlini & Wagner, S&P 2017).

    Distance Measure : Linf. :func:`pgd` with ``loss="cw"``: maximises ``max_{j≠y} z_j − z_y`` on
    the logits, which is not saturated by a confident softmax (a cross-check of CE-PGD against
    gradient masking).

    Arguments:
        as :func:`pgd` (without ``norm`` and ``loss``).

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)`. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = cw_linf(model, x, y, eps=8/255, alpha=2/255, steps=20)
    """
    return pgd(model, x, y, eps, alpha, steps, norm="linf", random_start=random_start, restarts=restarts,
               early_stop=early_stop, loss="cw", train_mode=train_mode, generator=generator,
               check_range=check_range)


__all__ = ["cw_linf", "fgsm", "fgsm_rs", "pgd"]
