"""Evaluation attacks and attack suites: one interface for every per-image robustness number.

An evaluation attack (:class:`EvalAttack`) takes a model — a ticket, a dense network, or a
member-switching model such as R2S (anything with ``member_logits``) — and a batch, and returns
per-image scores (:func:`score`): 1 / 0, correct or not, for a plain model; the expected correctness
``sum_k p_k 1[f_k(x_adv) = y]`` for a switching model. A suite is a list of such attacks.

    worst_case(model, x, y, suite, batch_size)    per image, the minimum score over the suite, cumulative:
                                                  a later attack runs only where the score is still > 0
    attacked_correct(model, attack, x, y, bs)     (K, N) per-member correctness on one attack's examples
    accuracy_with_se(scores)                      the accuracy and its binomial standard error

The standard error and the paired interval of two models on the same images are those of
:mod:`rst.evaluation.per_image` (``standard_error``, ``paired_difference``).

    >>> suite = [PGDAttack(0.1, 0.025, 20, seed=0, name="pgd20")]
    >>> res = worst_case(model, x, y, suite, batch_size=256)
    >>> accuracy_with_se(res.correct)                   # (accuracy, SE)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from .attack_objectives import Loss
from .model_modes import model_mode
from .pgd_family import pgd
from .ensemble_attacks import expected_accuracy
from .per_image import standard_error


def is_switching(model: nn.Module) -> bool:
    """Whether ``model`` answers with one of several members (it has ``member_logits``, as R2S), and
    no member is fixed (inside ``R2S.use_member(k)`` it is the plain model member k)."""
    return hasattr(model, "member_logits") and getattr(model, "fixed_member", None) is None


@torch.no_grad()
def correct_per_member(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K, B) bool: member k classifies example b correctly; (1, B) for a plain model."""
    if is_switching(model):
        return model.member_logits(x).argmax(-1) == y.unsqueeze(0)
    return (model(x).argmax(-1) == y).unsqueeze(0)


@torch.no_grad()
def score(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image score (B,) float: 0/1 correctness of a plain model, expected correctness of a switching one."""
    if is_switching(model):
        return expected_accuracy(model, x_adv, y)
    return (model(x_adv).argmax(1) == y).float()


def correct_matrix(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                   tick: Callable[[], None] = lambda: None) -> torch.Tensor:
    """(K, N) bool on the CPU: :func:`correct_per_member` of every batch (``tick()`` after each)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch_size):
        out.append(correct_per_member(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu())
        tick()
    return _joined(model, out)


def _joined(model: nn.Module, parts: list[torch.Tensor]) -> torch.Tensor:
    """The (K, B_i) correctness of every batch side by side, (K, N); (K, 0) for no image."""
    return torch.cat(parts, dim=1) if parts else torch.zeros(model.K if is_switching(model) else 1, 0, dtype=torch.bool)


def accuracy_with_se(scores: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, standard error)`` of per-image scores (N,): their mean and its binomial SE."""
    p = float(scores.float().mean())
    return p, standard_error(p, len(scores))


# --------------------------------------------------------------------------------------------
# the attacks
# --------------------------------------------------------------------------------------------


class EvalAttack:
    """An evaluation attack: ``examples(model, x, y, batch_index) -> x_adv``; calling it scores them.

    ``session(model)`` frames one pass over the images (a fresh generator, a reseeded switch, where the
    attack wants them); ``whole_set`` attacks are given all images at once and batch them themselves.
    """
    name: str = "attack"
    whole_set: bool = False

    def describe(self, model: nn.Module | None = None) -> str:
        """A one-line description of the attack and its budget."""
        return self.name

    def session(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """The context of one pass over the images (nothing by default)."""
        return contextlib.nullcontext()

    def examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_index: int = 0) -> torch.Tensor:
        """The adversarial examples of one batch (same shape as ``x``)."""
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_index: int = 0) -> torch.Tensor:
        """Per-image scores (B,) of this attack's examples (:func:`score`)."""
        return score(model, self.examples(model, x, y, batch_index), y)


@dataclass(eq=False)
class PGDAttack(EvalAttack):
    """PGD (:func:`rst.evaluation.attacks.pgd`) with its random starts drawn from one of three streams.

    ``generator``: one given stream, shared by every pass (and by every attack that holds it); else
    ``seed``: a fresh generator from ``seed`` at each pass, or with ``batch_seed_stride`` > 0 a fresh
    one per batch from ``seed + batch_seed_stride * batch_index``.
    """
    eps: float
    alpha: float
    steps: int
    restarts: int = 1
    loss: Loss = "ce"
    generator: torch.Generator | None = None
    seed: int = 0
    batch_seed_stride: int = 0
    name: str = "pgd"
    description: str = ""
    _pass_generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def describe(self, model: nn.Module | None = None) -> str:
        return self.description or f"PGD-{self.steps} Linf eps={self.eps:.4g} alpha={self.alpha:.4g}"

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        device = next(model.parameters()).device
        self._pass_generator = torch.Generator(device=device).manual_seed(self.seed)
        yield

    def _stream(self, device: torch.device, batch_index: int) -> torch.Generator:
        """The generator of this batch's random starts."""
        if self.generator is not None:
            return self.generator
        if self.batch_seed_stride:
            return torch.Generator(device=device).manual_seed(self.seed + self.batch_seed_stride * batch_index)
        if self._pass_generator is None:
            self._pass_generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._pass_generator

    def examples(self, model, x, y, batch_index=0):
        return pgd(model, x, y, self.eps, self.alpha, self.steps, loss=self.loss,
                   generator=self._stream(x.device, batch_index), restarts=self.restarts)


@dataclass(eq=False)
class FunctionAttack(EvalAttack):
    """An attack given as a deterministic function ``fn(model, x, y) -> x_adv`` (e.g. ARC)."""
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    name: str = "attack"

    def examples(self, model, x, y, batch_index=0):
        return self.fn(model, x, y)


# --------------------------------------------------------------------------------------------
# running a suite
# --------------------------------------------------------------------------------------------


def _batches(idx: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    """Consecutive chunks of ``size`` indices."""
    for i in range(0, len(idx), size):
        yield idx[i:i + size]


def attacked_correct(model: nn.Module, attack: EvalAttack, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                     tick: Callable[[], None] = lambda: None) -> torch.Tensor:
    """(K, N) bool on the CPU: every member's correctness on ``attack``'s examples of every image
    (one session; consecutive batches, ``tick()`` after each; a ``whole_set`` attack sees all at once)."""
    device = next(model.parameters()).device
    with attack.session(model):
        if attack.whole_set:
            return correct_matrix(model, attack.examples(model, x, y, 0), y, batch_size)
        out = []
        for bi, b in enumerate(_batches(torch.arange(len(x)), batch_size)):
            xb, yb = x[b].to(device), y[b].to(device)
            out.append(correct_per_member(model, attack.examples(model, xb, yb, bi), yb).cpu())
            tick()
    return _joined(model, out)


@dataclass
class SuiteResult:
    """Per-image scores (N,) clean, in the worst case over the suite, and after each attack (cumulative);
    ``tracked``: the ``track`` of each image's worst input, (D, N) (None without a ``track``)."""
    clean: torch.Tensor
    correct: torch.Tensor
    after: dict[str, torch.Tensor]
    tracked: torch.Tensor | None = None


def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Per-image scores (N,) on the CPU (:func:`score`), in consecutive batches on the model's device."""
    device = next(model.parameters()).device
    parts = [score(model, x[b].to(device), y[b].to(device)).cpu() for b in _batches(torch.arange(len(x)), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0)


def _clean_pass(model, x, y, batch_size, track):
    """Clean per-image scores (N,) and the ``track`` of the clean inputs (D, N) or None."""
    device = next(model.parameters()).device
    tracked = None if track is None else torch.cat(
        [track(model, x[b].to(device), y[b].to(device)).cpu() for b in _batches(torch.arange(len(x)), batch_size)], dim=1)
    return scores(model, x, y, batch_size), tracked


def _lower_scores(model, attack: EvalAttack, x, y, correct, tracked, batch_size, track) -> None:
    """One attack's pass over the images still scoring > 0: keep, per image, the lower score (in place)."""
    device = next(model.parameters()).device
    with attack.session(model):
        idx = (correct > 0).nonzero().flatten()
        for bi, b in enumerate(_batches(idx, batch_size)):
            xb, yb = x[b].to(device), y[b].to(device)
            x_adv = attack.examples(model, xb, yb, bi)
            s = score(model, x_adv, yb).cpu()
            lower = s < correct[b]
            correct[b] = torch.where(lower, s, correct[b])
            if tracked is not None:
                t = track(model, x_adv, yb).cpu()
                tracked[:, b] = torch.where(lower.unsqueeze(0), t, tracked[:, b])


def worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, suite: Sequence[EvalAttack], batch_size: int,
               tick: Callable[[], None] = lambda: None,
               track: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> SuiteResult:
    """Per image, the minimum score (:func:`score`) over clean and every attack of ``suite``, in order.

    Cumulative (AutoAttack's rule): an attack runs only on the images whose score is still > 0; an
    image's score drops to an attack's where that is lower. ``track(model, x_adv, y) -> (D, B)``
    (e.g. every member's correctness) is kept from each image's worst input. The model runs in eval
    mode (modes restored); ``tick()`` after the clean pass and after each attack.
    """
    with model_mode(model, False):
        clean, tracked = _clean_pass(model, x, y, batch_size, track)
        tick()
        correct, after = clean.clone(), {}
        for attack in suite:
            _lower_scores(model, attack, x, y, correct, tracked, batch_size, track)
            after[attack.name] = correct.clone()
            tick()
    return SuiteResult(clean, correct, after, tracked)


__all__ = ["EvalAttack", "FunctionAttack", "PGDAttack", "SuiteResult", "accuracy_with_se", "attacked_correct",
           "correct_matrix", "correct_per_member", "is_switching", "score", "scores", "worst_case"]
