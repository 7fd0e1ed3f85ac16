"""Like-with-like robustness: R2S, each of its members alone and the dense baseline, each under the
per-example worst case over an attack suite fit for it, on the same test images, with standard
errors and a paired confidence interval for "R2S minus its best member".

Why: a comparison of a randomized defence against single networks is only fair when both sides face
their strongest attacks on the same images (Tramèr et al., NeurIPS 2020, arXiv:2002.08347, report the
per-example worst case over attacks; Croce & Hein, ICML 2020, arXiv:2003.01690). Suites:

    single models   PGD-20; PGD-100 with restarts; APGD-T (Croce & Hein's targeted APGD, DLR loss)
    R2S             the adaptive attacks of ``rst.evaluation.r2s.ADAPTIVE`` that attack the random switch:
                    expectation PGD, ensemble PGD, EOT-PGD, APGD-CE / APGD-DLR on the expected loss,
                    ARC (Dbouk & Shanbhag, ICML 2022, arXiv:2206.06737)

A single model's image counts as robust if it is classified correctly clean and after every attack
(AutoAttack's rule: a later attack runs only on the images still robust). R2S's image scores its
*expected* correctness ``sum_k p_k 1[f_k(x_adv) = y]`` under the attack that lowers it most (the
attacker picks, per image, one adversarial input before the draw); a later attack runs only on the
images whose expected correctness is still above 0.

Uncertainty: each accuracy ``p`` on ``n`` images carries ``SE = sqrt(p (1 - p) / n)``; the difference
R2S − model over the images both saw is paired: ``d_i = r_i - c_i``, ``mean(d) ± 1.96 sd(d) / sqrt(n)``
(normal approximation), significant when that interval excludes 0.

    >>> rep = compare_like_with_like(cs, x, y, eps=0.1, dense=dense_model, r2s_images=500, single_images=1000)
    >>> rep.to_frame(); rep.paired["best_member"]

The report itself (rows, paired differences, JSON, joining chunks of images) is
:mod:`rst.evaluation.compare_report`; its names are importable from here too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .per_image import decode_per_image, encode_per_image, paired_difference, standard_error  # noqa: F401 (re-exported)
from .compare_report import CompareReport, CompareRow, _paired, same_setup
from .compare_report import concat_reports  # noqa: F401 (re-exported)
from .suite import EvalAttack, PGDAttack, accuracy_with_se, correct_per_member, worst_case
from rst.runtime.progress import ticker

SINGLE_SUITE = ("pgd20", "pgd_long", "apgd_t")
R2S_SUITE = ("expectation", "ensemble", "eot", "apgd_ce", "apgd_dlr", "arc")
ROWS = ("r2s", "members", "dense")


@dataclass(frozen=True)
class SuiteConfig:
    """The attack budgets (eps and alpha in [0, 1] pixel units)."""
    eps: float = 0.1
    alpha: float | None = None        # PGD / ARC step; None: eps / 4
    steps: int = 20                   # PGD-20 and the R2S PGD-type attacks
    long_steps: int = 100             # the long PGD of single models
    long_restarts: int = 2            # its random restarts
    apgd_steps: int = 100             # APGD-T (single models), APGD-CE/DLR on the expectation (R2S)
    apgd_t_targets: int = 9           # APGD-T target classes (AutoAttack standard: 9)
    arc_steps: int = 10               # ARC iterations (the authors' setting)
    arc_topk: int | None = None       # ARC-lite: only the top classes' boundaries (None: all, the paper's ARC)
    apgd_t_steps: int | None = None   # APGD-T iterations of single models (None: apgd_steps)
    eot_samples: int = 10             # EOT samples per step
    single_suite: tuple[str, ...] = SINGLE_SUITE
    r2s_suite: tuple[str, ...] = R2S_SUITE
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self):
        bad = [a for a in self.single_suite if a not in SINGLE_SUITE]
        from .r2s import ADAPTIVE
        bad += [a for a in self.r2s_suite if a not in ADAPTIVE]
        if bad:
            raise ValueError(f"unknown attacks {bad}; single models: {SINGLE_SUITE}, R2S: {ADAPTIVE}")

    @property
    def step(self) -> float:
        return self.eps / 4 if self.alpha is None else self.alpha

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe_single(self, attack: str) -> str:
        from .attacks import _format_pixels
        e, a = _format_pixels(self.eps), _format_pixels(self.step)
        return {"pgd20": f"PGD-{self.steps} Linf eps={e} alpha={a}, 1 restart",
                "pgd_long": f"PGD-{self.long_steps} Linf eps={e} alpha={a}, {self.long_restarts} restarts",
                "apgd_t": f"APGD-T-{self.apgd_t_steps or self.apgd_steps} (AutoAttack's, {self.apgd_t_targets} target "
                          f"class{'' if self.apgd_t_targets == 1 else 'es'}) "
                          f"Linf eps={e}"}[attack]


# --------------------------------------------------------------------------------------------
# per-example worst cases
# --------------------------------------------------------------------------------------------


def single_model_attacks(cfg: SuiteConfig, device: torch.device | str) -> list[EvalAttack]:
    """The attacks of ``cfg.single_suite``; their random starts share ONE generator seeded with ``cfg.seed``."""
    from .autoattack import AutoAttackEval
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    make = {"pgd20": lambda: PGDAttack(cfg.eps, cfg.step, cfg.steps, generator=g, name="pgd20",
                                       description=cfg.describe_single("pgd20")),
            "pgd_long": lambda: PGDAttack(cfg.eps, cfg.step, cfg.long_steps, restarts=cfg.long_restarts, generator=g,
                                          name="pgd_long", description=cfg.describe_single("pgd_long")),
            "apgd_t": lambda: AutoAttackEval(cfg.eps, attacks=("apgd-t",), seed=cfg.seed, seed_per_batch=True,
                                             n_target_classes=cfg.apgd_t_targets,
                                             n_iter=cfg.apgd_t_steps or cfg.apgd_steps, name="apgd_t",
                                             description=cfg.describe_single("apgd_t"))}
    return [make[a]() for a in cfg.single_suite]


def r2s_attacks(cfg: SuiteConfig) -> list[EvalAttack]:
    """The adaptive attacks of ``cfg.r2s_suite``, each with a fresh generator from ``cfg.seed`` (batch i: seed + i)."""
    from .adaptive import AdaptiveAttack
    return [AdaptiveAttack(a, eps=cfg.eps, alpha=cfg.step, steps=cfg.steps, eot_samples=cfg.eot_samples,
                           apgd_steps=cfg.apgd_steps, arc_steps=cfg.arc_steps, arc_topk=cfg.arc_topk, seed=cfg.seed)
            for a in cfg.r2s_suite]


def single_worst_case(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig,
                      tick: Callable[[], None] = lambda: None) -> dict:
    """Per-image correctness of a plain model, clean and after each attack of ``cfg.single_suite``
    (cumulative: an attack runs only on the images still correct). ``{"clean", "correct", "after"}``."""
    res = worst_case(model, x, y, single_model_attacks(cfg, next(model.parameters()).device), cfg.batch_size, tick)
    return {"clean": res.clean.bool(), "correct": res.correct.bool(),
            "after": {a: v.bool() for a, v in res.after.items()}}


def r2s_worst_case(r2s, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig,
                   tick: Callable[[], None] = lambda: None) -> dict:
    """Per-image expected correctness of R2S, clean and after each attack of ``cfg.r2s_suite``
    (per image the minimum over the attacks so far; an attack runs only where it is still > 0).
    ``{"clean", "correct", "after", "per_member"}`` (per_member: (K,) accuracy of each member on the
    worst-case inputs)."""
    res = worst_case(r2s, x, y, r2s_attacks(cfg), cfg.batch_size, tick, track=correct_per_member)
    return {"clean": res.clean, "correct": res.correct, "after": res.after,
            "per_member": res.tracked.float().mean(1).tolist()}


def _single_models(cs, members: list[int], dense: nn.Module | None) -> list[tuple]:
    """``(name, kind, keep_ratio, ticket index or None)`` of every single model: the members, then dense AT."""
    singles = [(cs.tickets[m].name or f"ticket{m}", "ticket", float(cs.tickets[m].keep_ratio), m) for m in members]
    if dense is not None:
        singles.append(("dense AT", "dense", 1.0, None))
    return singles


def _check_rows(rows: Sequence[str], singles: list[tuple]) -> None:
    """Refuse row names that are neither a row kind nor a ticket's name (ValueError)."""
    unknown = [r for r in rows if r not in ROWS and r not in [n for n, *_ in singles]]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; known: {ROWS}")


def _wanted(rows: Sequence[str], name: str, kind: str) -> bool:
    """Whether the single model ``name`` of ``kind`` is one of the rows asked for."""
    return not ((kind == "ticket" and "members" not in rows and name not in rows)
                or (kind == "dense" and "dense" not in rows))


def _reused(reuse: Sequence[CompareReport], config: dict, name: str, n: int) -> CompareRow | None:
    """The row ``name`` on ``n`` images of an earlier report with the same suite, members and radius, or None."""
    for old in reuse:
        for r in old.rows if same_setup(old.config, config) else []:
            if r.name == name and r.n_images == n:
                return r
    return None


def _r2s_row(cs, members: list[int], name: str, x, y, cfg: SuiteConfig, device, tick) -> CompareRow:
    """R2S over ``members`` under the R2S suite, on ``x``: its row."""
    from .r2s import R2S
    r2s = R2S(cs, members=members, device=device)
    res = r2s_worst_case(r2s, x, y, cfg, tick)
    attacks = [{"attack": a.name, "description": a.describe(r2s), "acc_after": float(res["after"][a.name].mean())}
               for a in r2s_attacks(cfg)]
    p, se = accuracy_with_se(res["correct"])
    return CompareRow(name, "r2s", None, len(x), float(res["clean"].mean()), p, se, attacks, res["correct"].tolist(),
                      {"worst_case_per_member": res["per_member"], "members": r2s.names})


def _single_row(model: nn.Module, name: str, kind: str, keep_ratio: float, x, y, cfg: SuiteConfig, tick) -> CompareRow:
    """One single model under the single-model suite, on ``x``: its row."""
    res = single_worst_case(model, x, y, cfg, tick)
    attacks = [{"attack": a, "description": cfg.describe_single(a), "acc_after": float(res["after"][a].float().mean())}
               for a in cfg.single_suite]
    p, se = accuracy_with_se(res["correct"])
    return CompareRow(name, kind, keep_ratio, len(x), float(res["clean"].float().mean()), p, se, attacks,
                      res["correct"].float().tolist())


def _add_row(report: CompareReport, row: CompareRow, on_row) -> None:
    """Append ``row``, update the paired differences and tell ``on_row``."""
    report.rows.append(row)
    report.paired = _paired(report.rows)
    if on_row is not None:
        on_row(report)


def _skip(tick, units: int) -> None:
    """Count ``units`` of a reused row as done."""
    for _ in range(units):
        tick()


def compare_like_with_like(cs, x: torch.Tensor, y: torch.Tensor, *, eps: float, dense: nn.Module | None = None,
                           r2s_images: int = 500, single_images: int = 1000, members: Sequence[int] | None = None,
                           cfg: SuiteConfig | None = None, device: torch.device | str | None = None,
                           progress: Callable[[int, int], None] | None = None,
                           on_row: Callable[[CompareReport], None] | None = None,
                           rows: Sequence[str] = ROWS, reuse: Sequence[CompareReport] = ()) -> CompareReport:
    """R2S over the tickets of ``cs`` (``members``: default all), each member alone and ``dense``, each
    under the per-example worst case over its suite on the first test images (see the module docstring).

    Arguments:
        cs (CandidateSet): the tickets. x (Tensor): (N, C, H, W) test images in [0, 1]. y (Tensor): (N,).
        eps (float): the L-inf radius (overrides ``cfg.eps``). dense (nn.Module | None): the dense baseline.
        r2s_images (int): first images for R2S. (Default: 500)
        single_images (int): first images for each single model. (Default: 1000)
        cfg (SuiteConfig | None): budgets and suites (default: ``SuiteConfig(eps=eps)``).
        device: where to run (default CPU). progress: ``progress(done, total)`` after every attack of
            every model. on_row: called with the report so far after every finished model.
        rows (sequence of str): which rows to compute: "r2s", "members", "dense" or ticket names. (Default: all)
        reuse (sequence of CompareReport): earlier reports (e.g. parts run in parallel); a row of the
            same name, image count, radius, suite and members is taken from them instead of recomputed.

    Returns:
        :class:`CompareReport`; ``paired["best_member"]`` holds R2S − best member with its 95 % interval.
    """
    cfg = dataclasses.replace(cfg or SuiteConfig(), eps=float(eps))
    members = list(range(len(cs))) if members is None else [int(m) for m in members]
    n_r2s, n_single = min(r2s_images, len(x)), min(single_images, len(x))
    singles = _single_models(cs, members, dense)
    tick = ticker(progress, (1 + len(cfg.r2s_suite)) + len(singles) * (1 + len(cfg.single_suite)))
    _check_rows(rows, singles)
    report = CompareReport([], {}, {"suite": cfg.to_dict(), "r2s_images": n_r2s, "single_images": n_single,
                                    "members": members, "eps": cfg.eps})
    if "r2s" in rows:
        name = f"R2S ({len(members)} members)"
        row = _reused(reuse, report.config, name, n_r2s)
        if row is None:
            row = _r2s_row(cs, members, name, x[:n_r2s], y[:n_r2s], cfg, device, tick)
        else:
            _skip(tick, 1 + len(cfg.r2s_suite))
        _add_row(report, row, on_row)
    for name, kind, keep_ratio, m in (s for s in singles if _wanted(rows, s[0], s[1])):
        row = _reused(reuse, report.config, name, n_single)
        if row is None:
            model = cs.model(m, device=device) if m is not None else dense
            row = _single_row(model, name, kind, keep_ratio, x[:n_single], y[:n_single], cfg, tick)
        else:
            _skip(tick, 1 + len(cfg.single_suite))
        _add_row(report, row, on_row)
    report.paired = _paired(report.rows)
    return report


def format_report(report: CompareReport) -> str:
    """The table as plain text, with the paired differences."""
    lines = [f"{'model':18s} {'images':>6s} {'clean':>7s} {'worst case':>10s} {'± SE':>6s}  suite"]
    for r in report.rows:
        suite = ", ".join(a["attack"] for a in r.attacks)
        lines.append(f"{r.name:18s} {r.n_images:6d} {100 * r.clean:6.2f}% {100 * r.worst_case:9.2f}% "
                     f"{100 * r.se:5.2f}  {suite}")
    for key, label in (("best_member", "R2S - best member"), ("dense", "R2S - dense AT")):
        d = report.paired.get(key)
        if d:
            lines.append(f"{label} ({d['name']}, {d['n_images']} paired images): {100 * d['difference']:+.2f} points, "
                         f"95% CI [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}] "
                         f"({'significant' if d['significant'] else 'not significant'})")
    return "\n".join(lines)


__all__ = ["CompareReport", "CompareRow", "ROWS", "R2S_SUITE", "SINGLE_SUITE", "SuiteConfig", "compare_like_with_like",
           "format_report", "paired_difference", "r2s_attacks", "r2s_worst_case", "single_model_attacks",
           "single_worst_case", "standard_error"]
