"""White-box attacks in [0, 1] pixel space: FGSM, FGSM with random start, PGD (L∞ / L2), CW-L∞.

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

    >>> import rst, torch
    >>> from rst.evaluation.attacks import pgd, AttackConfig, run_attack
    >>> model = rst.build_network(rst.NetworkSpec("fmnist_conv4", dataset="fashion_mnist"), keep_ratio=0.5)
    >>> x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    >>> x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)        # (8, 1, 28, 28)
    >>> x_adv = run_attack(AttackConfig("pgd", steps=20), model, x, y)  # the same, from a config
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from rst.runtime.config import check_field_types, strict_from_dict
from rst.network.masked import cached_masks

# A user loss: (model, x_adv (B, ...), y (B,)) -> per-example loss to maximise, (B,).
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Loss = Union[str, LossFn]

# --------------------------------------------------------------------------------------------
# Losses: per-example, to be maximised
# --------------------------------------------------------------------------------------------


def _ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per example, (B,)."""
    return F.cross_entropy(logits, y, reduction="none")


def _margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin on logits, ``max_{j != y} z_j - z_y`` per example, (B,).

    Positive exactly when the example is misclassified.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)                                   # (B,)
    is_true = F.one_hot(y, logits.shape[1]).bool()                                   # (B, K)
    z_other = logits.masked_fill(is_true, float("-inf")).amax(dim=1)                # (B,)
    return z_other - z_y


_LOGIT_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": _ce_loss,
    "cw": _margin_loss,
}

# An objective returns (per-example loss (B,), per-example "misclassified" (B,) bool or None).
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, Union[torch.Tensor, None]]]


def _objective(loss: Loss) -> Objective:
    if callable(loss):
        def user_objective(model, x, y):
            value = loss(model, x, y)
            if not isinstance(value, torch.Tensor) or value.shape != (x.shape[0],):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"a loss callable must return a per-example loss of shape ({x.shape[0]},), "
                                 f"got {shape}")
            return value, None
        return user_objective
    if loss not in _LOGIT_LOSSES:
        raise ValueError(f"loss must be one of {sorted(_LOGIT_LOSSES)} or a callable "
                         f"loss(model, x_adv, y) -> (B,), got {loss!r}")
    per_example = _LOGIT_LOSSES[loss]

    def logit_objective(model, x, y):
        logits = model(x)                                                            # (B, K)
        return per_example(logits, y), logits.argmax(dim=1) != y
    return logit_objective


# --------------------------------------------------------------------------------------------
# Threat models: random start, ascent step, projection (per example)
# --------------------------------------------------------------------------------------------


def _per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (B,) tensor to broadcast against ``x`` (B, ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def _linf_start(x, eps, generator):
    return torch.empty_like(x).uniform_(-eps, eps, generator=generator)


def _linf_step(grad):
    return grad.sign()


def _linf_project(x_adv, x, eps):
    # torchattacks' order: clamp the perturbation, then the image.
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0, max=1)


def _l2_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(p=2, dim=1)                                             # (B,)


def _l2_start(x, eps, generator):
    # Uniform in the L2 ball: uniform direction, radius eps * u^(1/d).
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / _per_example(_l2_norm(direction).clamp_min(1e-12), x)
    u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
    radius = eps * u.pow(1.0 / x[0].numel())
    return direction * _per_example(radius, x)


def _l2_step(grad):
    return grad / _per_example(_l2_norm(grad).clamp_min(1e-12), grad)


def _l2_project(x_adv, x, eps):
    delta = x_adv - x
    norm = _l2_norm(delta)
    factor = torch.where(norm > eps, eps / norm.clamp_min(1e-12), torch.ones_like(norm))
    # Clamping to [0, 1] after the projection only shrinks |delta| coordinate-wise.
    return torch.clamp(x + delta * _per_example(factor, x), min=0, max=1)


@dataclass(frozen=True)
class _Norm:
    label: str
    start: Callable[[torch.Tensor, float, "torch.Generator | None"], torch.Tensor]
    step: Callable[[torch.Tensor], torch.Tensor]
    project: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


NORMS: dict[str, _Norm] = {
    "linf": _Norm("Linf", _linf_start, _linf_step, _linf_project),
    "l2": _Norm("L2", _l2_start, _l2_step, _l2_project),
}

# --------------------------------------------------------------------------------------------
# Model mode and mask cache
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def attack_mode(model: nn.Module, train_mode: bool = False) -> Iterator[nn.Module]:
    """Run the body with ``model.train(train_mode)`` and cached masks; restore every submodule's mode.

    Example:
        >>> with attack_mode(model, train_mode=True):   # BN batch statistics, running stats updated
        ...     logits = model(x)
    """
    with model_mode(model, train_mode), cached_masks(model):
        yield model


@contextlib.contextmanager
def model_mode(model: nn.Module, train_mode: bool = False) -> Iterator[nn.Module]:
    """Run the body with ``model.train(train_mode)``; restore every submodule's own mode afterwards."""
    modes = [m.training for m in model.modules()]
    model.train(train_mode)
    try:
        yield model
    finally:
        for module, was_training in zip(model.modules(), modes):
            module.training = was_training


def check_pixel_range(x: torch.Tensor) -> None:
    """Refuse ``x`` outside [0, 1] pixel space (ValueError): the model normalises its inputs itself.

    It reads x's minimum and maximum, so on a GPU it waits for the device (one synchronisation).
    Every attack calls it unless told ``check_range=False``: a caller that attacks many batches of
    one source (a data set, an evaluation's images) checks that source once and passes
    ``check_range=False`` for its batches (crops with zero padding and flips stay in range).

    Example:
        >>> check_pixel_range(x_test)                                 # once
        >>> x_adv = pgd(model, x_test[:512], y_test[:512], 8/255, 2/255, 20, check_range=False)
    """
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        lo, hi = torch.stack([lo, hi]).tolist()                   # one read of the device, not two
        if lo < 0 or hi > 1:
            raise ValueError("x must be in [0, 1] pixel space (the model normalises its inputs itself); "
                             f"got values in [{lo:.3g}, {hi:.3g}]")


def _check_inputs(x: torch.Tensor, y: torch.Tensor, eps: float, generator: torch.Generator | None,
                  check_range: bool = True) -> None:
    """Shapes, eps and the generator's device (no device synchronisation); x's range when ``check_range``."""
    if x.dim() < 2 or y.shape != (x.shape[0],):
        raise ValueError(f"expected x of shape (B, ...) and y of shape (B,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if check_range:
        check_pixel_range(x)
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, x on {x.device}: create it with "
                         f"torch.Generator(device=x.device)")


# --------------------------------------------------------------------------------------------
# The attacks
# --------------------------------------------------------------------------------------------


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
        x_adv = torch.where(_per_example(active, x), x_new, x_adv) if early_stop else x_new
    return x_adv.detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int, *,
        norm: str = "linf", random_start: bool = True, restarts: int = 1, early_stop: bool = False,
        loss: Loss = "ce", train_mode: bool = False, generator: torch.Generator | None = None,
        check_range: bool = True) -> torch.Tensor:
    r"""PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083] (Madry et al., ICLR 2018).

    Distance Measure : Linf (sign step, clamp) or L2 (normalised-gradient step, projection onto the
    ball). The paper's evaluation (Fu et al. 2021, spec §3) is PGD-20, eps=8/255, alpha=2/255,
    one random start, Linf, model in eval mode; its search's inner attack is PGD-7 with BN in train
    mode (``train_mode=True``).

    Arguments:
        model (nn.Module): model to attack; takes inputs in [0, 1] and returns logits (B, K).
        x (Tensor): clean inputs in [0, 1]. y (Tensor): true labels.
        eps (float): radius of the threat model, in pixel units.
        alpha (float): step size (Linf: per coordinate; L2: length of the step).
        steps (int): number of steps (0 returns the random start).
        norm (str): "linf" or "l2". (Default: "linf")
        random_start (bool): start uniformly at random in the eps-ball (per example for L2),
            clamped to [0, 1]; False starts at x. (Default: True)
        restarts (int): independent random starts; per example, keep a restart that misclassifies
            if any does (the one with the highest loss among those), else the one with the highest
            loss. Needs ``random_start=True`` when > 1. (Default: 1)
        early_stop (bool): the reference code's early stop: an example is frozen as soon as it is
            misclassified at the current point (before a step). Off by default: inflates transfer
            rates when the adversarial examples are used on another model (spec §4). (Default: False)
        loss (str | callable): "ce" (cross-entropy), "cw" (margin ``max_{j≠y} z_j − z_y`` on logits),
            or ``loss(model, x_adv, y) -> (B,)`` to maximise (e.g. an expectation over R2S members;
            the members should be submodules of ``model`` so mask caching and mode handling reach
            them, and the callable must not change masks). With a callable, ``early_stop`` is
            undefined (ValueError) and restarts keep the highest loss. (Default: "ce")
        train_mode (bool): run the model in train mode (BN batch statistics; running statistics are
            updated by every forward, including the one that compares restarts). (Default: False)
        generator (torch.Generator | None): RNG for the random starts, on x's device; None uses
            torch's global RNG. (Default: None)
        check_range (bool): refuse x outside [0, 1] (:func:`check_pixel_range`, one device
            synchronisation); False when the caller checked x's source once. (Default: True)

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - y: :math:`(B)` class indices. - output: :math:`(B, C, H, W)`.

    Examples::
        >>> x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=20)
        >>> x_adv = pgd(model, x, y, eps=0.5, alpha=0.1, steps=20, norm="l2", restarts=5,
        ...             generator=torch.Generator().manual_seed(0))
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 needs random_start=True (every restart would be identical)")
    if early_stop and callable(loss):
        raise ValueError("early_stop needs a logit loss ('ce' or 'cw'): with a loss callable, "
                         "'misclassified' is undefined")
    _check_inputs(x, y, eps, generator, check_range)
    objective = _objective(loss)
    threat = NORMS[norm]
    with torch.enable_grad(), attack_mode(model, train_mode):
        best = best_loss = best_fooled = None
        for _ in range(restarts):
            x_adv = _pgd_once(model, x, y, objective, eps, alpha, steps, threat, random_start, early_stop, generator)
            if restarts == 1:
                return x_adv
            with torch.no_grad():
                loss_r, fooled_r = objective(model, x_adv, y)
            if fooled_r is None:
                fooled_r = torch.zeros_like(loss_r, dtype=torch.bool)
            if best is None:
                best, best_loss, best_fooled = x_adv, loss_r, fooled_r
                continue
            # Lexicographic (misclassified, loss): an adversarial restart wins, then the higher loss.
            better = (fooled_r & ~best_fooled) | ((fooled_r == best_fooled) & (loss_r > best_loss))
            best = torch.where(_per_example(better, x), x_adv, best)
            best_loss = torch.where(better, loss_r, best_loss)
            best_fooled = best_fooled | fooled_r
        return best


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
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {self.norm!r}")
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
