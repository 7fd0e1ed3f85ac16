"""Search-step throughput: the reference recipe's step against ours, and K tickets in one batched pass."""
from __future__ import annotations

import time

import torch

from rst.evaluation.attacks import AttackConfig
from rst.runtime.device import resolve_device
from rst.network.models import build_network
from rst.search.loop import SearchData, prepare_models, score_parameters, start_fit, train_step
from .reference import ReferenceStep
from .transfer import keep_ratios
from .timing import _sizes, _sync, _time_fit, _timed_fit_setup, device_name


# --------------------------------------------------------------------------------------------
# search benchmark
# --------------------------------------------------------------------------------------------


# Sizes when not given: the paper's (batch 256, full width) or a CPU toy (seconds, not representative).
SEARCH_SIZES = {"width": 1.0, "batch_size": 256, "steps": 10, "warmup": 3}
TOY_SEARCH_SIZES = {"width": 0.125, "batch_size": 32, "steps": 2, "warmup": 1}


def bench_search(*, arch: str = "resnet18", width: float | None = None, batch_size: int | None = None,
                 steps: int | None = None, warmup: int | None = None, attack_steps: int = 7,
                 keep_ratio: float = 0.1, device: str | torch.device = "auto", precision: str = "auto",
                 channels_last: bool = False, compile: bool = False, toy: bool = False, seed: int = 0) -> dict:
    """Images per second of the reference recipe's search step and of ours (see the module docstring).

    Arguments:
        arch, width: the network (registry name, channel multiplier). (Default: "resnet18", 1.0)
        batch_size: images per optimiser step (256). steps: timed steps (10); warmup: untimed steps
            before them (3, at least 1).
        attack_steps: PGD steps of the inner attack (eps 8/255, step 2/255). (Default: 7)
        keep_ratio: fraction of weights kept per layer. (Default: 0.1)
        device: "auto", "cpu", "cuda", "cuda:1", ...
        precision: our speed settings (:mod:`rst.runtime.speed`): "auto" (the search's default: bf16 autocast
            + channels_last where the device has native bf16), "fp32" or "bf16"; channels_last and
            compile apply with an explicit precision (compile also with "auto"). The reference always
            runs fp32, contiguous, eager.
        toy: CPU-size defaults for the sizes not given (width 0.125, batch 32, 2 timed steps, 1 warm-up).

    Returns:
        ``{"reference": {...}, "ours": {...}, "speedup", "device", "torch", "config"}``, each variant
        with ``images_per_s``, ``seconds`` and ``steps``.

    Example::
        >>> r = bench_search(device="cuda")                      # ours with the auto fast path
        >>> r["speedup"]
    """
    sizes = _sizes(TOY_SEARCH_SIZES if toy else SEARCH_SIZES, width=width, batch_size=batch_size, steps=steps,
                   warmup=warmup)
    if sizes["steps"] < 1 or sizes["warmup"] < 1:
        raise ValueError(f"need steps >= 1 and warmup >= 1, got steps={sizes['steps']}, warmup={sizes['warmup']}")
    device = resolve_device(device)
    cfg, x, y = _timed_fit_setup(arch, sizes["width"], sizes["batch_size"], sizes["warmup"] + sizes["steps"],
                                 attack_steps, seed, keep_ratio=keep_ratio, precision=precision,
                                 channels_last=bool(channels_last), compile=bool(compile))
    ref, fit = _reference_and_ours(cfg, keep_ratio, device, seed, x, y)
    seconds = _interleaved_seconds(ref, fit, x, y, sizes["batch_size"], sizes["warmup"], device, seed)
    speed = fit.speed.to_dict()
    del ref, fit
    return _search_report(arch, keep_ratio, sizes, cfg, device, seconds, speed)


def _reference_and_ours(cfg, keep_ratio: float, device: torch.device, seed: int, x: torch.Tensor,
                        y: torch.Tensor) -> tuple[ReferenceStep, object]:
    """The two steps timed, on the same seeded network: the reference recipe's and our search loop's fit."""
    spec = cfg.network_spec()
    # (a) the reference recipe: host batches, full sort at every forward, score grads in the attack
    ref = ReferenceStep(build_network(spec, device=device, keep_ratio=keep_ratio),
                        AttackConfig("pgd", eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps), lr=cfg.lr,
                        momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=seed)
    # (b) ours: the search loop's own step (rst.search.loop.train_step) on its device-side loader
    model = build_network(spec, device=device, keep_ratio=keep_ratio)
    fit = start_fit(model, score_parameters(model), cfg, SearchData(x, y, x[:0], y[:0]), device)
    prepare_models(fit)
    fit.model.train()
    return ref, fit


def _interleaved_seconds(ref, fit, x: torch.Tensor, y: torch.Tensor, batch_size: int, warmup: int,
                         device: torch.device, seed: int) -> tuple[float, float]:
    """Seconds of the reference's and our steps after ``warmup``, timed step by step in turn."""
    g = torch.Generator(device=device).manual_seed(seed)
    # interleaved, step by step, so a shared machine's load falls on both alike
    ref_seconds = ours_seconds = 0.0
    for i, (xb, yb) in enumerate(fit.loader):
        t0 = time.perf_counter()
        ref(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size])
        _sync(device)
        t1 = time.perf_counter()
        train_step(fit, xb.contiguous(memory_format=torch.channels_last) if fit.speed.channels_last else xb, yb, g)
        _sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            ref_seconds, ours_seconds = ref_seconds + t1 - t0, ours_seconds + t2 - t1
    return ref_seconds, ours_seconds


def _search_report(arch: str, keep_ratio: float, sizes: dict, cfg, device: torch.device,
                   seconds: tuple[float, float], speed: dict) -> dict:
    """bench_search's result: both variants' images per second, the speed-up, device and configuration."""
    spec = cfg.network_spec()
    ref_seconds, ours_seconds = seconds
    images = sizes["steps"] * sizes["batch_size"]
    result = {
        "benchmark": "search",
        "device": device_name(device), "torch": torch.__version__,
        "config": {"arch": arch, "dataset_shape": [spec.in_channels, spec.image_size, spec.image_size],
                   "width": sizes["width"], "keep_ratio": keep_ratio, "batch_size": sizes["batch_size"],
                   "timed_steps": sizes["steps"], "warmup_steps": sizes["warmup"],
                   "inner_attack": cfg.describe_inner_attack(), "attack_bn_mode": "train"},
        "reference": {"images_per_s": images / ref_seconds, "seconds": ref_seconds, "steps": sizes["steps"],
                      "recipe": "fp32, full sort of |scores| at every forward, loss.backward() in every "
                                "attack step, host batch copied each step"},
        "ours": {"images_per_s": images / ours_seconds, "seconds": ours_seconds, "steps": sizes["steps"],
                 "precision": speed["precision"], "channels_last": speed["channels_last"],
                 "compile": speed["compile"], "speed_reason": speed["reason"],
                 "recipe": "rst.search.loop.train_step: top-k mask once per step, cached in the attack, "
                           "input gradients only, data on the device"},
        "timing": "interleaved step by step (reference, ours, reference, ...) in one process",
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
                  attack_steps: int = 7, device: str | torch.device = "auto", precision: str = "auto",
                  toy: bool = False, seed: int = 0) -> dict:
    """Ticket-images per second: K searches one after another vs K tickets in one batched pass.

    Both run :func:`rst.search.loop.adversarial_fit` (PGD-``attack_steps`` inner attack, BN in train mode)
    on synthetic data of the architecture's geometry: (a) one ticket (keep ratio 0.1), whose rate is
    what K sequential searches get; (b) a :class:`rst.search.batched.TicketBatch` of ``k`` tickets (keep
    ratios 0.03 .. 0.6), where each image counts once per ticket. Defaults: Fashion-MNIST Conv-4,
    full width, batch 256, K = 7 (a zoo), 10 timed steps after 2 warm-up steps.
    """
    from rst.search.batched import TicketBatch

    sizes = _sizes(TOY_TICKETS_SIZES if toy else TICKETS_SIZES, width=width, batch_size=batch_size, steps=steps,
                   warmup=warmup)
    width, batch_size, steps, warmup = sizes["width"], sizes["batch_size"], sizes["steps"], sizes["warmup"]
    if steps < 1 or warmup < 1 or k < 1:
        raise ValueError(f"need steps, warmup, k >= 1, got {steps}, {warmup}, {k}")
    device = resolve_device(device)
    cfg, x, y = _timed_fit_setup(arch, width, batch_size, warmup + steps, attack_steps, seed, keep_ratio=0.1,
                                 precision=precision)
    spec = cfg.network_spec()
    one = build_network(spec, device=device, keep_ratio=cfg.keep_ratio)
    one_seconds, speed = _time_fit(one, score_parameters(one), cfg, x, y, device, warmup)
    del one
    ratios = keep_ratios(k)
    batch = TicketBatch(build_network(spec), ratios).to(device)
    batch_seconds, batch_speed = _time_fit(batch, list(batch.scores), cfg, x, y, device, warmup)
    images = steps * batch_size
    result = {
        "benchmark": "tickets",
        "device": device_name(device), "torch": torch.__version__,
        "config": {"arch": arch, "width": width, "k": k, "keep_ratios": ratios, "batch_size": batch_size,
                   "timed_steps": steps, "warmup_steps": warmup, "precision": speed["precision"],
                   "speed": {"sequential": speed, "batched": batch_speed},
                   "inner_attack": cfg.describe_inner_attack()},
        "sequential": {"ticket_images_per_s": images / one_seconds, "seconds_per_step": one_seconds / steps,
                       "what": "one ticket per adversarial_fit (K searches: K times this)"},
        "batched": {"ticket_images_per_s": k * images / batch_seconds, "seconds_per_step": batch_seconds / steps,
                    "what": f"rst.search.batched.TicketBatch: {k} tickets per step"},
    }
    result["speedup"] = result["batched"]["ticket_images_per_s"] / result["sequential"]["ticket_images_per_s"]
    return result
