"""Throughput benchmarks: our search step against the reference recipe's, and the transfer matrix.

    python -m rst.bench search                                   # ResNet-18, CIFAR-shaped, batch 256, PGD-7
    python -m rst.bench search --device cuda --bf16 --channels-last --json bench-search.json
    python -m rst.bench transfer --device cuda --json bench-transfer.json
    python -m rst.bench search --toy                             # CPU-size smoke run (seconds)
    python -m rst.bench tickets --device cuda                    # 7 tickets in one pass vs one at a time

``search`` times, on the same device and the same seeded network (Fu et al., NeurIPS 2021,
arXiv:2110.14068; spec §2 and §6):

* **reference** (:class:`ReferenceStep`): the public reference code's training step, reimplemented.
  fp32; every forward re-ranks each layer's scores with a FULL SORT of |s| (hidden-networks'
  ``GetSubnet``: ``scores.abs().flatten().sort()``, threshold at index ``j = int((1 - k) * numel)``);
  the PGD-7 inner attack calls ``loss.backward()`` at every step, so it also computes the score
  gradients and throws them away; the batch comes from host memory (``.to(device)`` each step).
* **ours**: :func:`rst.search.adversarial_fit` itself, one epoch, timed between its per-step progress
  events. The mask is computed once per optimiser step (top-k, no sort) and reused by every attack
  step (:func:`rst.masked.cached_masks`); attack steps compute the input gradient only; the data
  set lives on the device (batches cut and augmented there); optional bf16 autocast and
  channels_last (CUDA only), optional ``torch.compile``.

Both use the same attack budget (PGD-7, eps 8/255, step 2/255, BN in train mode) and batch.
The reference's host-side data pipeline (PIL augmentation in DataLoader workers) is NOT timed:
it gets a ready batch in host memory, which favours the reference.

``transfer`` times a K x K transfer matrix (spec §4) computed naively (every (source, target) pair
attacks the source again: K² attacks) against :func:`rst.evaluate.transfer_matrix` (K attacks,
each evaluated on all targets), and checks that the two matrices agree (same seed per source).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
import types
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import AttackConfig
from .data import synthetic_dataset
from .device import resolve_device
from .evaluate import accuracy, adversarial_examples, transfer_matrix
from .masked import masked_layers, set_keep_ratio
from .masks import CandidateSet, apply_ticket, extract_ticket
from .models import NetworkSpec, build_network, model_entry
from .provenance import provenance
from .search import SearchConfig, SearchData, adversarial_fit, score_parameters
from .weights import init_scores

# --------------------------------------------------------------------------------------------
# The reference recipe's step
# --------------------------------------------------------------------------------------------


class SortMask(torch.autograd.Function):
    """hidden-networks' ``GetSubnet``: a full sort of ``magnitude`` at every call, straight-through.

    Keeps the entries at sorted positions ``j = int((1 - keep_ratio) * numel)`` and above, i.e.
    ``numel - j`` entries: the same set as a top-k with that k (the count can exceed our
    ``round(keep_ratio * numel)`` by one).
    """

    @staticmethod
    def forward(ctx, magnitude: torch.Tensor, keep_ratio: float) -> torch.Tensor:
        out = magnitude.clone()
        _, idx = magnitude.flatten().sort()
        j = int((1 - keep_ratio) * magnitude.numel())
        flat = out.view(-1)                 # shares out's memory
        flat[idx[:j]] = 0
        flat[idx[j:]] = 1
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def sort_mask(magnitude: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """The reference's mask of ``magnitude`` (= |scores|) at ``keep_ratio`` (float 0/1, same shape)."""
    return SortMask.apply(magnitude, keep_ratio)


def _reference_mask(layer) -> torch.Tensor:
    return sort_mask(layer.scores.abs(), layer.keep_ratio)


@contextlib.contextmanager
def reference_masks(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, every masked layer of ``model`` computes its mask by a full sort, at every forward."""
    layers = [layer for _, layer in masked_layers(model)]
    try:
        for layer in layers:
            layer.mask = types.MethodType(_reference_mask, layer)    # shadows MaskedMixin.mask
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop("mask", None)


def reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference code's PGD: ``loss.backward()`` at every step (score gradients computed too,
    then zeroed), L∞, uniform random start, model in whatever mode the caller set."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()                                    # also fills scores.grad: wasted work
        step = alpha * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv.detach() + step, x - eps), x + eps).clamp(0, 1)
        model.zero_grad(set_to_none=False)                 # the PyTorch-1.x default the code ran on
    return x_adv.detach()


class ReferenceStep:
    """One optimiser step of the reference recipe on ``model`` (a masked network, scores trainable).

    ``step(x, y)`` takes a host batch, copies it to the device, runs the reference PGD with BN in
    train mode under :func:`reference_masks`, then the SGD update of the scores (momentum 0.9,
    weight decay 5e-4, lr 0.1); fp32 throughout. Returns the loss (a device tensor).

    Example::

        >>> step = ReferenceStep(build_network(spec, device="cuda", keep_ratio=0.1), AttackConfig("pgd", steps=7))
        >>> loss = step(x_cpu, y_cpu)
    """

    def __init__(self, model: nn.Module, attack: AttackConfig, *, lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 5e-4, seed: int = 0):
        self.model, self.attack = model, attack
        self.device = next(model.parameters()).device
        self.opt = torch.optim.SGD(score_parameters(model), lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(self.device), y.to(self.device)
        self.model.train()
        with reference_masks(self.model):
            x_adv = reference_pgd(self.model, x, y, self.attack.eps, self.attack.alpha, self.attack.steps,
                                  self.generator)
            loss = F.cross_entropy(self.model(x_adv), y)
            self.opt.zero_grad(set_to_none=False)
            loss.backward()
            self.opt.step()
        return loss.detach()


# --------------------------------------------------------------------------------------------
# search benchmark
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} threads)"


def _dataset_for(arch: str) -> str:
    """A dataset geometry for the architecture: CIFAR-10 (3x32x32) or Fashion-MNIST (1x28x28)."""
    return "cifar10" if model_entry(arch).input_size == 32 else "fashion_mnist"


def _timed_fit_setup(arch: str, width: float, batch_size: int, n_steps: int, attack_steps: int, seed: int,
                     **knobs) -> tuple[SearchConfig, torch.Tensor, torch.Tensor]:
    """The benchmarks' recipe (one epoch of PGD-``attack_steps``, eps 8/255, step 2/255, BN in train
    mode, no validation) and ``n_steps`` batches of synthetic data of the architecture's geometry."""
    cfg = SearchConfig(arch=arch, dataset=_dataset_for(arch), width=width, seed=seed, epochs=1,
                       batch_size=batch_size, lr_milestones=(), inner_attack="pgd", eps=8 / 255, alpha=2 / 255,
                       steps=attack_steps, attack_bn_mode="train", val_size=0, val_images=0, selection="last",
                       augment=True, **knobs)
    spec = cfg.network_spec()
    x, y = synthetic_dataset(n_steps * batch_size, shape=(spec.in_channels, spec.image_size, spec.image_size),
                             num_classes=spec.num_classes, seed=seed)
    return cfg, x, y


def _time_fit(model: nn.Module, params, cfg: SearchConfig, x: torch.Tensor, y: torch.Tensor,
              device: torch.device, warmup: int) -> float:
    """Seconds of :func:`rst.search.adversarial_fit`'s steps after the first ``warmup`` (one epoch over
    ``x``), timed between its per-step progress events (sent after the step's ``loss.item()``)."""
    stamps: list[float] = []

    def on_event(event: dict) -> None:
        if event["event"] == "step":
            _sync(device)
            stamps.append(time.perf_counter())

    adversarial_fit(model, params, cfg, SearchData(x, y, x[:0], y[:0]), device, progress=on_event)
    return stamps[-1] - stamps[warmup - 1]


# Sizes when not given: the paper's (batch 256, full width) or a CPU toy (seconds, not representative).
SEARCH_SIZES = {"width": 1.0, "batch_size": 256, "steps": 10, "warmup": 3}
TOY_SEARCH_SIZES = {"width": 0.125, "batch_size": 32, "steps": 2, "warmup": 1}


def _sizes(defaults: dict, **given) -> dict:
    return {k: given[k] if given.get(k) is not None else v for k, v in defaults.items()}


def bench_search(*, arch: str = "resnet18", width: float | None = None, batch_size: int | None = None,
                 steps: int | None = None, warmup: int | None = None, attack_steps: int = 7,
                 keep_ratio: float = 0.1, device: str | torch.device = "auto", bf16: bool = False,
                 channels_last: bool = False, compile: bool = False, toy: bool = False, seed: int = 0) -> dict:
    """Images per second of the reference recipe's search step and of ours (see the module docstring).

    Arguments:
        arch, width: the network (registry name, channel multiplier). (Default: "resnet18", 1.0)
        batch_size: images per optimiser step (256). steps: timed steps (10); warmup: untimed steps
            before them (3, at least 1).
        attack_steps: PGD steps of the inner attack (eps 8/255, step 2/255). (Default: 7)
        keep_ratio: fraction of weights kept per layer. (Default: 0.1)
        device: "auto", "cpu", "cuda", "cuda:1", ...
        bf16, channels_last, compile: our speed knobs (bf16 and channels_last act on CUDA only;
            the reference always runs fp32, contiguous, eager).
        toy: CPU-size defaults for the sizes not given (width 0.125, batch 32, 2 timed steps, 1 warm-up).

    Returns:
        ``{"reference": {...}, "ours": {...}, "speedup", "device", "torch", "config"}``, each variant
        with ``images_per_s``, ``seconds`` and ``steps``.

    Example::
        >>> r = bench_search(device="cuda", bf16=True, channels_last=True)
        >>> r["speedup"]
    """
    sizes = _sizes(TOY_SEARCH_SIZES if toy else SEARCH_SIZES, width=width, batch_size=batch_size, steps=steps,
                   warmup=warmup)
    width, batch_size, steps, warmup = sizes["width"], sizes["batch_size"], sizes["steps"], sizes["warmup"]
    if steps < 1 or warmup < 1:
        raise ValueError(f"need steps >= 1 and warmup >= 1, got steps={steps}, warmup={warmup}")
    device = resolve_device(device)
    cuda = device.type == "cuda"
    cfg, x, y = _timed_fit_setup(arch, width, batch_size, warmup + steps, attack_steps, seed, keep_ratio=keep_ratio,
                                 precision="bf16" if bf16 and cuda else "fp32",
                                 channels_last=bool(channels_last and cuda), compile=bool(compile))
    spec = cfg.network_spec()
    n_steps = warmup + steps

    # (a) the reference recipe: host batches, full sort at every forward, score grads in the attack
    model = build_network(spec, device=device, keep_ratio=keep_ratio)
    ref = ReferenceStep(model, AttackConfig("pgd", eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps), lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay, seed=seed)
    batches = [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size])
               for i in range(n_steps)]
    for xb, yb in batches[:warmup]:
        ref(xb, yb)
    _sync(device)
    t0 = time.perf_counter()
    for xb, yb in batches[warmup:]:
        ref(xb, yb)
    _sync(device)
    ref_seconds = time.perf_counter() - t0
    del model, ref

    # (b) ours: rst.search.adversarial_fit itself, timed between its per-step progress events
    model = build_network(spec, device=device, keep_ratio=keep_ratio)
    ours_seconds = _time_fit(model, score_parameters(model), cfg, x, y, device, warmup)
    del model

    images = steps * batch_size
    result = {
        "benchmark": "search",
        "device": device_name(device), "torch": torch.__version__,
        "config": {"arch": arch, "dataset_shape": [spec.in_channels, spec.image_size, spec.image_size],
                   "width": width, "keep_ratio": keep_ratio, "batch_size": batch_size, "timed_steps": steps,
                   "warmup_steps": warmup, "inner_attack": cfg.describe_inner_attack(),
                   "attack_bn_mode": "train"},
        "reference": {"images_per_s": images / ref_seconds, "seconds": ref_seconds, "steps": steps,
                      "recipe": "fp32, full sort of |scores| at every forward, loss.backward() in every "
                                "attack step, host batch copied each step"},
        "ours": {"images_per_s": images / ours_seconds, "seconds": ours_seconds, "steps": steps,
                 "precision": cfg.precision, "channels_last": cfg.channels_last, "compile": cfg.compile,
                 "recipe": "rst.search.adversarial_fit: top-k mask once per step, cached in the attack, "
                           "input gradients only, data on the device"},
    }
    result["speedup"] = result["ours"]["images_per_s"] / result["reference"]["images_per_s"]
    return result


# --------------------------------------------------------------------------------------------
# several tickets in one batched pass
# --------------------------------------------------------------------------------------------

TICKETS_SIZES = {"width": 1.0, "batch_size": 256, "steps": 10, "warmup": 2}
TOY_TICKETS_SIZES = {"width": 0.25, "batch_size": 32, "steps": 2, "warmup": 1}


def bench_tickets(*, arch: str = "fmnist_conv4", width: float | None = None, k: int = 7,
                  batch_size: int | None = None, steps: int | None = None, warmup: int | None = None,
                  attack_steps: int = 7, device: str | torch.device = "auto", bf16: bool = False,
                  toy: bool = False, seed: int = 0) -> dict:
    """Ticket-images per second: K searches one after another vs K tickets in one batched pass.

    Both run :func:`rst.search.adversarial_fit` (PGD-``attack_steps`` inner attack, BN in train mode)
    on synthetic data of the architecture's geometry: (a) one ticket (keep ratio 0.1), whose rate is
    what K sequential searches get; (b) a :class:`rst.batched.TicketBatch` of ``k`` tickets (keep
    ratios 0.03 .. 0.6), where each image counts once per ticket. Defaults: Fashion-MNIST Conv-4,
    full width, batch 256, K = 7 (a zoo), 10 timed steps after 2 warm-up steps.
    """
    from .batched import TicketBatch

    sizes = _sizes(TOY_TICKETS_SIZES if toy else TICKETS_SIZES, width=width, batch_size=batch_size, steps=steps,
                   warmup=warmup)
    width, batch_size, steps, warmup = sizes["width"], sizes["batch_size"], sizes["steps"], sizes["warmup"]
    if steps < 1 or warmup < 1 or k < 1:
        raise ValueError(f"need steps, warmup, k >= 1, got {steps}, {warmup}, {k}")
    device = resolve_device(device)
    cfg, x, y = _timed_fit_setup(arch, width, batch_size, warmup + steps, attack_steps, seed, keep_ratio=0.1,
                                 precision="bf16" if bf16 and device.type == "cuda" else "fp32")
    spec = cfg.network_spec()
    one = build_network(spec, device=device, keep_ratio=cfg.keep_ratio)
    one_seconds = _time_fit(one, score_parameters(one), cfg, x, y, device, warmup)
    del one
    ratios = keep_ratios(k)
    batch = TicketBatch(build_network(spec), ratios).to(device)
    batch_seconds = _time_fit(batch, list(batch.scores), cfg, x, y, device, warmup)
    images = steps * batch_size
    result = {
        "benchmark": "tickets",
        "device": device_name(device), "torch": torch.__version__,
        "config": {"arch": arch, "width": width, "k": k, "keep_ratios": ratios, "batch_size": batch_size,
                   "timed_steps": steps, "warmup_steps": warmup, "precision": cfg.precision,
                   "inner_attack": cfg.describe_inner_attack()},
        "sequential": {"ticket_images_per_s": images / one_seconds, "seconds_per_step": one_seconds / steps,
                       "what": "one ticket per adversarial_fit (K searches: K times this)"},
        "batched": {"ticket_images_per_s": k * images / batch_seconds, "seconds_per_step": batch_seconds / steps,
                    "what": f"rst.batched.TicketBatch: {k} tickets per step"},
    }
    result["speedup"] = result["batched"]["ticket_images_per_s"] / result["sequential"]["ticket_images_per_s"]
    return result


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
    """Seconds for a K x K transfer matrix: naive (K² attacks) vs :func:`rst.evaluate.transfer_matrix` (K).

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


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _print_search(r: dict) -> None:
    c = r["config"]
    print(f"device: {r['device']}   torch {r['torch']}")
    shape = "x".join(map(str, c["dataset_shape"]))
    print(f"{c['arch']} width {c['width']:g} on {shape}, keep ratio {c['keep_ratio']:g}, batch {c['batch_size']}, "
          f"inner {c['inner_attack']}, {c['timed_steps']} timed steps after {c['warmup_steps']} warm-up")
    ref, ours = r["reference"], r["ours"]
    knobs = ", ".join([ours["precision"]] + (["channels_last"] if ours["channels_last"] else [])
                      + (["compile"] if ours["compile"] else []))
    print(f"  reference  {ref['images_per_s']:10.1f} images/s   ({ref['recipe']})")
    print(f"  ours       {ours['images_per_s']:10.1f} images/s   ({knobs}; {ours['recipe']})")
    print(f"  speedup    {r['speedup']:10.2f}x")


def _print_transfer(r: dict) -> None:
    c = r["config"]
    print(f"device: {r['device']}   torch {r['torch']}")
    print(f"{c['k']} tickets of {c['arch']} width {c['width']:g} (keep ratios {c['keep_ratios']}), "
          f"{c['images']} images, {c['attack']}")
    print(f"  naive, per pair  {r['naive']['seconds']:8.2f} s   ({r['naive']['attacks']} attacks)")
    print(f"  transfer_matrix  {r['ours']['seconds']:8.2f} s   ({r['ours']['attacks']} attacks)")
    print(f"  speedup          {r['speedup']:8.2f}x")
    print(f"  matrices identical: {r['identical']} (max |diff| {r['max_abs_diff']:.4g})")


def _print_tickets(r: dict) -> None:
    c = r["config"]
    print(f"device: {r['device']}   torch {r['torch']}")
    print(f"{c['k']} tickets of {c['arch']} width {c['width']:g}, batch {c['batch_size']}, {c['precision']}, "
          f"inner {c['inner_attack']}, {c['timed_steps']} timed steps after {c['warmup_steps']} warm-up")
    print(f"  one ticket at a time  {r['sequential']['ticket_images_per_s']:10.1f} ticket-images/s")
    print(f"  {c['k']} in one pass        {r['batched']['ticket_images_per_s']:10.1f} ticket-images/s")
    print(f"  speedup               {r['speedup']:10.2f}x")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rst.bench", description="throughput benchmarks")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="search step: the reference recipe vs ours (images/s)")
    s.add_argument("--arch", default="resnet18")
    s.add_argument("--width", type=float, help="channel multiplier (default 1; --toy: 0.125)")
    s.add_argument("--batch-size", dest="batch_size", type=int, help="images per step (default 256; --toy: 32)")
    s.add_argument("--steps", type=int, help="timed optimiser steps (default 10; --toy: 2)")
    s.add_argument("--warmup", type=int, help="untimed steps first, >= 1 (default 3; --toy: 1)")
    s.add_argument("--attack-steps", dest="attack_steps", type=int, default=7, help="PGD steps of the inner attack")
    s.add_argument("--keep-ratio", dest="keep_ratio", type=float, default=0.1)
    s.add_argument("--bf16", action="store_true", help="ours: bf16 autocast (CUDA)")
    s.add_argument("--channels-last", dest="channels_last", action="store_true", help="ours: channels_last (CUDA)")
    s.add_argument("--compile", action="store_true", help="ours: torch.compile the model (experimental)")
    t = sub.add_parser("transfer", help="K x K transfer matrix: per pair (K² attacks) vs transfer_matrix (K)")
    t.add_argument("--arch", help="default resnet18; --toy: fmnist_conv4")
    t.add_argument("--width", type=float, help="default 1; --toy: 0.25")
    t.add_argument("--k", type=int, default=8, help="tickets")
    t.add_argument("--images", type=int, help="default 1000; --toy: 64")
    t.add_argument("--attack-steps", dest="attack_steps", type=int, default=7)
    t.add_argument("--batch-size", dest="batch_size", type=int, default=512)
    b = sub.add_parser("tickets", help="K searches one at a time vs K tickets in one batched pass")
    b.add_argument("--arch", default="fmnist_conv4")
    b.add_argument("--width", type=float, help="default 1; --toy: 0.25")
    b.add_argument("--k", type=int, default=7, help="tickets in the batch")
    b.add_argument("--batch-size", dest="batch_size", type=int, help="images per step (default 256; --toy: 32)")
    b.add_argument("--steps", type=int, help="timed optimiser steps (default 10; --toy: 2)")
    b.add_argument("--warmup", type=int, help="untimed steps first, >= 1 (default 2; --toy: 1)")
    b.add_argument("--attack-steps", dest="attack_steps", type=int, default=7)
    b.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    for q in (s, t, b):
        q.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        q.add_argument("--toy", action="store_true", help="CPU size: seconds, not representative")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", help="write the numbers, with provenance, to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kwargs = {k: v for k, v in vars(args).items() if k not in ("command", "json")}
    if args.command == "search":
        result = bench_search(**kwargs)
        _print_search(result)
    elif args.command == "tickets":
        result = bench_tickets(**kwargs)
        _print_tickets(result)
    else:
        result = bench_transfer(**kwargs)
        _print_transfer(result)
    if args.json:
        result["provenance"] = provenance(result["device"])
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
