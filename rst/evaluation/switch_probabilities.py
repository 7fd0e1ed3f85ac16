"""Switch probabilities of a random switch (R2S): checked, and chosen on validation images.

R2S answers each query with member ``k`` with probability ``alpha_k``. The paper draws uniformly;
Dbouk & Shanbhag (ICML 2023, arXiv:2302.01375, BARRE) choose ``alpha`` by projected subgradient
descent on the probability simplex: at each iterate the attack (ARC by default, which knows
``alpha``) is run against the switch, the members' error rates ``e_k`` on its adversarial examples
are the subgradient of the expected error ``sum_k alpha_k e_k``, and ``alpha <- P(alpha - lr e)``.
The iterate with the lowest expected error under its own attack is kept. Only validation images
may be used: the probabilities are a choice, and a choice made on the test set is not a test.

    >>> res = optimal_probabilities(r2s, x_val, y_val, eps=0.1)      # {"alpha", "expected_acc", "history"}
    >>> r2s.set_probabilities(res["alpha"])
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from rst.network.probabilities import TOLERANCE, check_probabilities  # noqa: F401  (re-exported)


def is_uniform(p: torch.Tensor) -> bool:
    return bool(torch.all(p == p[0]))


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of ``v`` (K,) onto the probability simplex (Duchi et al., ICML 2008)."""
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
    rho = int(torch.nonzero(u - css / k > 0).max())
    return torch.clamp(v - css[rho] / (rho + 1), min=0)


def _arc_attack(model, x, y, eps, alpha, **kw):
    from .ensemble_attacks import arc
    return arc(model, x, y, eps, probs=alpha, **kw)


def member_errors(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K,) error rate of each member on ``x``."""
    with torch.no_grad():
        wrong = model.member_logits(x).argmax(-1) != y.unsqueeze(0)                # (K, B)
    return wrong.float().mean(1)


def optimal_probabilities(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, iterations: int = 20,
                          lr: float = 1.0, attack: Callable | None = None, start: Sequence[float] | None = None,
                          progress: Callable[[int, int], None] | None = None, **attack_kw) -> dict:
    """Projected subgradient descent on the simplex of the members' error rates under ``attack``.

    ``model``: a randomized ensemble (``K``, ``member_logits``, ``use_member``; e.g. ``rst.evaluation.r2s.R2S``),
    ``x``/``y``: VALIDATION images. ``attack(model, x, y, eps, alpha, **attack_kw)`` returns
    adversarial examples against the switch with probabilities ``alpha`` (default: ARC,
    :func:`rst.evaluation.ensemble_attacks.arc`). Step ``lr / sqrt(t)``. Returns ``{"alpha", "expected_acc",
    "history": [{"alpha", "member_errors", "expected_acc"}], "attack"}``: the iterate whose attack
    left the highest expected accuracy.
    """
    K = int(model.K)
    attack = attack or _arc_attack
    alpha = torch.tensor(check_probabilities(list(start), K) if start is not None else [1.0 / K] * K,
                         dtype=torch.float64)
    history, best = [], None
    for t in range(1, iterations + 1):
        x_adv = attack(model, x, y, eps, alpha.float(), **attack_kw)
        e = member_errors(model, x_adv, y).double().cpu()
        acc = float(1 - (alpha * e).sum())
        history.append({"alpha": alpha.tolist(), "member_errors": e.tolist(), "expected_acc": acc})
        if best is None or acc > best["expected_acc"]:
            best = history[-1]
        alpha = project_simplex(alpha - lr / math.sqrt(t) * e)
        if progress is not None:
            progress(t, iterations)
    return {"alpha": best["alpha"], "expected_acc": best["expected_acc"], "history": history,
            "attack": getattr(attack, "__name__", str(attack)), "n_images": len(x), "eps": eps}
