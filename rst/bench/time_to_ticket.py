"""Time to a ticket: the reference recipe and our fast recipe side by side, under one wall-clock budget each.

Same seeded network and keep ratio, same training images in the same order with the same
augmentation, same validation images and attack; only the recipe differs:

* **reference** (:class:`rst.bench.reference.ReferenceStep`): fp32, PGD-7 (eps 0.1, step 0.025), a
  full sort of |scores| at every forward, score gradients computed in every attack step, host batches;
* **ours**: the search loop's own pieces (:func:`rst.search.loop.train_step`) with the fast recipe
  (preset ``fmnist-fast``): ``precision="auto"`` (bf16 autocast + channels_last where the CPU has
  native bf16), the single-step N-FGSM inner attack, and the catastrophic-overfitting guard.

Both: SGD (lr 0.1, momentum 0.9, weight decay 5e-4), lr x0.1 at 50 % and 75 % of the budget (a
wall-clock schedule, the same for both). A contestant's clock counts its training steps only, and
the two advance in lockstep (the one behind goes next), so a shared, noisy machine loads both alike.
Every ``budget / points`` seconds of its training time each is validated: PGD-10 (step eps/4, fp32)
and clean accuracy on the same validation images. The result: both curves, the target (the
reference's best validation PGD accuracy), the training time each needs to first reach it (at a
validation, and interpolated linearly between validations), and their ratios. The untrained
ticket is validated first (time 0).

    python -m rst.bench time-to-ticket --budget 600 --json bench/time-to-ticket.json --plot bench/time-to-ticket.png
    python -m rst.bench time-to-ticket --toy                     # synthetic data, seconds (CI)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from rst.evaluation.attacks import AttackConfig
from rst.data.datasets import DeviceLoader, default_augment
from rst.runtime.device import resolve_device
from rst.network.models import build_network
from rst.search.loop import SearchConfig, preset, prepare_models, score_parameters, search_data, start_fit, train_step
from rst.search.selection import validate
from .reference import ReferenceStep
from .timing import _sync, device_name

MILESTONES = (0.5, 0.75)          # fractions of the budget where lr *= 0.1


@dataclass
class Contestant:
    """One recipe under the clock: ``step(x, y) -> logits`` trains on one batch."""
    name: str
    recipe: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DeviceLoader
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    after_validation: Callable[[dict], None] = lambda record: None
    seconds: float = 0.0                   # training time so far
    images: int = 0
    epoch: int = 0
    correct: float = 0.0                   # training accuracy under its attack since the last validation
    seen: int = 0
    curve: list[dict] = field(default_factory=list)
    _batches: object = None

    def next_batch(self):
        if self._batches is None:
            self.loader.set_epoch(self.epoch)
            self._batches = iter(self.loader)
        try:
            return next(self._batches)
        except StopIteration:
            self.epoch += 1
            self._batches = None
            return self.next_batch()


def _ours(cfg: SearchConfig, data, device) -> Contestant:
    model = build_network(cfg.network_spec(), device=device, keep_ratio=cfg.keep_ratio)
    fit = start_fit(model, score_parameters(model), cfg, data, device)
    prepare_models(fit)
    g = torch.Generator(device=device).manual_seed(cfg.seed)

    def step(x, y):
        fit.model.train()
        x = x.contiguous(memory_format=torch.channels_last) if fit.speed.channels_last else x
        return train_step(fit, x, y, g)[0]
    recipe = f"{fit.speed.precision}{' + channels_last' if fit.speed.channels_last else ''}, {fit.inner.describe()}, " \
             f"guard {cfg.guard}, top-k mask cached in the attack, input gradients only"
    return Contestant("ours", recipe, model, fit.optimizer, fit.loader, step,
                      lambda record: fit.guard.after_epoch(fit, record))


def _reference(cfg: SearchConfig, data, device) -> Contestant:
    model = build_network(cfg.network_spec(), device=device, keep_ratio=cfg.keep_ratio)
    ref = ReferenceStep(model, AttackConfig("pgd", eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps), lr=cfg.lr,
                        momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed)
    loader = DeviceLoader(data.x_train, data.y_train, cfg.batch_size, shuffle=True, device=device, seed=cfg.seed,
                          augment=default_augment(cfg.dataset) if cfg.augment else None)

    def step(x, y):
        ref(x.cpu(), y.cpu())                         # the reference takes host batches
        return None
    return Contestant("reference", f"fp32, PGD-{cfg.steps} step {cfg.alpha:g}, full sort per forward, "
                                   "score gradients in every attack step, host batches",
                      model, ref.opt, loader, step)


def _train_until(contestants: list[Contestant], until: float, budget: float, lr: float, device) -> None:
    """Train every contestant up to ``until`` seconds, step by step, the one behind going next."""
    while True:
        c = min(contestants, key=lambda c: c.seconds)
        if c.seconds >= until:
            return
        x, y = c.next_batch()
        frac = c.seconds / budget
        for group in c.optimizer.param_groups:
            group["lr"] = lr * 0.1 ** sum(frac >= m for m in MILESTONES)
        t0 = time.perf_counter()
        logits = c.step(x, y)
        _sync(device)
        c.seconds += time.perf_counter() - t0
        c.images += len(y)
        if logits is not None:
            c.correct += float((logits.argmax(1) == y).sum())
            c.seen += len(y)


def _validate(c: Contestant, x_val, y_val, attack: AttackConfig, seed: int) -> dict:
    c.model.eval()
    record = {"epoch": len(c.curve), "seconds": c.seconds, "images": c.images, "complete": True,
              "train_adv_acc": c.correct / max(c.seen, 1), **validate(c.model, x_val, y_val, attack, seed)}
    c.after_validation(record)                           # ours: the guard (may roll back and switch)
    c.correct, c.seen = 0.0, 0
    c.curve.append({k: record[k] for k in ("seconds", "images", "val_clean", "val_robust", "train_adv_acc")
                    if k in record} | ({"guard": record["guard"]} if "guard" in record else {}))
    return record


def _first_time(curve: list[dict], target: float) -> float | None:
    """Training seconds at the first validation at or above ``target`` (None: never)."""
    return next((p["seconds"] for p in curve if p["val_robust"] >= target), None)


def _crossing_time(curve: list[dict], target: float) -> float | None:
    """Seconds where the curve first crosses ``target``, linearly interpolated between validations."""
    for before, p in zip(curve, curve[1:]):
        if p["val_robust"] >= target > before["val_robust"]:
            w = (target - before["val_robust"]) / (p["val_robust"] - before["val_robust"])
            return before["seconds"] + w * (p["seconds"] - before["seconds"])
    return 0.0 if curve and curve[0]["val_robust"] >= target else None


def bench_time_to_ticket(*, budget: float = 600.0, points: int = 12, keep_ratio: float = 0.1, width: float = 1.0,
                         val_images: int = 500, device: str | torch.device = "cpu", data_dir: str | None = None,
                         toy: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """Run both contestants (see the module docstring); the curves, the target and the time ratio.

    Arguments:
        budget: training seconds per contestant. points: validations per contestant (every
            ``budget / points`` s). keep_ratio, width: the ticket and the Conv-4's width.
        val_images: validation images (the first of the seeded 5,000-image validation split).
        toy: synthetic data, quarter width, 64 validation images (seconds; for CI).

    Returns:
        ``{"reference": {"curve": [...], "recipe", "time_to_target"}, "ours": {...}, "target",
        "ratio", "device", "config"}``; ``ratio`` is None if ours never reached the target, or if either
        contestant was there at time 0 (the untrained ticket already at the target: no ratio to give).
    """
    device = resolve_device(device)
    dataset = "synthetic" if toy else "fashion_mnist"
    base = dict(keep_ratio=keep_ratio, width=0.25 if toy else width, seed=seed, dataset=dataset,
                val_images=64 if toy else val_images, val_size=128 if toy else 5000)
    ref_cfg, ours_cfg = preset("fmnist", **base), preset("fmnist-fast", **base)
    data = search_data(ref_cfg, data_dir)                # the same split for both (seeded)
    x_val, y_val = data.x_val[:ref_cfg.val_images].to(device), data.y_val[:ref_cfg.val_images].to(device)
    attack = ref_cfg.val_attack_config()
    contestants = [_reference(ref_cfg, data, device), _ours(ours_cfg, data, device)]
    marks = [0.0] + [budget * (i + 1) / points for i in range(points)]   # 0: the untrained ticket
    for mark in marks:                                   # lockstep: both reach each mark before the next
        _train_until(contestants, mark, budget, ref_cfg.lr, device)
        for c in contestants:
            r = _validate(c, x_val, y_val, attack, seed)
            if progress is not None:
                progress(f"{c.name:9s} {c.seconds:7.1f} s  {c.images:8d} images  val PGD {r['val_robust']:.3f}  "
                         f"clean {r['val_clean']:.3f}" + (f"  [{r['guard']}]" if "guard" in r else ""))
    ref, ours = contestants
    target = max(p["val_robust"] for p in ref.curve)
    t_ref, t_ours = _first_time(ref.curve, target), _first_time(ours.curve, target)
    x_ref, x_ours = _crossing_time(ref.curve, target), _crossing_time(ours.curve, target)
    return {
        "benchmark": "time-to-ticket", "device": device_name(device), "torch": torch.__version__,
        "config": {"dataset": dataset, "width": base["width"], "keep_ratio": keep_ratio, "budget_s": budget,
                   "points": points, "val_images": len(y_val), "val_attack": attack.describe(),
                   "lr_schedule": f"lr {ref_cfg.lr:g}, x0.1 at {MILESTONES} of the budget",
                   "train_images": len(data.y_train)},
        "reference": {"recipe": ref.recipe, "curve": ref.curve, "time_to_target": t_ref, "crossing": x_ref},
        "ours": {"recipe": ours.recipe, "curve": ours.curve, "time_to_target": t_ours, "crossing": x_ours},
        "target": target,
        "ratio": (t_ref / t_ours) if (t_ref and t_ours) else None,                 # first validation at target
        "ratio_interpolated": (x_ref / x_ours) if (x_ref and x_ours) else None,    # between validations
    }


def plot_time_to_ticket(result: dict, path) -> None:
    """Validation PGD accuracy against training minutes for both contestants, with the target (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, colour in (("reference", "tab:gray"), ("ours", "tab:blue")):
        curve = result[name]["curve"]
        ax.plot([p["seconds"] / 60 for p in curve], [100 * p["val_robust"] for p in curve], "o-", color=colour,
                label=f"{name}: {result[name]['recipe'].split(',')[0]}, {result[name]['recipe'].split(',')[1]}")
        t = result[name]["time_to_target"]
        if t is not None:
            ax.axvline(t / 60, color=colour, ls=":", lw=1)
    ax.axhline(100 * result["target"], color="k", ls="--", lw=1, label=f"target {100 * result['target']:.1f} %")
    ratio = result["ratio"]
    ax.set_title(f"time to the same validation PGD accuracy: {ratio:.1f}x less" if ratio else
                 "ours did not reach the reference's best", fontsize=10)
    c = result["config"]
    ax.set_xlabel(f"training minutes ({result['device']})")
    ax.set_ylabel(f"validation {c['val_attack'].split()[0]} accuracy (%)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["Contestant", "bench_time_to_ticket", "plot_time_to_ticket"]
