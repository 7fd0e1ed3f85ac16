"""Boosted search: tickets of one random network searched one after another to cover each other.

After BARRE (Dbouk & Shanbhag, ICML 2023, arXiv:2302.01375): member ``m`` is searched with the
``"boosted"`` inner attack (:mod:`rst.search.boosted_attack`: PGD on the switch-probability-weighted
expected loss of the earlier, frozen members plus the new one, and BARRE's wrong-class term), its
scores start from member ``m - 1``'s (``SearchConfig.boost_warm_start``) or fresh, and the switch
probabilities are refit on validation images after each member
(:func:`rst.evaluation.switch_probabilities.optimal_probabilities`, ARC inside). Over one random network the K
members are K masks of the same frozen weights.

    >>> res = boosted_search(preset("tiny"), members=3, out="runs/boost")   # resumable
    >>> res.candidate_set.probabilities                                     # alpha, fitted on validation
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

# --------------------------------------------------------------------------------------------
# the boosted search: members one after another, alpha refit after each
# --------------------------------------------------------------------------------------------


@dataclass
class BoostedResult:
    candidate_set: object          # rst.network.masks.CandidateSet with probabilities
    path: Path
    seconds: float


def _set_path(out: Path, m: int) -> Path:
    return out / f"set{m}.rst.safetensors"


ALPHA_IMAGES, ALPHA_ITERATIONS, ARC_STEPS = 200, 8, 5     # how alpha is refit after each member


def fit_alpha(cs, data, eps: float, val_images: int = ALPHA_IMAGES, iterations: int = ALPHA_ITERATIONS,
              arc_steps: int = ARC_STEPS) -> list[float]:
    """Switch probabilities of ``cs`` fitted on ``data``'s first ``val_images`` VALIDATION images (ARC with
    ``arc_steps`` iterations and the two closest boundaries inside), summing to 1; ``[1.0]`` for one member.
    What the boosted search does after each member, and what any other set compared with it should get."""
    from rst.evaluation.r2s import R2S
    from rst.evaluation.switch_probabilities import optimal_probabilities
    if len(cs) == 1:
        return [1.0]
    r2s = R2S(cs)
    x, y = data.x_val[:val_images], data.y_val[:val_images]
    res = optimal_probabilities(r2s, x, y, eps=eps, iterations=iterations, steps=arc_steps, topk=2)
    s = sum(res["alpha"])
    return [a / s for a in res["alpha"]]


def _check_first(first, cfg) -> None:
    """Refuse a first member that is not one ticket of ``cfg``'s network (ValueError, one line)."""
    spec = cfg.network_spec()
    if len(first.tickets) != 1:
        raise ValueError(f"the first member must be one ticket, got a set of {len(first.tickets)}")
    if first.spec != spec:
        raise ValueError(f"the first member is of another network ({first.spec}), the search's is {spec}")


def _start_from(first, cfg, out: Path) -> None:
    """Write ``out/set1`` holding ``first`` (a one-ticket CandidateSet) with alpha 1."""
    from rst.network.masks import CandidateSet, save_tickets
    cs = CandidateSet(cfg.network_spec(), list(first.tickets))
    cs.probabilities = [1.0]
    save_tickets(_set_path(out, 1), cs)


def boosted_search(cfg, members: int, out: str | Path, *, device="cpu", first=None,
                   data=None, data_dir: str | None = None, alpha_images: int = ALPHA_IMAGES,
                   alpha_iterations: int = ALPHA_ITERATIONS, arc_steps: int = ARC_STEPS,
                   progress: Callable[[dict], None] | None = None) -> BoostedResult:
    """Search ``members`` tickets of ``cfg``'s network, each against the current ensemble (resumable).

    Member ``m``'s scores start from member ``m - 1``'s (``cfg.boost_warm_start``) or fresh; its inner attack
    is ``"boosted"``. After each member the switch probabilities are refit on ``alpha_images``
    validation images (never the test set) and ``out/set{m+1}.rst.safetensors`` is written with
    them; a killed run resumes from the last set file and the member's epoch checkpoint.

    ``first`` (a one-ticket CandidateSet of ``cfg``'s network, e.g. a shipped zoo ticket) is member 0 as it is: only
    members 1.. are searched. It has no scores to warm-start from, so member 1 starts fresh.
    """
    from rst.runtime.checkpoint import load_checkpoint
    from rst.network.masks import CandidateSet, load_tickets, save_tickets
    from .loop import run_search, search_data
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if first is not None:
        _check_first(first, cfg)
    out, t0 = Path(out), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else search_data(cfg, data_dir)
    if first is not None and not _set_path(out, 1).exists():
        _start_from(first, cfg, out)
    done = max([m for m in range(1, members + 1) if _set_path(out, m).exists()], default=0)
    cs = load_tickets(_set_path(out, done)) if done else None
    for m in range(done, members):
        mcfg = cfg.replace(inner_attack="boosted", boost_members=str(_set_path(out, m)) if m else "")
        if first is not None and m == 1:
            mcfg = mcfg.replace(boost_warm_start=False)     # the given member 0 has no scores: a fresh start, recorded
        work = out / f"member{m}"
        init = None
        if mcfg.boost_warm_start and m > 0 and not (work / "checkpoint.pt").exists():
            init = load_checkpoint(out / f"member{m - 1}" / "checkpoint.pt", torch.device(device))["model"]
        result = run_search(mcfg, device=device, data=data, workdir=work, resume=True, progress=progress,
                            initial_state=init)
        ticket = result.ticket
        ticket.name = f"boost{m}-keep{cfg.keep_ratio:g}"
        tickets = ([] if cs is None else list(cs.tickets)) + [ticket]
        cs = CandidateSet(result.spec, tickets)
        cs.probabilities = fit_alpha(cs, data, cfg.eps, alpha_images, alpha_iterations, arc_steps)
        save_tickets(_set_path(out, m + 1), cs)
        if progress is not None:
            progress({"event": "member", "member": m, "members": members, "alpha": cs.probabilities})
    return BoostedResult(load_tickets(_set_path(out, members)), _set_path(out, members), time.perf_counter() - t0)


__all__ = ["BoostedResult", "boosted_search", "fit_alpha"]
