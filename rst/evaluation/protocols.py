"""The honest evaluation of R2S (spec §5): the paper's non-adaptive protocol and the adaptive attacks on
the random switch (:mod:`rst.evaluation.adaptive`), every adversarial batch scored on every member, so
that the expected accuracy over the switch is exact (:mod:`rst.evaluation.r2s`: the switch itself and
the threat models), with the consistency checks that need no extra attack.

    >>> report = evaluate_r2s(R2S(cs), x, y, eps=8/255, protocols=("paper", "expectation"))
    >>> report.to_frame()
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from rst.runtime.progress import ticker
from .adaptive import AdaptiveAttack, member_weighted_mean
from .attacks import AttackConfig
from .model_modes import model_mode
from .r2s import PROTOCOLS, R2S, THREAT_MODELS
from .sanity import SanityCheck
from .suite import attacked_correct, correct_matrix



@dataclass
class R2SResult:
    """One attack protocol's outcome. Accuracies in [0, 1], exact over the random switch."""
    protocol: str
    threat_model: str
    adaptive: bool
    attack: str
    expected_acc: float               # mean over members (the expectation over a uniform draw)
    worst_member_acc: float
    per_member_acc: list[float]
    n_images: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class R2SReport:
    """All protocols on one candidate set; ``worst_case_adaptive_acc`` is the honest headline."""
    results: list[R2SResult]
    clean_expected_acc: float
    clean_per_member_acc: list[float]
    worst_case_adaptive_acc: float    # per example and member, worst over all adaptive attacks
    sanity: list[SanityCheck]
    config: dict = field(default_factory=dict)
    worst_case_per_member_acc: list[float] = field(default_factory=list)

    def result(self, protocol: str) -> R2SResult:
        for r in self.results:
            if r.protocol == protocol:
                return r
        raise KeyError(f"no result for protocol {protocol!r}")

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results],
                "clean_expected_acc": self.clean_expected_acc,
                "clean_per_member_acc": list(self.clean_per_member_acc),
                "worst_case_adaptive_acc": self.worst_case_adaptive_acc,
                "worst_case_per_member_acc": list(self.worst_case_per_member_acc),
                "sanity": [dataclasses.asdict(s) for s in self.sanity],
                "config": dict(self.config)}

    def to_frame(self):
        """One row per protocol, plus "clean" and "worst_case_adaptive" rows (pandas.DataFrame)."""
        import pandas as pd
        n = self.results[0].n_images if self.results else None
        rows = [{"protocol": "clean", "threat_model": "none", "adaptive": False, "attack": "none",
                 "expected_acc": self.clean_expected_acc, "worst_member_acc": min(self.clean_per_member_acc),
                 "per_member_acc": _fmt_list(self.clean_per_member_acc), "n_images": n}]
        for r in self.results:
            rows.append({"protocol": r.protocol, "threat_model": r.threat_model, "adaptive": r.adaptive,
                         "attack": r.attack, "expected_acc": r.expected_acc,
                         "worst_member_acc": r.worst_member_acc, "per_member_acc": _fmt_list(r.per_member_acc),
                         "n_images": r.n_images})
        if self.worst_case_per_member_acc:
            rows.append({"protocol": "worst_case_adaptive",
                         "threat_model": "per example, the worst of all adaptive attacks above",
                         "adaptive": True, "attack": "all adaptive", "expected_acc": self.worst_case_adaptive_acc,
                         "worst_member_acc": min(self.worst_case_per_member_acc),
                         "per_member_acc": _fmt_list(self.worst_case_per_member_acc), "n_images": n})
        return pd.DataFrame(rows)


def _fmt_list(v: Sequence[float]) -> str:
    return " ".join(f"{a:.4f}" for a in v)


def evaluate_r2s(r2s: R2S, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 20,
                 alpha: float | None = None, eot_samples: int = 10, protocols: Sequence[str] = PROTOCOLS,
                 batch_size: int = 256, seed: int = 0, transfer=None,
                 progress: Callable[[int, int], None] | None = None) -> R2SReport:
    """Evaluate R2S under the paper's non-adaptive protocol and under adaptive attacks (spec §5).

    Threat model: L-inf ball of radius ``eps`` in [0, 1] pixel space. Every adversarial batch is
    evaluated on *every* member, so the expected accuracy over the random switch is exact.

    Protocols (``protocols``, any subset of :data:`PROTOCOLS`, run in that order): "paper", the
    non-adaptive protocol of Fu et al. 2021: the K x K transfer matrix without early stop (attack member
    i with PGD, answer with member j; expected = the mean of all cells, per member = column means);
    the adaptive attacks of :mod:`rst.evaluation.adaptive` ("expectation": exact EOT, Athalye et al.
    2018; "ensemble"; "eot": torchattacks EOTPGD with ``eot_samples`` sampled switches, the generator
    reseeded with ``seed``; "apgd_ce", "apgd_dlr", "arc"; "autoattack_rand": slow on a CPU).

    ``worst_case_adaptive_acc``: an example counts as robust for member k only if it survives
    every adaptive attack's x_adv on member k (Tramèr et al. 2020, arXiv:2002.08347: report the
    per-example worst case over attacks); the expectation over members is reported.

    Arguments:
        r2s (R2S): the defence. x (Tensor): (N, C, H, W) in [0, 1] (any device). y (Tensor): (N,).
        eps (float): radius. steps (int): PGD / EOT-PGD steps. alpha (float | None): step size; None:
            ``eps / 4``. eot_samples (int): EOT samples per step of "eot". batch_size (int): images per batch.
        seed (int): seeds every attack's random start (a fresh generator per protocol). (Default: 0)
        transfer (TransferResult | None): the "paper" protocol's matrix when it is already computed (the
            zoo's transfer report), checked against this call and refused if it differs; None: computed here.
        progress: ``progress(done, total)`` after every batch of every protocol.

    Example: ``evaluate_r2s(R2S(cs), x, y, eps=8/255, protocols=("paper", "expectation")).to_frame()``
    """
    protocols = _known(protocols)
    alpha = eps / 4 if alpha is None else alpha
    attack = AttackConfig("pgd", eps=eps, alpha=alpha, steps=steps)          # the paper protocol's, checked here
    n_batches = -(-len(x) // batch_size)
    tick = ticker(progress, n_batches * (1 + len(protocols)))
    results, correct = [], {}
    with model_mode(r2s, False):
        clean = correct_matrix(r2s, x, y, batch_size, tick)
        for proto in protocols:
            if proto == "paper":
                results.append(_paper_result(r2s, x, y, attack, batch_size, seed, transfer))
                _skip(tick, n_batches)
                continue
            adaptive = AdaptiveAttack(proto, eps=eps, alpha=alpha, steps=steps, eot_samples=eot_samples, seed=seed)
            correct[proto] = attacked_correct(r2s, adaptive, x, y, batch_size, tick)
            results.append(_adaptive_result(r2s, adaptive, correct[proto]))
    config = {"eps": eps, "alpha": alpha, "steps": steps, "eot_samples": eot_samples, "protocols": list(protocols),
              "batch_size": batch_size, "seed": seed}
    return _report(r2s, results, clean, correct, config)


def _known(protocols: Sequence[str]) -> list[str]:
    """The protocols asked for, in the order of :data:`PROTOCOLS`; ValueError for an unknown one."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {PROTOCOLS}")
    return [p for p in PROTOCOLS if p in protocols]


def _skip(tick, units: int) -> None:
    """Count ``units`` batches as done."""
    for _ in range(units):
        tick()


def _paper_result(r2s: R2S, x, y, attack: AttackConfig, batch_size: int, seed: int, transfer) -> R2SResult:
    """The paper's protocol: the transfer matrix without early stop (given or computed), as a result."""
    from .metrics import transfer_matrix
    N, K = len(x), r2s.K
    tr = _check_transfer(transfer, r2s, N, attack) if transfer is not None else transfer_matrix(
        r2s, x, y, attack, early_stop=False, device=next(r2s.parameters()).device, batch_size=batch_size, seed=seed)
    m = tr.matrix
    per_member = member_weighted_mean(r2s, m).tolist()         # column j: target j, source drawn by alpha
    return R2SResult("paper", THREAT_MODELS["paper"], False, tr.attack, _expected_paper(r2s, m),
                     float(min(per_member)), per_member, N,
                     {"transfer_matrix": m.tolist(), "transfer_label": tr.label,
                      "diagonal_mean": float(m.diagonal().mean()),
                      "off_diagonal_mean": float((m.sum() - m.diagonal().sum()) / max(1, K * K - K))})


def _adaptive_result(r2s: R2S, attack: AdaptiveAttack, ok: torch.Tensor) -> R2SResult:
    """An adaptive attack's result from every member's correctness on its examples, ``ok`` (K, N)."""
    per_member = ok.float().mean(1).tolist()
    extra = {"log": "\n".join(attack.logs)} if attack.logs else {}
    return R2SResult(attack.protocol, THREAT_MODELS[attack.protocol], True, attack.describe(r2s), _expected(r2s, ok),
                     float(min(per_member)), per_member, ok.shape[1], extra)


def _report(r2s: R2S, results: list[R2SResult], clean: torch.Tensor, correct: dict, config: dict) -> R2SReport:
    """The report: the results, the clean and the per-example worst-case accuracies, its consistency checks."""
    if correct:
        worst = torch.stack(list(correct.values())).all(0)                     # (K, N)
        worst_per_member, worst_acc = worst.float().mean(1).tolist(), _expected(r2s, worst)
    else:
        worst_per_member, worst_acc = [], float("nan")
    N = clean.shape[1]
    report = R2SReport(results, _expected(r2s, clean), clean.float().mean(1).tolist(), worst_acc, [],
                       {**config, "members": list(r2s.members), "names": list(r2s.names),
                        "keep_ratios": list(r2s.keep_ratios), "switch": r2s.switch, "n_images": N,
                        "probabilities": r2s.member_probs.tolist()},
                       worst_per_member)
    report.sanity = _report_checks(report, clean, correct, N)
    return report


def _expected(r2s: R2S, ok: torch.Tensor) -> float:
    """Expected accuracy over the switch of per-member results ``ok`` (K, N): ``mean_n sum_k alpha_k ok[k, n]``."""
    if r2s.uniform:
        return float(ok.float().mean())
    return float(member_weighted_mean(r2s, ok.float()).mean())


def _expected_paper(r2s: R2S, m: torch.Tensor) -> float:
    """The paper protocol's expected accuracy: source i and target j drawn independently, ``sum_ij a_i a_j m_ij``."""
    if r2s.uniform:
        return float(m.mean())
    p = r2s.member_probs.to(m.dtype)
    return float(p @ m @ p)


def _check_transfer(tr, r2s: R2S, n: int, attack: AttackConfig):
    """``tr`` if it is the paper protocol's matrix for this call, else a ValueError saying why not."""
    want = dataclasses.replace(attack, early_stop=False).describe()
    problems = [what for what, bad in (
        (f"members {tr.names} != {list(r2s.names)}", list(tr.names) != list(r2s.names)),
        (f"{tr.n_images} images != {n}", tr.n_images != n),
        (f"attack {tr.attack!r} != {want!r}", tr.attack != want),
        ("it was computed with early stop", tr.early_stop)) if bad]
    if problems:
        raise ValueError("transfer matrix does not match this R2S evaluation: " + "; ".join(problems))
    return tr


def _report_checks(report: R2SReport, clean: torch.Tensor, correct: dict, n: int) -> list[SanityCheck]:
    """Consistency checks that need no extra attack (see rst.evaluation.sanity for the attack-based ones)."""
    checks = []
    tol = max(0.01, 1.0 / max(n, 1))
    adaptive = [r for r in report.results if r.adaptive]
    paper = next((r for r in report.results if r.protocol == "paper"), None)
    if paper is not None and adaptive:
        best = min(adaptive, key=lambda r: r.expected_acc)
        ok = best.expected_acc <= paper.expected_acc + tol
        checks.append(SanityCheck(
            "adaptive_not_weaker_than_transfer", ok,
            f"strongest adaptive attack ({best.protocol}) expected acc {best.expected_acc:.4f} vs the paper's "
            f"non-adaptive protocol {paper.expected_acc:.4f} (tolerance {tol:.4f})"
            + ("" if ok else ": an adaptive white-box attack should never be weaker than transfer; "
                             "the attack is not converging (too few steps?) or gradients are masked")))
    for r in adaptive:
        over = [k for k, (a, c) in enumerate(zip(r.per_member_acc, report.clean_per_member_acc)) if a > c + tol]
        checks.append(SanityCheck(
            f"robust_le_clean[{r.protocol}]", not over,
            "robust accuracy <= clean accuracy for every member" if not over else
            f"members {over} are more accurate under {r.protocol} than on clean inputs: the attack is broken"))
    if "expectation" in correct and "eot" in correct:
        e = next(r for r in adaptive if r.protocol == "expectation").expected_acc
        s = next(r for r in adaptive if r.protocol == "eot").expected_acc
        tol2 = max(0.02, 2.0 / max(n, 1))
        ok = e <= s + tol2
        checks.append(SanityCheck(
            "exact_expectation_not_weaker_than_sampled_eot", ok,
            f"exact expectation attack {e:.4f} vs sampled EOT {s:.4f} (tolerance {tol2:.4f})"
            + ("" if ok else ": the exact expectation should be at least as strong as its sampled estimate")))
    return checks


__all__ = ["R2SResult", "R2SReport", "evaluate_r2s"]
