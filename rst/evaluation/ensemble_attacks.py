"""Attacks on randomized ensembles: a model that answers each query with member ``k`` drawn with
probability ``p_k`` (R2S is one, with uniform ``p``). What such a defence is worth is its *expected*
accuracy ``sum_k p_k 1[f_k(x_adv) = y]``, so every attack here keeps, per example, the point that
minimises that expected accuracy, scored by every member on the adversarial input itself.

    arc              ARC (Dbouk & Shanbhag, ICML 2022, "Adversarial Vulnerability of Randomized
                     Ensembles", arXiv:2206.06737): steps toward each member's closest linearised
                     decision boundary in turn, most probable member first, and keeps a step only
                     if it does not raise the expected accuracy. L-inf and L2.
    apgd_expectation APGD-CE / APGD-DLR (Croce & Hein, ICML 2020, arXiv:2003.01690; their
                     ``pyautoattack`` loop) on the expected loss ``sum_k p_k L(f_k(x), y)``.

Why both: PGD on the expected loss (what EOT and ``rst.evaluation.r2s``'s "expectation" attack do) can give a
false sense of security against a random switch — the loss is maximised where no single member is
fooled (Dbouk & Shanbhag §3); ARC searches for the points that fool the likely members instead.
And an attack run on the *combined* model must not decide success on the combined model:
torchattacks-style wrappers return the clean input wherever the mean model is not fooled, so the
members end up scored on clean inputs. ``apgd_expectation`` therefore tracks every iterate's
expected accuracy itself.

A randomized ensemble here is any ``nn.Module`` with ``K``, ``member_logits(x) -> (K, B, C)`` and a
``use_member(k)`` context (``rst.evaluation.r2s.R2S``), optionally ``member_probs`` (a (K,) sequence; default
uniform). Inputs in [0, 1] pixel space; the model is run in eval mode (mode restored).

    >>> x_adv = arc(r2s, x, y, eps=0.1)                                  # L-inf, 10 iterations
    >>> x_adv = apgd_expectation(r2s, x, y, eps=0.1, loss="dlr")
    >>> expected_accuracy(r2s, x_adv, y).mean()
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model_modes import model_mode
from .threat_models import NORMS, check_norm, per_example

APGD_LOSSES = ("ce", "dlr")


def _check_ensemble(model: nn.Module) -> int:
    """The number of members ``K`` of a randomized ensemble; TypeError for any other model."""
    if not (hasattr(model, "member_logits") and hasattr(model, "use_member") and hasattr(model, "K")):
        raise TypeError("a randomized ensemble needs K, member_logits(x) and use_member(k) "
                        f"(e.g. rst.evaluation.r2s.R2S); got {type(model).__name__}")
    return int(model.K)


def member_probs(model: nn.Module, probs: Sequence[float] | torch.Tensor | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The sampling probabilities ``(K,)`` float32: ``probs``, else ``model.member_probs``, else uniform."""
    K = _check_ensemble(model)
    if probs is None:
        probs = getattr(model, "member_probs", None)
    p = torch.full((K,), 1.0 / K) if probs is None else torch.as_tensor(probs, dtype=torch.float32).flatten()
    if p.shape != (K,) or not torch.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"probs must be {K} non-negative numbers with a positive sum, got {p.tolist()}")
    return (p / p.sum()).to(device=device, dtype=torch.float32)


@torch.no_grad()
def expected_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      probs: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """``sum_k p_k 1[argmax f_k(x) = y]`` per example, (B,) float on x's device."""
    p = member_probs(model, probs, x.device)
    correct = model.member_logits(x).argmax(-1) == y.unsqueeze(0)                 # (K, B)
    return (p.unsqueeze(1) * correct.float()).sum(0)


def _lp(v: torch.Tensor, p: float) -> torch.Tensor:
    """Per-example Lp norm, (B,)."""
    return v.flatten(1).norm(p=p, dim=1)                                               # (B,)


# --------------------------------------------------------------------------------------------
# ARC
# --------------------------------------------------------------------------------------------


def _closest_boundary(model, k: int, u: torch.Tensor, norm: str, topk: int | None):
    """Member ``k``'s closest linearised decision boundary at ``u`` (Dbouk & Shanbhag, Alg. 1).

    Returns ``zeta`` (B,) its distance, ``g`` the unit-norm step toward it (sign for L-inf), and
    ``g_dual`` (``w / ||w||_q``, the vector whose inner product with a step measures progress
    toward the boundary; ``g`` itself for L2).
    """
    u = u.detach().requires_grad_(True)
    with model.use_member(k):
        z = model(u)                                                                  # (B, C)
    B, C = z.shape
    if topk is None:
        top = z.detach().argsort(dim=1, descending=True)                               # (B, C)
    else:
        top = z.detach().topk(min(int(topk), C), dim=1).indices
    yhat, others = top[:, 0], top[:, 1:]                                              # (B,), (B, M)
    eye = torch.eye(C, device=z.device, dtype=z.dtype)
    # grad_outputs (M, B, C): row r differentiates z_yhat - z_{others[:, r]}
    grad_out = (eye[yhat].unsqueeze(0) - eye[others.T]).contiguous()
    w, = torch.autograd.grad(z, u, grad_outputs=grad_out, is_grads_batched=True)      # (M, B, ...)
    with torch.no_grad():
        diff = (z.gather(1, yhat[:, None]) - z.gather(1, others)).T.abs()             # (M, B)
        q = 1.0 if norm == "linf" else 2.0                                             # dual norm
        wn = w.flatten(2).norm(p=q, dim=2)                                             # (M, B)
        zeta_all = diff / (wn + 1e-10)
        j = zeta_all.argmin(0)                                                         # (B,)
        ar = torch.arange(B, device=u.device)
        zeta, wj, wnj = zeta_all[j, ar], w[j, ar], wn[j, ar]                           # (B,), (B, ...), (B,)
        g_dual = -wj / per_example(wnj + 1e-10, wj)
        g = -wj.sign() if norm == "linf" else g_dual
    return zeta, g, g_dual


@dataclass(frozen=True, eq=False)
class _ArcSetting:
    """What every ARC step reads: the ensemble, the clean batch, ``p``, the member order and the step rule."""
    model: nn.Module
    x: torch.Tensor                  # (B, ...) clean inputs, detached
    y: torch.Tensor                  # (B,)
    p: torch.Tensor                  # (K,) sampling probabilities
    order: list[int]                 # members, most probable first (ties: lower index first)
    eps: float
    norm: str
    step: float                      # the local radius
    rho: float
    topk: int | None

    def expected_acc(self, u: torch.Tensor) -> torch.Tensor:
        """The expected accuracy of ``u`` under ``p``, (B,)."""
        return expected_accuracy(self.model, u, self.y, self.p)

    def project(self, u: torch.Tensor) -> torch.Tensor:
        """``u`` back into the eps-ball around the clean batch and [0, 1]."""
        return NORMS[self.norm].project(u, self.x, self.eps)


def _arc_setting(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, steps: int,
                 step_size: float | None, probs: Sequence[float] | None, topk: int | None, rho: float) -> _ArcSetting:
    """Check ARC's arguments and gather its setting (``step_size=None`` is ``eps / 4``)."""
    K = _check_ensemble(model)
    check_norm(norm)
    if steps < 0 or eps < 0:
        raise ValueError(f"need steps >= 0 and eps >= 0, got steps={steps}, eps={eps}")
    if topk is not None and topk < 2:
        raise ValueError(f"topk must be >= 2 (the predicted class and at least one other), got {topk}")
    step = eps / 4 if step_size is None else float(step_size)
    p = member_probs(model, probs, x.device)
    order = sorted(range(K), key=lambda k: (-float(p[k]), k))
    return _ArcSetting(model, x.detach(), y, p, order, eps, norm, step, rho, topk)


def _keep_not_worse(new: torch.Tensor, acc_new: torch.Tensor, old: torch.Tensor,
                    acc_old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, ``new`` where its expected accuracy is not above ``old``'s, else ``old``; and the lower accuracy."""
    keep = acc_new <= acc_old
    return torch.where(per_example(keep, new), new, old), torch.minimum(acc_old, acc_new)


def _member_step(s: _ArcSetting, local: torch.Tensor, zeta: torch.Tensor, g: torch.Tensor, g_dual: torch.Tensor,
                 first: bool) -> torch.Tensor:
    """The local step moved toward one member's boundary (Alg. 1's ``beta``), renormalised to norm ``step``."""
    beta = torch.full_like(zeta, s.step)
    if not first:
        progress = (g_dual * local).flatten(1).sum(1)                                 # (B,)
        beta_c = s.step / (s.step - zeta + 1e-10) * (zeta - progress).abs() + s.rho * s.eps
        beta = torch.where(zeta < s.step, beta_c, beta)
    hat = local + per_example(beta, s.x) * g
    p_norm = float("inf") if s.norm == "linf" else 2.0
    return s.step * hat / per_example(_lp(hat, p_norm) + 1e-10, s.x)


def _arc_local_step(s: _ArcSetting, best: torch.Tensor, acc_best: torch.Tensor) -> torch.Tensor:
    """One iteration's local step around ``best``: each member in turn, its move kept if not worse."""
    local = torch.zeros_like(s.x)
    acc_local = acc_best.clone()
    for rank, k in enumerate(s.order):
        zeta, g, g_dual = _closest_boundary(s.model, k, torch.clamp(best + local, 0, 1), s.norm, s.topk)
        with torch.no_grad():
            hat = _member_step(s, local, zeta, g, g_dual, first=rank == 0)
            local, acc_local = _keep_not_worse(hat, s.expected_acc(s.project(best + hat)), local, acc_local)
    return local


def _arc_iteration(s: _ArcSetting, best: torch.Tensor, acc_best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One ARC iteration: the local step, its projected point kept per example if not worse than ``best``."""
    local = _arc_local_step(s, best, acc_best)
    with torch.no_grad():
        cand = s.project(best + local)
        return _keep_not_worse(cand, s.expected_acc(cand), best, acc_best)


def arc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf",
        steps: int = 10, step_size: float | None = None, probs: Sequence[float] | None = None,
        topk: int | None = None, random_start: bool = False, rho: float = 0.05,
        generator: torch.Generator | None = None) -> torch.Tensor:
    r"""ARC in the paper 'Adversarial Vulnerability of Randomized Ensembles'
    [https://arxiv.org/abs/2206.06737] (Dbouk & Shanbhag, ICML 2022), Algorithm 1.

    Distance Measure : Linf or L2. Threat model: a defender that answers with member ``k`` with probability
    ``p_k``; the attacker knows every member and ``p`` and minimises the expected accuracy. Each of ``steps``
    iterations builds a local step of norm ``step_size`` around the current best point: for every member, most
    probable first (ties: lower index first), linearise it at the current point, take the unit step toward its
    closest decision boundary (from its *predicted* class), scaled so that it does not undo the previous
    members' progress (``beta = step/(step - zeta) |zeta - <g, delta>| + rho eps`` when the boundary is closer
    than ``step``), renormalise the local step to norm ``step`` and keep it only if the expected accuracy of the
    projected point does not rise. The iteration's point replaces the best one under the same rule.
    Linearisation points are clamped to [0, 1] (the model's domain).

    Arguments:
        model (nn.Module): a randomized ensemble (``K``, ``member_logits``, ``use_member``).
        x (Tensor): clean inputs in [0, 1]. y (Tensor): true labels.
        eps (float): radius. norm (str): "linf" or "l2". (Default: "linf")
        steps (int): iterations (the paper's K). (Default: 10, the authors' setting)
        step_size (float | None): the local radius (the paper's eta / beta_m); None means ``eps / 4``
            (the authors' 2/255 at eps = 8/255). A larger step reaches farther boundaries per
            iteration (``step_size=eps`` is the paper's choice for linear members).
        probs (sequence | None): sampling probabilities (default: the model's, else uniform).
        topk (int | None): "ARC-lite": only the ``topk - 1`` runner-up classes' boundaries
            (None: all C - 1, the paper's default). (Default: None)
        random_start (bool): start uniformly in the ball (the authors' default: off). (Default: False)
        rho (float): the margin past a boundary, as a fraction of eps. (Default: 0.05)
        generator (torch.Generator | None): RNG of the random start, on x's device.

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)`. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = arc(r2s, x, y, eps=0.1)                        # L-inf, 10 iterations of eps/4
        >>> x_adv = arc(r2s, x, y, eps=1.0, norm="l2", steps=20, topk=3)
    """
    s = _arc_setting(model, x, y, eps, norm, steps, step_size, probs, topk, rho)
    with model_mode(model, False), torch.enable_grad():
        best = s.x.clone()
        if random_start:
            best = torch.clamp(best + NORMS[norm].start(s.x, eps, generator), 0, 1)
        acc_best = s.expected_acc(best)
        for _ in range(steps):
            best, acc_best = _arc_iteration(s, best, acc_best)
    return best.detach()


# --------------------------------------------------------------------------------------------
# APGD on the expected loss
# --------------------------------------------------------------------------------------------


class _ExpectationTarget(nn.Module):
    """What APGD attacks: returns every member's logits flattened to (B, K * C), and records, per
    example, the queried point with the lowest expected accuracy (the members score the very
    input APGD queried; ties keep the earlier point)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, p: torch.Tensor):
        super().__init__()
        self.model, self.y, self.p = model, y, p
        self.best = x.detach().clone()
        self.best_acc = expected_accuracy(model, x, y, p)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = self.model.member_logits(u)                                                # (K, B, C)
        K, B, C = z.shape
        if B == len(self.y):
            with torch.no_grad():
                acc = (self.p.unsqueeze(1) * (z.argmax(-1) == self.y).float()).sum(0)
                better = acc < self.best_acc
                self.best = torch.where(per_example(better, u), u.detach(), self.best)
                self.best_acc = torch.where(better, acc, self.best_acc)
        return z.permute(1, 0, 2).reshape(B, K * C)

    def expected(self, per_member_loss):
        """``loss(flat logits (B, K*C), y) = sum_k p_k per_member_loss(f_k, y)``, (B,)."""
        K = len(self.p)

        def loss(flat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            z = flat.view(flat.shape[0], K, -1)
            return sum(self.p[k] * per_member_loss(z[:, k], y) for k in range(K))
        return loss


def _check_apgd_args(model: nn.Module, loss: str, norm: str, steps: int, restarts: int) -> None:
    """Refuse a model that is no randomized ensemble, an unknown loss or norm, steps or restarts < 1."""
    _check_ensemble(model)
    if loss not in APGD_LOSSES:
        raise ValueError(f"loss must be one of {APGD_LOSSES}, got {loss!r}")
    check_norm(norm)
    if steps < 1 or restarts < 1:
        raise ValueError(f"need steps >= 1 and restarts >= 1, got steps={steps}, restarts={restarts}")


@contextlib.contextmanager
def _seeded_quiet_eval(model: nn.Module, device: torch.device, seed: int) -> Iterator[None]:
    """Eval mode, torch's global RNG seeded with ``seed`` (restored afterwards), pyautoattack silenced."""
    fork = [device] if device.type == "cuda" else []
    with model_mode(model, False), torch.random.fork_rng(devices=fork), \
            warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")          # pyautoattack's zero-gradient note (reported via accuracy)
        torch.manual_seed(seed)
        yield


def _use_expected_loss(apgd, target: _ExpectationTarget, loss: str) -> None:
    """Make pyautoattack's APGD ascend the expected ``loss`` ("ce" or "dlr") over the members."""
    if loss == "ce":
        # APGD picks its criterion by name; its 'ce-targeted' slot calls a method we can supply
        apgd.loss = "ce-targeted"
        apgd.ce_loss_targeted = target.expected(lambda z, t: F.cross_entropy(z, t, reduction="none"))
    else:
        apgd.dlr_loss = target.expected(type(apgd).dlr_loss.__get__(apgd))


def apgd_expectation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, loss: str = "ce",
                     norm: str = "linf", steps: int = 100, restarts: int = 1,
                     probs: Sequence[float] | None = None, seed: int = 0, rho: float = 0.75) -> torch.Tensor:
    r"""APGD on the expected loss over the members of a randomized ensemble, from the paper
    'Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks' [https://arxiv.org/abs/2003.01690] (Croce & Hein, ICML 2020), run through the authors'
    ``pyautoattack`` APGD loop (step-size halving at checkpoints, momentum 0.75).

    Distance Measure : Linf or L2. Objective: ``sum_k p_k CE(f_k(x), y)`` ("ce") or
    ``sum_k p_k DLR(f_k(x), y)`` ("dlr", Croce & Hein's difference-of-logits ratio). The returned
    point is, per example, the queried iterate (over all restarts, the clean input included) with
    the lowest *expected accuracy*, every member scoring that very input — never the clean image
    because a combined model was not fooled.

    Arguments:
        model (nn.Module): a randomized ensemble (``K``, ``member_logits``, ``use_member``).
        x (Tensor): clean inputs in [0, 1]. y (Tensor): true labels.
        eps (float): radius. loss (str): "ce" or "dlr". (Default: "ce")
        norm (str): "linf" or "l2". (Default: "linf")
        steps (int): APGD iterations per restart. (Default: 100, as in AutoAttack)
        restarts (int): random restarts. (Default: 1)
        probs (sequence | None): sampling probabilities (default: the model's, else uniform).
        seed (int): seeds the random starts (torch's global RNG, restored afterwards). (Default: 0)
        rho (float): APGD's step-size decrease threshold. (Default: 0.75)

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)`. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = apgd_expectation(r2s, x, y, eps=0.1)                    # APGD-CE, 100 steps
        >>> x_adv = apgd_expectation(r2s, x, y, eps=0.1, loss="dlr", restarts=3)
    """
    from pyautoattack.autopgd_base import APGDAttack

    _check_apgd_args(model, loss, norm, steps, restarts)
    x, y = x.detach(), y.detach()
    p = member_probs(model, probs, x.device)
    with _seeded_quiet_eval(model, x.device, seed):
        target = _ExpectationTarget(model, x, y, p)
        apgd = APGDAttack(target, n_iter=steps, norm=NORMS[norm].label, n_restarts=1, eps=eps, seed=seed,
                          loss="dlr", rho=rho, device=x.device)
        apgd.init_hyperparam(x)
        _use_expected_loss(apgd, target, loss)
        for _ in range(restarts):
            apgd.attack_single_run(x, y)
    return target.best.detach()


__all__ = ["APGD_LOSSES", "apgd_expectation", "arc", "expected_accuracy", "member_probs"]
