"""The adversarial ticket search (Fu et al., NeurIPS 2021, arXiv:2110.14068, §3).

Edge-popup with adversarial examples in the loop: the frozen random weights never change, only
the scores are learned, so that the subnetwork ``f(x; w * top-k(|s|))`` minimises the adversarial
loss. The same loop (:func:`adversarial_fit`) trains whatever tensors are trainable, so the dense
adversarial-training baseline and the fine-tuning variants (``rst.train``) reuse it unchanged.

    for x, y in loader:                               # batches cut on the device
        x_adv = inner_attack(model, x, y)             # masks cached, input gradient only
        loss = cross_entropy(model(x_adv), y)         # BN in train mode
        loss.backward(); optimizer.step()             # gradient reaches the scores through |s|

    >>> cfg = rst.search.preset("tiny")
    >>> result = rst.search.run_search(cfg, device="cpu")
    >>> result.ticket.metrics["val_robust"]
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import AttackConfig, run_attack
from .data import DeviceLoader, default_augment, load_dataset, split_train_val, synthetic_dataset
from .evaluate import accuracy, robust_accuracy
from .masked import masked_layers, set_global_keep
from .masks import Ticket, extract_ticket
from .models import NetworkSpec, build_network
from .provenance import provenance

INNER_ATTACKS = ("pgd", "fgsm", "fgsm_rs", "free", "none")


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search is a function of, with units. Written into every output.

    Network: ``arch``, ``dataset``, ``width``, ``init``, ``seed``, ``granularity`` (see NetworkSpec).
    Ticket: ``keep_ratio`` (fraction of weights kept per layer), ``scope`` "layer" (the paper:
    the same ratio in every layer) or "global" (network-wide top-k, a departure from the paper).
    """
    # the random network
    arch: str = "fmnist_conv4"
    dataset: str = "fashion_mnist"
    width: float = 1.0
    init: str = "signed_kaiming_constant"
    seed: int = 0                        # weights, scores, data split, shuffling, attack starts
    granularity: str = "element"
    # the ticket
    keep_ratio: float = 0.1              # fraction of weights kept
    scope: str = "layer"                 # "layer" | "global"
    # optimisation of the scores (SGD)
    epochs: int = 30
    batch_size: int = 256                # images per step
    lr: float = 0.1                      # at batch 256; scaled linearly with batch_size if scale_lr
    scale_lr: bool = False
    momentum: float = 0.9
    weight_decay: float = 5e-4           # on the scores
    lr_milestones: tuple[float, ...] = (0.5, 0.75)   # fractions of `epochs` where lr *= lr_gamma
    lr_gamma: float = 0.1
    # inner attack (pixel space [0, 1])
    inner_attack: str = "pgd"            # pgd | fgsm | fgsm_rs | free | none (natural search)
    eps: float = 8 / 255
    alpha: float = 2 / 255               # step size
    steps: int = 7                       # PGD steps; replays per batch for "free"
    attack_bn_mode: str = "train"        # BN during the inner attack: "train" (paper) | "eval"
    # data
    val_size: int = 5000                 # images held out of the training set for model selection
    train_subset: int | None = None      # keep only this many training images (reduced runs)
    augment: bool = True
    # model selection: never the test set
    selection: str = "val"               # "val": best robust accuracy on the validation split | "last"
    val_steps: int = 10                  # PGD steps of the validation attack
    val_images: int = 1000               # validation images attacked per epoch
    # speed knobs (no effect on the maths beyond numerics)
    precision: str = "fp32"              # "fp32" | "bf16" (autocast, CUDA only)
    channels_last: bool = False
    compile: bool = False                # torch.compile the network for the attack and the update

    def __post_init__(self):
        self.network_spec()  # validates arch, dataset, init, granularity, width
        checks = [
            (0 < self.keep_ratio <= 1, f"keep_ratio must be in (0, 1], got {self.keep_ratio}"),
            (self.scope in ("layer", "global"), f"scope must be 'layer' or 'global', got {self.scope!r}"),
            (self.inner_attack in INNER_ATTACKS, f"inner_attack must be one of {INNER_ATTACKS}"),
            (self.attack_bn_mode in ("train", "eval"), "attack_bn_mode must be 'train' or 'eval'"),
            (self.selection in ("val", "last"), "selection must be 'val' or 'last'"),
            (self.epochs >= 1 and self.batch_size >= 1 and self.steps >= 1, "epochs, batch_size, steps must be >= 1"),
            (self.eps >= 0 and self.alpha >= 0, "eps and alpha must be >= 0"),
            (self.precision in ("fp32", "bf16"), "precision must be 'fp32' or 'bf16'"),
            (self.selection == "last" or self.val_size > 0, "selection='val' needs val_size > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(self.arch, dataset=self.dataset, width=self.width, init=self.init,
                           seed=self.seed, granularity=self.granularity)

    def inner_attack_config(self) -> AttackConfig:
        name = {"free": "none"}.get(self.inner_attack, self.inner_attack)
        alpha = 1.25 * self.eps if name == "fgsm_rs" else self.alpha
        return AttackConfig(name=name, eps=self.eps, alpha=alpha, steps=self.steps)

    def val_attack_config(self) -> AttackConfig:
        return AttackConfig(name="pgd", eps=self.eps, alpha=self.eps / 4, steps=self.val_steps)

    def effective_lr(self) -> float:
        return self.lr * (self.batch_size / 256 if self.scale_lr else 1.0)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        d = dict(d)
        if "lr_milestones" in d:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)

    def replace(self, **changes) -> "SearchConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def recipe(cls, search_config: dict) -> dict:
        """The config fields of a ticket's recorded ``search_config`` (without ``best_epoch`` and the
        other notes a search adds, e.g. ``batched_with``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in search_config.items() if k in names}


PRESETS: dict[str, SearchConfig] = {
    # The paper's recipe exactly (§2 of the spec): 160 epochs, lr 0.1 x0.1 at 80/120, batch 256,
    # wd 5e-4 on scores, PGD-7 eps 8/255 step 2/255 with BN in train mode; selection on a
    # held-out validation split instead of the test set.
    "paper-cifar10-resnet18": SearchConfig(arch="resnet18", dataset="cifar10", epochs=160, batch_size=256,
                                           lr=0.1, lr_milestones=(0.5, 0.75), weight_decay=5e-4,
                                           inner_attack="pgd", eps=8 / 255, alpha=2 / 255, steps=7,
                                           val_size=5000, val_steps=20),
    "paper-cifar10-wrn34": SearchConfig(arch="wrn34_10", dataset="cifar10", epochs=160, batch_size=256,
                                        lr=0.1, lr_milestones=(0.5, 0.75), weight_decay=5e-4,
                                        inner_attack="pgd", eps=8 / 255, alpha=2 / 255, steps=7,
                                        val_size=5000, val_steps=20),
    # Fashion-MNIST at eps = 0.1 (a common L-inf budget for this data set), PGD-7 step eps/4.
    "fmnist": SearchConfig(arch="fmnist_conv4", dataset="fashion_mnist", epochs=30, batch_size=256, lr=0.1,
                           inner_attack="pgd", eps=0.1, alpha=0.025, steps=7, val_size=5000, val_steps=10),
    # The same task at a budget a 2-core CPU finishes in minutes per ticket (no GPU in this
    # workplace): half-width Conv-4, 10k training images, PGD-3 (step eps/2.5), 6 epochs.
    "fmnist-cpu": SearchConfig(arch="fmnist_conv4", dataset="fashion_mnist", width=0.5, epochs=6, batch_size=128,
                               lr=0.1, lr_milestones=(0.67,), inner_attack="pgd", eps=0.1, alpha=0.04, steps=3,
                               train_subset=10000, val_size=5000, val_steps=10, val_images=500),
    # Seconds on a CPU, for tests and demos: synthetic data, a quarter-width Conv-4.
    "tiny": SearchConfig(arch="fmnist_conv4", dataset="synthetic", width=0.25, keep_ratio=0.5, epochs=3,
                         batch_size=64, lr=0.1, lr_milestones=(), inner_attack="pgd", eps=0.1, alpha=0.05,
                         steps=2, val_size=128, val_steps=3, val_images=128, augment=False),
}


def preset(name: str, **overrides) -> SearchConfig:
    """A named recipe, optionally with fields replaced: ``preset("fmnist", keep_ratio=0.05)``."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@dataclass
class SearchData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def search_data(cfg: SearchConfig, data_dir: str | None = None) -> SearchData:
    """Training set of ``cfg.dataset`` split into train / validation (seeded by ``cfg.seed``)."""
    if cfg.dataset == "synthetic":
        x, y = synthetic_dataset(2048, seed=cfg.seed)
    else:
        x, y = load_dataset(cfg.dataset, train=True, data_dir=data_dir)
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, cfg.val_size, seed=cfg.seed)
    if cfg.train_subset is not None:
        x_tr, y_tr = x_tr[:cfg.train_subset], y_tr[:cfg.train_subset]
    return SearchData(x_tr, y_tr, x_val, y_val)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_metrics: dict
    stopped: bool = False


def _autocast(cfg: SearchConfig, device: torch.device):
    enabled = cfg.precision == "bf16" and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _milestones(cfg: SearchConfig) -> list[int]:
    return [int(round(f * cfg.epochs)) for f in cfg.lr_milestones]


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def adversarial_fit(model: nn.Module, params: list[torch.Tensor], cfg: SearchConfig, data: SearchData,
                    device: torch.device, *, checkpoint: Path | None = None, resume: bool = False,
                    progress: Callable[[dict], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    after_step: Callable[[], None] | None = None) -> FitResult:
    """Adversarially train ``params`` (scores for a search, weights for the baselines) of ``model``.

    Selection: with ``cfg.selection == "val"`` the model is left in the state of the epoch with the
    best robust accuracy on the validation split; with "last", the last epoch's state.
    ``checkpoint`` is written at the end of every epoch; ``resume=True`` continues from it and ends
    with the same state as an uninterrupted run (same device, same seed).

    Under ``torchrun`` (several processes) it runs data-parallel: see :mod:`rst.distributed`.
    """
    # Multi-GPU (rst.distributed): every call below is a no-op in a single process. Under torchrun:
    # this rank's device, a shard of every batch, DDP for the update step only, metrics over ranks.
    from . import distributed
    dist_info = distributed.init_distributed(device)
    if dist_info.enabled:
        device = dist_info.device
        model.to(device)
    if not distributed.is_main():
        progress = None                                      # rank 0 reports and writes
    # K tickets in one pass (rst.batched.TicketBatch): each batch goes in as K stacked copies,
    # the loss is scaled by K (each member's gradient is its own search's), metrics are per member
    copies = getattr(model, "n_members", 1)
    if copies > 1 and dist_info.enabled:
        raise ValueError("a TicketBatch runs in one process; under torchrun, search one ticket per run")
    opt = torch.optim.SGD(params, lr=cfg.effective_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=_milestones(cfg), gamma=cfg.lr_gamma)
    loader = DeviceLoader(data.x_train, data.y_train, cfg.batch_size, shuffle=True, device=device, seed=cfg.seed,
                          augment=default_augment(cfg.dataset) if cfg.augment else None)
    loader = distributed.shard(loader)                       # this rank's part of each global batch
    x_val, y_val = data.x_val[:cfg.val_images], data.y_val[:cfg.val_images]
    inner, val_attack = cfg.inner_attack_config(), cfg.val_attack_config()
    history, best, start_epoch = [], {"epoch": -1, "val_robust": -1.0, "state": None}, 0
    if resume and checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history, best, start_epoch = ck["history"], ck["best"], ck["epoch"] + 1
        if after_step is not None:
            after_step()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    update_model = distributed.wrap_ddp(model, dist_info)   # DDP for the update; attacks use `model`
    attack_model = model
    if cfg.compile:                      # two graphs: input gradients only (attack), score gradients (update)
        attack_model, update_model = torch.compile(model), torch.compile(update_model)
    stopped = False
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        loader.set_epoch(epoch)
        g = torch.Generator(device=device).manual_seed(cfg.seed * 100_003 + epoch   # attack random starts
                                                       + (dist_info.rank << 40))   # (per rank; 0: unchanged)
        model.train()
        sums = torch.zeros(copies, 3, device=device)   # per member: loss * n, correct, n
        delta = None                           # "free" AT: perturbation carried across batches
        for step, (x, y) in enumerate(loader):
            if copies > 1:
                x, y = model.stack(x, y)
            replays = cfg.steps if cfg.inner_attack == "free" else 1
            for _ in range(replays):
                with _autocast(cfg, device):
                    if cfg.inner_attack == "free":
                        if delta is None or delta.shape != x.shape:
                            delta = torch.zeros_like(x)
                        d = delta.clone().requires_grad_(True)
                        x_adv = (x + d).clamp(0, 1)
                    else:
                        x_adv = run_attack(inner, attack_model, x, y, train_mode=cfg.attack_bn_mode == "train",
                                           generator=g)
                    logits = update_model(x_adv)
                    loss = F.cross_entropy(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                (loss * copies).backward()
                opt.step()
                if cfg.inner_attack == "free":
                    delta = (d + cfg.eps * d.grad.sign()).clamp(-cfg.eps, cfg.eps).detach()
                if after_step is not None:
                    after_step()
            per_example = F.cross_entropy(logits.detach().float(), y, reduction="none").view(copies, -1)
            sums += torch.stack([per_example.sum(1), (logits.argmax(1) == y).view(copies, -1).sum(1).float(),
                                 torch.full((copies,), float(per_example.shape[1]), device=device)], 1)
            if progress is not None:
                progress({"event": "step", "epoch": epoch, "epochs": cfg.epochs, "step": step + 1,
                          "steps": len(loader), "loss": loss.item()})
            if should_stop is not None and distributed.any_rank(should_stop()):
                stopped = True
                break
        sched.step()
        distributed.average_bn_stats(model)                  # ranks tracked BN statistics on their shards
        sums = distributed.all_reduce_sum(sums)
        model.eval()
        loss_sum, correct, n = sums.sum(0).tolist()
        record = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_adv_loss": loss_sum / max(n, 1),
                  "train_adv_acc": correct / max(n, 1), "seconds": 0.0, "complete": not stopped}
        if copies > 1:
            record["members"] = [{"train_adv_loss": ls / max(m, 1), "train_adv_acc": c / max(m, 1)}
                                 for ls, c, m in sums.tolist()]
            if len(x_val):
                clean = model.member_accuracies(x_val, y_val)
                robust = model.member_accuracies(x_val, y_val, val_attack, seed=cfg.seed)
                for m, c, r in zip(record["members"], clean, robust):
                    m.update(val_clean=c, val_robust=r)
                record["val_clean"], record["val_robust"] = sum(clean) / copies, sum(robust) / copies
                if cfg.selection == "val":
                    model.select(epoch, robust)                  # each member keeps its own best epoch
        elif len(x_val):
            # each rank evaluates x_val[rank::world_size]; all get the same weighted mean
            record["val_clean"] = distributed.sharded_mean(lambda xs, ys: accuracy(model, xs, ys), x_val, y_val)
            record["val_robust"] = distributed.sharded_mean(
                lambda xs, ys: robust_accuracy(model, xs, ys, val_attack, seed=cfg.seed), x_val, y_val)
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if cfg.selection == "last" or copies > 1 or record.get("val_robust", -1.0) > best["val_robust"]:
            best = {"epoch": epoch, "val_robust": record.get("val_robust", float("nan")),
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        if progress is not None:
            progress({"event": "epoch", **record, "epochs": cfg.epochs})
        # a stopped epoch is incomplete: keep the last full one; only rank 0 writes
        if checkpoint is not None and not stopped and distributed.is_main():
            _save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                          "scheduler": sched.state_dict(), "history": history, "best": best,
                                          "epoch": epoch, "config": cfg.to_dict()})
        if stopped:
            break
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        if copies > 1 and cfg.selection == "val":
            model.load_best()
        if after_step is not None:
            after_step()
    model.eval()
    best_metrics = next((dict(h) for h in history if h["epoch"] == best["epoch"]), {})
    return FitResult(history, best["epoch"], best_metrics, stopped)


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    ticket: Ticket
    spec: NetworkSpec
    config: SearchConfig
    history: list[dict]
    best_epoch: int
    stopped: bool = False
    provenance: dict = field(default_factory=dict)


def validation_metrics(record: dict, cfg: SearchConfig) -> dict:
    """The validation numbers of one epoch's ``record`` as metric records naming their attack ({} if none)."""
    if "val_robust" not in record:
        return {}
    return {"val_clean": {"value": record["val_clean"], "split": "validation", "attack": "none"},
            "val_robust": {"value": record["val_robust"], "split": "validation",
                           "attack": cfg.val_attack_config().describe()}}


def checkpoint_in(workdir: str | os.PathLike | None) -> Path | None:
    """``workdir/checkpoint.pt`` (the folder created), or None without a workdir: where a fit checkpoints."""
    if workdir is None:
        return None
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return Path(workdir) / "checkpoint.pt"


def score_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [layer.scores for _, layer in masked_layers(model)]


def run_search(cfg: SearchConfig, *, device: torch.device | str | None = None, data: SearchData | None = None,
               data_dir: str | None = None, workdir: str | os.PathLike | None = None, resume: bool = False,
               progress: Callable[[dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> SearchResult:
    """Search one robust scratch ticket with ``cfg``; returns the ticket and its curves.

    ``workdir`` receives ``checkpoint.pt`` after every epoch (``resume=True`` continues from it).
    The returned ticket's metrics are measured on the *validation* split with the attack named
    beside each number; test-set numbers come from ``rst.evaluate`` after the search.
    """
    device = torch.device(device or "cpu")
    spec = cfg.network_spec()
    model = build_network(spec, device=device, keep_ratio=cfg.keep_ratio)
    data = data if data is not None else search_data(cfg, data_dir)
    after_step = (lambda: set_global_keep(model, cfg.keep_ratio)) if cfg.scope == "global" else None
    if after_step is not None:
        after_step()
    ckpt = checkpoint_in(workdir)
    fit = adversarial_fit(model, score_parameters(model), cfg, data, device, checkpoint=ckpt, resume=resume,
                          progress=progress, should_stop=should_stop, after_step=after_step)
    ticket = extract_ticket(model, name=f"keep{cfg.keep_ratio:g}",
                            metrics=validation_metrics(fit.best_metrics, cfg),
                            search_config={**cfg.to_dict(), "best_epoch": fit.best_epoch})
    return SearchResult(ticket, spec, cfg, fit.history, fit.best_epoch, fit.stopped, provenance(str(device)))
