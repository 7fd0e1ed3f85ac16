"""Transfer-matrix throughput: K² attacks per pair against :func:`rst.evaluation.metrics.transfer_matrix`'s K."""
from __future__ import annotations

import time

import torch
import torch.nn as nn

from rst.evaluation.attacks import AttackConfig
from rst.data.datasets import synthetic_dataset
from rst.runtime.device import resolve_device
from rst.evaluation.metrics import accuracy, adversarial_examples, transfer_matrix
from rst.network.masked import set_keep_ratio
from rst.network.masks import CandidateSet, apply_ticket, extract_ticket
from rst.network.models import NetworkSpec, build_network
from rst.network.weights import init_scores
from .timing import _dataset_for, _sizes, _sync, device_name


# --------------------------------------------------------------------------------------------
# transfer benchmark
# --------------------------------------------------------------------------------------------


def keep_ratios(k: int, lo: float = 0.03, hi: float = 0.6) -> list[float]:
    """``k`` keep ratios spread geometrically over ``[lo, hi]``, rounded to 3 decimals."""
    if k == 1:
        return [hi]
    return [round(lo * (hi / lo) ** (i / (k - 1)), 3) for i in range(k)]


@torch.no_grad()
def _calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """BN running statistics = the statistics of ``x`` (one train-mode forward, cumulative average)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    model(x)
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.eval()


def random_candidate_set(spec: NetworkSpec, ratios: list[float], x_calib: torch.Tensor,
                         device: torch.device | None = None, seed: int = 0) -> CandidateSet:
    """Tickets over ``spec``'s network with random masks (fresh scores per ticket, seeded) and BN
    statistics calibrated on ``x_calib``: stand-ins for searched tickets, for timing."""
    net = build_network(spec, device=device)
    tickets = []
    for i, r in enumerate(ratios):
        set_keep_ratio(net, r)
        init_scores(net, seed + 1 + i)
        _calibrate_bn(net, x_calib.to(next(net.parameters()).device))
        tickets.append(extract_ticket(net, name=f"keep{r:g}"))
    return CandidateSet(spec, tickets)


def naive_transfer_matrix(cs: CandidateSet, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig, *,
                          device=None, batch_size: int = 512, seed: int = 0) -> torch.Tensor:
    """The naive way: for every (source, target) pair, attack the source again (K² attacks)."""
    src, tgt = build_network(cs.spec, device=device).eval(), build_network(cs.spec, device=device).eval()
    K = len(cs)
    matrix = torch.zeros(K, K)
    for i in range(K):
        for j in range(K):
            apply_ticket(src, cs.tickets[i])
            x_adv = adversarial_examples(src, x, y, attack, batch_size, seed)
            apply_ticket(tgt, cs.tickets[j])
            matrix[i, j] = accuracy(tgt, x_adv, y, batch_size)
    return matrix


TRANSFER_SIZES = {"arch": "resnet18", "width": 1.0, "images": 1000}
TOY_TRANSFER_SIZES = {"arch": "fmnist_conv4", "width": 0.25, "images": 64}


def bench_transfer(*, arch: str | None = None, width: float | None = None, k: int = 8, images: int | None = None,
                   attack_steps: int = 7, batch_size: int = 512, device: str | torch.device = "auto",
                   toy: bool = False, seed: int = 0) -> dict:
    """Seconds for a K x K transfer matrix: naive (K² attacks) vs :func:`rst.evaluation.metrics.transfer_matrix` (K).

    Arguments:
        arch, width: the network ("resnet18", 1.0). k: tickets (random masks at keep ratios 0.03 .. 0.6).
        images: attacked images (1000; synthetic, the architecture's geometry). attack_steps: PGD steps
            (eps 8/255, step 2/255, no early stop). batch_size: images per attack batch.
        toy: CPU-size defaults for the sizes not given (Conv-4 at quarter width, 64 images).

    Returns:
        ``{"naive": {"seconds", "attacks"}, "ours": {...}, "speedup", "identical", "max_abs_diff", ...}``;
        ``identical``: the two matrices are equal (they must be on the CPU; on a GPU non-deterministic
        kernels may flip a few predictions).

    Example::
        >>> r = bench_transfer(device="cuda")
    """
    sizes = _sizes(TOY_TRANSFER_SIZES if toy else TRANSFER_SIZES, arch=arch, width=width, images=images)
    arch, width, images = sizes["arch"], sizes["width"], sizes["images"]
    device = resolve_device(device)
    spec = NetworkSpec(arch, dataset=_dataset_for(arch), width=width, seed=seed)
    x, y = synthetic_dataset(images, shape=(spec.in_channels, spec.image_size, spec.image_size),
                             num_classes=spec.num_classes, seed=seed + 1)
    ratios = keep_ratios(k)
    cs = random_candidate_set(spec, ratios, x[:256], device=device, seed=seed)
    attack = AttackConfig("pgd", eps=8 / 255, alpha=2 / 255, steps=attack_steps)

    t0 = time.perf_counter()
    naive = naive_transfer_matrix(cs, x, y, attack, device=device, batch_size=batch_size, seed=seed)
    _sync(device)
    naive_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = transfer_matrix(cs, x, y, attack, device=device, batch_size=batch_size, seed=seed).matrix
    _sync(device)
    ours_seconds = time.perf_counter() - t0
    return {
        "benchmark": "transfer",
        "device": device_name(device), "torch": torch.__version__,
        "config": {"arch": arch, "width": width, "k": k, "keep_ratios": ratios, "images": images,
                   "batch_size": batch_size, "attack": attack.describe()},
        "naive": {"seconds": naive_seconds, "attacks": k * k, "matrix": naive.tolist()},
        "ours": {"seconds": ours_seconds, "attacks": k, "matrix": ours.tolist()},
        "speedup": naive_seconds / ours_seconds,
        "identical": bool(torch.equal(naive, ours)),
        "max_abs_diff": float((naive - ours).abs().max()),
    }
