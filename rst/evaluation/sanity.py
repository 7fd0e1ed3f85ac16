"""Sanity checks of a robustness evaluation: is the attack working, or are gradients masked?

The checks of Athalye et al. (ICML 2018, arXiv:1802.00420, §3.1 "Obfuscated gradients" and their
evaluation checklist), Carlini et al. (2019, "On Evaluating Adversarial Robustness",
arXiv:1902.06705) and Tramèr et al. (NeurIPS 2020, arXiv:2002.08347), as listed in spec §5:

1. ``eps_to_zero``: accuracy falls as eps grows and reaches ~0 at a large eps (in [0, 1] pixel
   space an L-inf radius of 0.5 reaches the uniform gray image from every input; a working
   attack drives any non-constant classifier to ~0 there).
2. ``more_steps``: more PGD steps never raise accuracy (same seed, so the longer run passes
   through the shorter run's end point).
3. ``more_eot_samples`` (randomised models): more EOT samples never raise accuracy.
4. ``blackbox_not_stronger``: the black-box Square attack (Andriushchenko et al. 2020,
   arXiv:1912.00049, via AutoAttack's implementation) does not beat white-box PGD by more than
   2 points (or one example, on fewer than 50 images) — otherwise the white-box gradients are
   uninformative.
5. ``more_restarts``: PGD with more random restarts never raises accuracy (same seed: the first
   restart is the single run).
6. ``autoattack_le_pgd`` (per model, or per member of a switching model): AutoAttack (default its
   APGD-CE + APGD-T) is not weaker than PGD with the long step count — else PGD is the better
   attack and AutoAttack is misconfigured, or PGD's gradients are better than APGD's.
7. ``arc_le_expectation`` (switching models): ARC (Dbouk & Shanbhag 2022, arXiv:2206.06737) is not
   weaker than PGD on the expected loss. If it fails, report it: the expectation attack is then the
   stronger one on this ensemble (or ARC needs a larger budget); the per-example worst case over
   both stays the number to quote.

A failed check is *returned* (``passed=False`` and a detail saying what it means), never raised.
Works for a plain model and for a member-switching model (``rst.evaluation.r2s.R2S``: anything with
``member_logits`` and ``use_member``), which is attacked with the exact expectation over its
members and scored exactly (mean over members).

    >>> for c in sanity_checks(model, x[:256], y[:256], eps=8/255):
    ...     print("ok " if c.passed else "FAIL", c.name, c.detail)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model_modes import model_mode
from .suite import EvalAttack, FunctionAttack, PGDAttack, attacked_correct, is_switching


@dataclass
class SanityCheck:
    """One check's outcome: ``passed`` False means the evaluation is suspect (see ``detail``)."""
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class _Setting:
    """What every check shares: the radius and step, the (short, long) PGD steps, seed, batch size, tolerance."""
    eps: float
    alpha: float
    short: int
    long: int
    seed: int
    batch_size: int
    tol: float

    @classmethod
    def of(cls, n: int, eps: float, alpha: float | None, steps: Sequence[int], seed: int, batch_size: int,
           tolerance: float) -> "_Setting":
        """The setting of ``n`` images (at least one, else ValueError); alpha None: ``eps / 4``."""
        if n == 0:
            raise ValueError("sanity checks need at least one example")
        return cls(eps, eps / 4 if alpha is None else alpha, int(min(steps)), int(max(steps)), seed, batch_size,
                   max(tolerance, 1.0 / n))


def _expectation_loss(model, x_adv, y):
    """The mean cross-entropy over the members (uniform), per example (B,)."""
    logits = model.member_logits(x_adv)                                      # (K, B, C)
    K, B, C = logits.shape
    return F.cross_entropy(logits.reshape(K * B, C), y.repeat(K), reduction="none").view(K, B).mean(0)


def _mean(c: torch.Tensor) -> float:
    return c.float().mean().item()


def _verdict(name: str, ok: bool, detail: str, failure: str) -> SanityCheck:
    """The check ``name``: ``detail``, followed by what a failure means when it failed."""
    return SanityCheck(name, ok, detail + ("" if ok else failure))


def _whitebox_correct(model, x, y, eps, alpha, steps, seed, batch_size, restarts: int = 1) -> torch.Tensor:
    """(K, N) correctness under white-box PGD (expectation over members for a switching model); the
    random start of the batch from image i is seeded with ``seed + i``, so restarts extend the same start."""
    loss = _expectation_loss if is_switching(model) else "ce"
    attack = PGDAttack(eps, alpha, steps, restarts=restarts, loss=loss, seed=seed, batch_seed_stride=batch_size)
    return attacked_correct(model, attack, x, y, batch_size)


@dataclass(eq=False)
class _SampledEOT(EvalAttack):
    """torchattacks' EOT-PGD with ``eot_iter`` samples per step; one pass: the switch reseeded and torch's
    global RNG seeded once with ``seed`` (and restored afterwards)."""
    eps: float
    alpha: float
    steps: int
    eot_iter: int
    seed: int
    name: str = "eot"
    _attack: object = field(default=None, init=False, repr=False)

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        import torchattacks
        device = next(model.parameters()).device
        if hasattr(model, "reseed"):
            model.reseed(self.seed)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            self._attack = torchattacks.EOTPGD(model, eps=self.eps, alpha=self.alpha, steps=self.steps,
                                               eot_iter=self.eot_iter)
            yield

    def examples(self, model, x, y, batch_index=0):
        return self._attack(x, y)


def _autoattack(attacks: Sequence[str], s: _Setting, **options) -> EvalAttack:
    """AutoAttack ("custom", ``attacks``) on all images at once, AutoAttack batching them."""
    from .autoattack import AutoAttackEval
    return AutoAttackEval(s.eps, attacks=tuple(attacks), seed=s.seed, batch_size=s.batch_size, whole_set=True,
                          **options)


# --------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------


def _check_eps_to_zero(model, x, y, s: _Setting, grid: list[float]) -> tuple[SanityCheck, torch.Tensor | None]:
    """1. PGD accuracy falls as eps grows and reaches ~0 at the largest radius; also the run at ``eps``."""
    n, ratio = len(x), s.alpha / s.eps if s.eps > 0 else 0.25
    accs, ref = [], None
    for e in grid:
        c = _whitebox_correct(model, x, y, e, ratio * e, s.long, s.seed, s.batch_size)
        accs.append(_mean(c))
        if abs(e - s.eps) < 1e-12:
            ref = c
    rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1) if accs[i + 1] > accs[i] + s.tol]
    zero_ok = accs[-1] * n <= max(0.05 * n, 1.0) + 1e-9
    curve = ", ".join(f"eps={e:.4g}: {a:.4f}" for e, a in zip(grid, accs))
    detail = f"PGD-{s.long} accuracy {curve}"
    if not zero_ok:
        detail += (f"; accuracy at eps={grid[-1]:.4g} is {accs[-1]:.4f} > 0.05: a working attack drives any "
                   "non-constant classifier to ~0 at a large radius — gradients are masked, the attack is "
                   "too weak, or the model is (near-)constant")
    if rises:
        detail += f"; accuracy rises with eps between {rises} (beyond tolerance {s.tol:.4f}): the attack is unreliable"
    if grid[-1] < 0.3:
        detail += f"; note: the largest radius {grid[-1]:.4g} is small, so reaching 0 is not required by theory"
    return SanityCheck("eps_to_zero", zero_ok and not rises, detail), ref


def _check_more_steps(model, x, y, s: _Setting, ref) -> tuple[SanityCheck, torch.Tensor]:
    """2. More PGD steps never raise accuracy (same seed); also the long run's (K, N) correctness."""
    c_short = _whitebox_correct(model, x, y, s.eps, s.alpha, s.short, s.seed, s.batch_size)
    c_long = ref if ref is not None else _whitebox_correct(model, x, y, s.eps, s.alpha, s.long, s.seed, s.batch_size)
    a_short, a_long = _mean(c_short), _mean(c_long)
    ok = a_long <= a_short + s.tol
    return _verdict("more_steps", ok,
                    f"PGD-{s.short} {a_short:.4f} -> PGD-{s.long} {a_long:.4f} at eps={s.eps:.4g} (same seed; "
                    f"tolerance {s.tol:.4f}, since a final iterate may oscillate back for a few examples)",
                    ": more steps raised accuracy — the loss surface is not being climbed "
                    "(noisy or masked gradients, or a step size too large)"), c_long


def _no_rise(name: str, budgets: Sequence[int], accuracy_at, text: str, tol: float, failure: str) -> SanityCheck:
    """A "more of it never raises accuracy" check: ``accuracy_at`` the fewest and the most of ``budgets``."""
    few, many = int(min(budgets)), int(max(budgets))
    a_few, a_many = accuracy_at(few), accuracy_at(many)
    return _verdict(name, a_many <= a_few + tol, text.format(few=few, many=many, a_few=a_few, a_many=a_many, tol=tol),
                    failure)


def _check_more_eot_samples(model, x, y, s: _Setting, eot_samples: Sequence[int]) -> SanityCheck:
    """3. More EOT samples never raise accuracy (randomised models)."""
    def accuracy_at(k):
        return _mean(attacked_correct(model, _SampledEOT(s.eps, s.alpha, s.long, k, s.seed), x, y, s.batch_size))
    return _no_rise("more_eot_samples", eot_samples, accuracy_at,
                    f"EOT-PGD-{s.long} with {{few}} sample(s) {{a_few:.4f}} -> {{many}} samples {{a_many:.4f}} "
                    "(tolerance {tol:.4f})", s.tol,
                    ": more EOT samples raised accuracy — the expectation is badly estimated")


def _check_blackbox(model, x, y, s: _Setting, queries: int, c_long: torch.Tensor) -> SanityCheck:
    """4. The black-box Square attack does not beat white-box PGD by more than 2 points."""
    square = _autoattack(["square"], s, n_queries=queries, reseed=True)
    c_sq = attacked_correct(model, square, x, y, s.batch_size)
    a_sq, a_long = _mean(c_sq), _mean(c_long)
    only_sq = int((~c_sq & c_long).sum())
    margin = max(0.02, 1.0 / len(x))
    ok = a_sq >= a_long - margin - 1e-9
    return _verdict("blackbox_not_stronger", ok,
                    f"Square ({queries} queries) {a_sq:.4f} vs white-box PGD-{s.long} {a_long:.4f} at eps={s.eps:.4g} "
                    f"(allowed margin {margin:.4f}); Square broke {only_sq} (example, member) pairs PGD did not",
                    ": a black-box attack beats the white-box one by more than 2 points — "
                    "the white-box gradients are masked or obfuscated")


def _check_more_restarts(model, x, y, s: _Setting, restarts: Sequence[int]) -> SanityCheck:
    """5. More random restarts never raise accuracy (same seed: the first restart is the single run)."""
    def accuracy_at(r):
        return _mean(_whitebox_correct(model, x, y, s.eps, s.alpha, s.long, s.seed, s.batch_size, r))
    return _no_rise("more_restarts", restarts, accuracy_at,
                    f"PGD-{s.long} with {{few}} restart(s) {{a_few:.4f}} -> {{many}} restarts {{a_many:.4f}} "
                    "(tolerance {tol:.4f})", s.tol,
                    ": more restarts raised accuracy — the restarts are not combined per example "
                    "by the attack's objective")


def _check_autoattack(model, x, y, s: _Setting, attacks: Sequence[str]) -> SanityCheck:
    """6. AutoAttack on the model, or on each member of a switching model, is not weaker than PGD."""
    members = list(range(model.K)) if is_switching(model) else [None]
    worse, rows = [], []
    for k in members:
        a_aa = _member_autoattack_acc(model, k, x, y, s, attacks)
        a_pgd = _member_pgd_acc(model, k, x, y, s.eps, s.alpha, s.long, s.seed, s.batch_size)
        rows.append(f"{'model' if k is None else f'member {k}'}: AutoAttack {a_aa:.4f} vs PGD-{s.long} {a_pgd:.4f}")
        if a_aa > a_pgd + s.tol:
            worse.append(k)
    return SanityCheck(
        "autoattack_le_pgd", not worse,
        f"AutoAttack ({', '.join(attacks)}) vs white-box PGD-{s.long}: " + "; ".join(rows)
        + (f" (tolerance {s.tol:.4f})" if not worse else
           f": AutoAttack is weaker than PGD on {worse} beyond tolerance {s.tol:.4f} — check its "
           "configuration (eps, norm) and the model's input range"))


def _check_arc(model, x, y, s: _Setting, arc_steps: int, c_long: torch.Tensor) -> SanityCheck:
    """7. ARC is not weaker than PGD on the expected loss (switching models)."""
    from .ensemble_attacks import arc
    attack = FunctionAttack(lambda m, xb, yb: arc(m, xb, yb, s.eps, steps=int(arc_steps), step_size=s.alpha), "arc")
    a_arc, a_long = _mean(attacked_correct(model, attack, x, y, s.batch_size)), _mean(c_long)
    ok = a_arc <= a_long + s.tol
    return _verdict("arc_le_expectation", ok,
                    f"ARC-{arc_steps} {a_arc:.4f} vs PGD-{s.long} on the expected loss {a_long:.4f} "
                    f"(tolerance {s.tol:.4f})",
                    ": ARC is weaker than the expectation attack here — quote the per-example worst "
                    "case over both, and give ARC more iterations or a larger step")


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                  steps: Sequence[int] = (5, 20), eps_grid: Sequence[float] | None = None,
                  square_queries: int | None = 1000, seed: int = 0,
                  eot_samples: Sequence[int] | None = None, alpha: float | None = None,
                  batch_size: int = 256, tolerance: float = 0.01, restarts: Sequence[int] | None = (1, 3),
                  autoattack: Sequence[str] | None = ("apgd-ce", "apgd-t"),
                  arc_steps: int | None = 10) -> list[SanityCheck]:
    """Run the gradient-masking checks 1-7 of the module docstring on ``model`` (a plain model, or an R2S:
    attacked with the exact expectation over its members, scored as the mean over members; eval mode,
    mode restored). Failures are returned, never raised: ``[c for c in sanity_checks(...) if not c.passed]``.

    Arguments:
        x (Tensor): (N, C, H, W) in [0, 1] (a few hundred images are plenty). y (Tensor): (N,).
        eps (float): the radius under evaluation. alpha (float | None): PGD step size at ``eps``
            (default ``eps / 4``), scaled with each radius.
        steps (tuple[int, int]): (short, long) PGD steps; the long one is the white-box reference.
        eps_grid (list[float] | None): radii of check 1; default ``[eps, 2 eps, 4 eps, 0.5]``; its largest
            should be large (>= 0.3): only there must accuracy reach ~0.
        square_queries (int | None): Square's query budget for check 4; None or 0 skips it.
        seed (int): seed of every attack (the same for the runs compared).
        eot_samples (tuple[int, int] | None): (few, many) EOT samples for check 3; default (1, 10)
            for a switching model, skipped otherwise.
        batch_size (int): images per attack batch. tolerance (float): slack of the "never raises"
            checks, at least one example.
        restarts (tuple[int, int] | None): (few, many) restarts of the long PGD for check 5; None skips.
        autoattack (list[str] | None): AutoAttack's attacks for check 6 (version "custom"); None skips.
        arc_steps (int | None): ARC iterations for check 7 (switching models); None or 0 skips.

    Returns: the :class:`SanityCheck` list, in the order 1-7 (those skipped left out).
    """
    s = _Setting.of(len(x), eps, alpha, steps, seed, batch_size, tolerance)
    grid = sorted(set(float(e) for e in (eps_grid if eps_grid is not None else [eps, 2 * eps, 4 * eps, 0.5])))
    if eot_samples is None and is_switching(model):
        eot_samples = (1, 10)
    with model_mode(model, False):
        first, ref = _check_eps_to_zero(model, x, y, s, grid)
        second, c_long = _check_more_steps(model, x, y, s, ref)
        checks = [first, second]
        if eot_samples:
            checks.append(_check_more_eot_samples(model, x, y, s, eot_samples))
        if square_queries:
            checks.append(_check_blackbox(model, x, y, s, square_queries, c_long))
        if restarts:
            checks.append(_check_more_restarts(model, x, y, s, restarts))
        if autoattack:
            checks.append(_check_autoattack(model, x, y, s, autoattack))
        if arc_steps and is_switching(model):
            checks.append(_check_arc(model, x, y, s, arc_steps, c_long))
    return checks


def _member_autoattack_acc(model, k, x, y, s: _Setting, attacks: Sequence[str]) -> float:
    """AutoAttack accuracy of one member (``k``) or of a plain model (``k`` None)."""
    with model.use_member(k) if k is not None else contextlib.nullcontext():     # a fixed member is a plain model
        return _mean(attacked_correct(model, _autoattack(attacks, s), x, y, s.batch_size))


def _member_pgd_acc(model, k, x, y, eps, alpha, steps, seed, batch_size) -> float:
    """Plain PGD (CE) accuracy of one member (``k``) or of a plain model (``k`` None)."""
    if k is None:
        return _mean(_whitebox_correct(model, x, y, eps, alpha, steps, seed, batch_size))
    with model.use_member(k):
        c = attacked_correct(model, PGDAttack(eps, alpha, steps, seed=seed), x, y, batch_size)
    return int(c.sum()) / len(x)


__all__ = ["SanityCheck", "sanity_checks"]
