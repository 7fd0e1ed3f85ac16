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
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import model_mode, pgd


@dataclass
class SanityCheck:
    """One check's outcome: ``passed`` False means the evaluation is suspect (see ``detail``)."""
    name: str
    passed: bool
    detail: str


def _is_switching(model: nn.Module) -> bool:
    return hasattr(model, "member_logits") and hasattr(model, "use_member")


def _expectation_loss(model, x_adv, y):
    logits = model.member_logits(x_adv)                                      # (K, B, C)
    K, B, C = logits.shape
    return F.cross_entropy(logits.reshape(K * B, C), y.repeat(K), reduction="none").view(K, B).mean(0)


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K, B) bool for a switching model (every member), else (1, B)."""
    if _is_switching(model):
        return model.member_logits(x).argmax(-1) == y
    return (model(x).argmax(-1) == y).unsqueeze(0)


def _whitebox_correct(model, x, y, eps, alpha, steps, seed, batch_size, restarts: int = 1) -> torch.Tensor:
    """(K, N) correctness under white-box PGD (expectation over members for a switching model)."""
    device = next(model.parameters()).device
    loss = _expectation_loss if _is_switching(model) else "ce"
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        g = torch.Generator(device=device).manual_seed(seed + i)    # per batch: restarts extend the same start
        x_adv = pgd(model, xb, yb, eps, alpha, steps, loss=loss, generator=g, restarts=restarts)
        out.append(_correct(model, x_adv, yb).cpu())
    return torch.cat(out, dim=1)


def _eot_correct(model, x, y, eps, alpha, steps, eot_iter, seed, batch_size) -> torch.Tensor:
    import torchattacks
    device = next(model.parameters()).device
    if hasattr(model, "reseed"):
        model.reseed(seed)
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        atk = torchattacks.EOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=eot_iter)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            out.append(_correct(model, atk(xb, yb), yb).cpu())
    return torch.cat(out, dim=1)


def sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                  steps: Sequence[int] = (5, 20), eps_grid: Sequence[float] | None = None,
                  square_queries: int | None = 1000, seed: int = 0,
                  eot_samples: Sequence[int] | None = None, alpha: float | None = None,
                  batch_size: int = 256, tolerance: float = 0.01, restarts: Sequence[int] | None = (1, 3),
                  autoattack: Sequence[str] | None = ("apgd-ce", "apgd-t"),
                  arc_steps: int | None = 10) -> list[SanityCheck]:
    """Run the gradient-masking checks of spec §5 on ``model``; failures are returned, never raised.

    Arguments:
        model (nn.Module): a plain model or an R2S (attacked with the exact expectation over its
            members, scored as the mean over members). Evaluated in eval mode (mode restored).
        x (Tensor): (N, C, H, W) in [0, 1] (a few hundred images are plenty). y (Tensor): (N,).
        eps (float): the radius under evaluation.
        steps (tuple[int, int]): (short, long) PGD step counts; the long one is the white-box
            reference of checks 1 and 4. (Default: (5, 20))
        eps_grid (list[float] | None): radii of check 1; default ``[eps, 2 eps, 4 eps, 0.5]``.
            Its largest value should be large (>= 0.3): only there must accuracy reach ~0.
        square_queries (int | None): Square's query budget for check 4; None or 0 skips it.
            (Default: 1000)
        seed (int): seed of every attack (the same for the runs compared). (Default: 0)
        eot_samples (tuple[int, int] | None): (few, many) EOT samples for check 3; default (1, 10)
            for a switching model, skipped otherwise.
        alpha (float | None): PGD step size at ``eps`` (default ``eps / 4``), scaled with each radius.
        batch_size (int): images per attack batch. (Default: 256)
        tolerance (float): slack of the "never raises" checks, at least one example. (Default: 0.01)
        restarts (tuple[int, int] | None): (few, many) restarts of the long PGD for check 5; None skips.
            (Default: (1, 3))
        autoattack (list[str] | None): AutoAttack's attacks for check 6 (version "custom"); None skips.
            (Default: ("apgd-ce", "apgd-t"))
        arc_steps (int | None): ARC iterations for check 7 (switching models); None or 0 skips.
            (Default: 10)

    Returns:
        list of :class:`SanityCheck` (eps_to_zero, more_steps, [more_eot_samples],
        [blackbox_not_stronger], [more_restarts], [autoattack_le_pgd], [arc_le_expectation]).

    Example::
        >>> failed = [c for c in sanity_checks(model, x, y, eps=0.1) if not c.passed]
    """
    n = len(x)
    if n == 0:
        raise ValueError("sanity checks need at least one example")
    short, long_ = int(min(steps)), int(max(steps))
    alpha = eps / 4 if alpha is None else alpha
    ratio = alpha / eps if eps > 0 else 0.25
    tol = max(tolerance, 1.0 / n)
    grid = sorted(set(float(e) for e in (eps_grid if eps_grid is not None else [eps, 2 * eps, 4 * eps, 0.5])))
    checks: list[SanityCheck] = []
    with model_mode(model, False):
        # 1. accuracy -> 0 as eps grows
        accs = []
        ref = None
        for e in grid:
            c = _whitebox_correct(model, x, y, e, ratio * e, long_, seed, batch_size)
            accs.append(c.float().mean().item())
            if abs(e - eps) < 1e-12:
                ref = c
        rises = [(grid[i], grid[i + 1]) for i in range(len(grid) - 1) if accs[i + 1] > accs[i] + tol]
        zero_ok = accs[-1] * n <= max(0.05 * n, 1.0) + 1e-9
        curve = ", ".join(f"eps={e:.4g}: {a:.4f}" for e, a in zip(grid, accs))
        detail = f"PGD-{long_} accuracy {curve}"
        if not zero_ok:
            detail += (f"; accuracy at eps={grid[-1]:.4g} is {accs[-1]:.4f} > 0.05: a working attack drives any "
                       "non-constant classifier to ~0 at a large radius — gradients are masked, the attack is "
                       "too weak, or the model is (near-)constant")
        if rises:
            detail += f"; accuracy rises with eps between {rises} (beyond tolerance {tol:.4f}): the attack is unreliable"
        if grid[-1] < 0.3:
            detail += f"; note: the largest radius {grid[-1]:.4g} is small, so reaching 0 is not required by theory"
        checks.append(SanityCheck("eps_to_zero", zero_ok and not rises, detail))

        # 2. more steps never raise accuracy (same seed)
        c_short = _whitebox_correct(model, x, y, eps, alpha, short, seed, batch_size)
        c_long = ref if ref is not None else _whitebox_correct(model, x, y, eps, alpha, long_, seed, batch_size)
        a_short, a_long = c_short.float().mean().item(), c_long.float().mean().item()
        ok = a_long <= a_short + tol
        checks.append(SanityCheck(
            "more_steps", ok,
            f"PGD-{short} {a_short:.4f} -> PGD-{long_} {a_long:.4f} at eps={eps:.4g} (same seed; tolerance "
            f"{tol:.4f}, since a final iterate may oscillate back for a few examples)"
            + ("" if ok else ": more steps raised accuracy — the loss surface is not being climbed "
                             "(noisy or masked gradients, or a step size too large)")))

        # 3. more EOT samples never raise accuracy (randomised models)
        if eot_samples is None and _is_switching(model):
            eot_samples = (1, 10)
        if eot_samples:
            few, many = int(min(eot_samples)), int(max(eot_samples))
            a_few = _eot_correct(model, x, y, eps, alpha, long_, few, seed, batch_size).float().mean().item()
            a_many = _eot_correct(model, x, y, eps, alpha, long_, many, seed, batch_size).float().mean().item()
            ok = a_many <= a_few + tol
            checks.append(SanityCheck(
                "more_eot_samples", ok,
                f"EOT-PGD-{long_} with {few} sample(s) {a_few:.4f} -> {many} samples {a_many:.4f} "
                f"(tolerance {tol:.4f})"
                + ("" if ok else ": more EOT samples raised accuracy — the expectation is badly estimated")))

        # 4. black-box Square does not beat white-box PGD by more than 2 points
        if square_queries:
            from .autoattack import autoattack_examples
            device = next(model.parameters()).device
            if hasattr(model, "reseed"):
                model.reseed(seed)
            x_sq, _ = autoattack_examples(model, x, y, eps=eps, version="custom", attacks=["square"],
                                          batch_size=batch_size, seed=seed, n_queries=square_queries)
            c_sq = torch.cat([_correct(model, x_sq[i:i + batch_size].to(device), y[i:i + batch_size].to(device)).cpu()
                              for i in range(0, n, batch_size)], dim=1)
            a_sq = c_sq.float().mean().item()
            only_sq = int((~c_sq & c_long).sum())
            margin = max(0.02, 1.0 / n)
            ok = a_sq >= a_long - margin - 1e-9
            checks.append(SanityCheck(
                "blackbox_not_stronger", ok,
                f"Square ({square_queries} queries) {a_sq:.4f} vs white-box PGD-{long_} {a_long:.4f} at eps={eps:.4g} "
                f"(allowed margin {margin:.4f}); "
                f"Square broke {only_sq} (example, member) pairs PGD did not"
                + ("" if ok else ": a black-box attack beats the white-box one by more than 2 points — "
                                 "the white-box gradients are masked or obfuscated")))

        # 5. more restarts never raise accuracy (same seed: the first restart is the single run)
        if restarts:
            few, many = int(min(restarts)), int(max(restarts))
            a_few = _whitebox_correct(model, x, y, eps, alpha, long_, seed, batch_size, few).float().mean().item()
            a_many = _whitebox_correct(model, x, y, eps, alpha, long_, seed, batch_size, many).float().mean().item()
            ok = a_many <= a_few + tol
            checks.append(SanityCheck(
                "more_restarts", ok,
                f"PGD-{long_} with {few} restart(s) {a_few:.4f} -> {many} restarts {a_many:.4f} (tolerance {tol:.4f})"
                + ("" if ok else ": more restarts raised accuracy — the restarts are not combined per example "
                                 "by the attack's objective")))

        # 6. AutoAttack on each model / member is not weaker than PGD
        if autoattack:
            from .autoattack import autoattack_examples
            device = next(model.parameters()).device
            members = list(range(model.K)) if _is_switching(model) else [None]
            worse = []
            rows = []
            for k in members:
                ctx = model.use_member(k) if k is not None else contextlib.nullcontext()
                with ctx:
                    target = _Pinned(model) if k is not None else model
                    x_aa, _ = autoattack_examples(target, x, y, eps=eps, version="custom", attacks=list(autoattack),
                                                  batch_size=batch_size, seed=seed)
                    with torch.no_grad():
                        c_aa = torch.cat([(target(x_aa[i:i + batch_size].to(device)).argmax(1)
                                           == y[i:i + batch_size].to(device)).cpu() for i in range(0, n, batch_size)])
                a_aa = c_aa.float().mean().item()
                a_pgd = _member_pgd_acc(model, k, x, y, eps, alpha, long_, seed, batch_size)
                rows.append(f"{'model' if k is None else f'member {k}'}: AutoAttack {a_aa:.4f} vs PGD-{long_} {a_pgd:.4f}")
                if a_aa > a_pgd + tol:
                    worse.append(k)
            checks.append(SanityCheck(
                "autoattack_le_pgd", not worse,
                f"AutoAttack ({', '.join(autoattack)}) vs white-box PGD-{long_}: " + "; ".join(rows)
                + (f" (tolerance {tol:.4f})" if not worse else
                   f": AutoAttack is weaker than PGD on {worse} beyond tolerance {tol:.4f} — check its "
                   "configuration (eps, norm) and the model's input range")))

        # 7. ARC is not weaker than PGD on the expected loss (switching models)
        if arc_steps and _is_switching(model):
            from .ensemble_attacks import arc
            device = next(model.parameters()).device
            c_arc = torch.cat([_correct(model, arc(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device),
                                                  eps, steps=int(arc_steps), step_size=alpha),
                                        y[i:i + batch_size].to(device)).cpu() for i in range(0, n, batch_size)], dim=1)
            a_arc = c_arc.float().mean().item()
            ok = a_arc <= a_long + tol
            checks.append(SanityCheck(
                "arc_le_expectation", ok,
                f"ARC-{arc_steps} {a_arc:.4f} vs PGD-{long_} on the expected loss {a_long:.4f} (tolerance {tol:.4f})"
                + ("" if ok else ": ARC is weaker than the expectation attack here — quote the per-example worst "
                                 "case over both, and give ARC more iterations or a larger step")))
    return checks


class _Pinned(nn.Module):
    """A switching model inside ``use_member(k)``: a plain model for AutoAttack (member fixed by the caller)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def _member_pgd_acc(model, k, x, y, eps, alpha, steps, seed, batch_size) -> float:
    """Plain PGD (CE) accuracy of one member (``k``) or of a plain model (``k`` None)."""
    if k is None:
        return _whitebox_correct(model, x, y, eps, alpha, steps, seed, batch_size).float().mean().item()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    hits = 0
    with model.use_member(k):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            x_adv = pgd(_Pinned(model), xb, yb, eps, alpha, steps, generator=g)
            with torch.no_grad():
                hits += int((model(x_adv).argmax(1) == yb).sum())
    return hits / len(x)


__all__ = ["SanityCheck", "sanity_checks"]
