"""Timing helpers shared by the benchmarks: device sync and name, sizes, a timed epoch of the search loop."""
from __future__ import annotations

import platform
import time

import torch
import torch.nn as nn

from rst.data.datasets import synthetic_dataset
from rst.network.models import model_entry
from rst.search.loop import SearchConfig, SearchData, adversarial_fit


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
              device: torch.device, warmup: int) -> tuple[float, dict]:
    """Seconds of :func:`rst.search.loop.adversarial_fit`'s steps after the first ``warmup`` (one epoch over
    ``x``), timed between its per-step progress events (the device synchronised at each); also the
    speed settings it resolved."""
    stamps: list[float] = []

    def on_event(event: dict) -> None:
        if event["event"] == "step":
            _sync(device)
            stamps.append(time.perf_counter())

    fit = adversarial_fit(model, params, cfg, SearchData(x, y, x[:0], y[:0]), device, progress=on_event)
    return stamps[-1] - stamps[warmup - 1], fit.speed




def _sizes(defaults: dict, **given) -> dict:
    return {k: given[k] if given.get(k) is not None else v for k, v in defaults.items()}
