"""Evaluation: clean and robust accuracy (BN in eval mode, attacks in [0, 1] pixel space).

The paper's protocol (Fu et al. 2021, §3): PGD-20, eps = 8/255, step 2/255, one random start,
L-inf, full test set, BN in eval mode. Model selection never looks at the test set.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from .attacks import AttackConfig, run_attack


def _warn_if_training(model: nn.Module) -> None:
    if model.training:
        warnings.warn("evaluating a model in train mode: BatchNorm uses batch statistics and updates its "
                      "running statistics; call model.eval() first", stacklevel=3)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (N,) of ``x`` (N, C, H, W), batched, on the model's device."""
    device = next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Clean accuracy in [0, 1]."""
    _warn_if_training(model)
    return (predict(model, x, batch_size) == y.cpu()).float().mean().item() if len(x) else float("nan")


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig,
                         batch_size: int = 512, seed: int = 0, progress=None) -> torch.Tensor:
    """``x_adv`` for every example (on the CPU), attacking in batches on the model's device.

    ``seed`` seeds the attack's random start (one generator for the whole pass).
    """
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        out.append(run_attack(attack, model, xb, yb, generator=g).cpu())
        if progress is not None:
            progress(min(i + batch_size, len(x)), len(x))
    return torch.cat(out)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig,
                    batch_size: int = 512, seed: int = 0) -> float:
    """Accuracy on ``attack``'s adversarial examples of ``x`` (the model is attacked in eval mode)."""
    _warn_if_training(model)
    x_adv = adversarial_examples(model, x, y, attack, batch_size, seed)
    return accuracy(model, x_adv, y, batch_size)
