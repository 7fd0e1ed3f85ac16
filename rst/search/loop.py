"""The adversarial ticket search (Fu et al., NeurIPS 2021, arXiv:2110.14068, §3).

Edge-popup with adversarial examples in the loop: the frozen random weights never change, only
the scores are learned, so that the subnetwork ``f(x; w * top-k(|s|))`` minimises the adversarial
loss. The same loop (:func:`adversarial_fit`) trains whatever tensors are trainable, so the dense
adversarial-training baseline and the fine-tuning variants (``rst.search.train``) and the batched search
of several tickets (``rst.search.batched``) reuse it unchanged:

    for epoch in range(epochs):
        for x, y in loader:                                  # train_epoch: batches cut on the device
            x_adv = inner_attack(model, x, y)                # rst.search.inner: PGD-7, N-FGSM, free, ...
            loss = cross_entropy(model(x_adv), y)            # BN in train mode, bf16 autocast (rst.runtime.speed)
            loss.backward(); optimizer.step()                # the gradient reaches the scores through |s|
        record = validate(model, x_val, y_val)               # rst.search.selection: never the test set
        selection.observe(epoch, record, model)              # best validation robust accuracy, or last
        guard.after_epoch(fit, record)                       # rst.search.guard: catastrophic overfitting
        save_checkpoint(...)                                 # rst.runtime.checkpoint: resume after a kill
    selection.restore(model)

The recipe it runs (:class:`SearchConfig`, :data:`PRESETS`, :func:`preset`) is :mod:`rst.search.config`,
re-exported here.

    >>> cfg = rst.search.loop.preset("tiny")
    >>> result = rst.search.loop.run_search(cfg, device="cpu")
    >>> result.ticket.metrics["val_robust"]
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from rst.evaluation.attacks import check_pixel_range
from rst.runtime.checkpoint import check_same_recipe, checkpoint_in, load_checkpoint, save_checkpoint
from rst.data.datasets import default_augment, load_dataset, split_train_val
from rst.data.device_loader import DeviceLoader
from rst.data.synthetic import synthetic_dataset
from .config import LATER_FIELDS, PRESETS, SearchConfig, preset  # noqa: F401  (re-exported)
from .guard import Guard, build_guard
from .inner import InnerAttack, build_inner_attack
from rst.network.masked import masked_layers, set_global_keep
from rst.network.masks import Ticket, extract_ticket
from rst.network.models import NetworkSpec, build_network
from rst.runtime.provenance import provenance
from .selection import LastEpoch, selection_for, validate
from rst.runtime.speed import Speed, flush_subnormal_bn_stats_, resolve_speed


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
    speed: dict = field(default_factory=dict)       # what rst.runtime.speed resolved (precision, ...)


@dataclass
class Fit:
    """What one adversarial fit carries from step to step (the pieces below read and change it).

    ``model`` is trained, attacked and validated; ``update_model`` runs the update step (``model``,
    or its DDP / compiled wrapper); ``attack_model`` runs the inner attack (``model`` or compiled).
    ``members`` is K for a ``rst.search.batched.TicketBatch`` (each batch goes in as K stacked copies, the
    loss is scaled by K so each member's gradient is its own search's), else 1.
    """
    cfg: SearchConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: DeviceLoader
    inner: InnerAttack
    selection: LastEpoch
    guard: Guard
    speed: Speed
    device: torch.device
    dist: distributed.DistInfo | None = None
    members: int = 1
    after_step: Callable[[], None] = lambda: None
    update_model: nn.Module | None = None
    attack_model: nn.Module | None = None
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0

    def stack(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.stack(x, y) if self.members > 1 else (x, y)


def _milestones(cfg: SearchConfig) -> list[int]:
    return [int(round(f * cfg.epochs)) for f in cfg.lr_milestones]


def start_fit(model: nn.Module, params: list[torch.Tensor], cfg: SearchConfig, data: SearchData,
              device: torch.device, after_step: Callable[[], None] | None = None) -> Fit:
    """Optimiser, schedule, loader, inner attack, selection, guard and speed settings of a new fit.

    Under ``torchrun`` (rst.search.distributed): this rank's device and a shard of every global batch;
    every distributed call is a no-op in a single process.
    """
    dist_info = distributed.init_distributed(device)
    if dist_info.enabled:
        device = dist_info.device
        model.to(device)
    check_pixel_range(data.x_train)                         # once: the inner attacks skip it per call
    members = getattr(model, "n_members", 1)
    if members > 1 and dist_info.enabled:
        raise ValueError("a TicketBatch runs in one process; under torchrun, search one ticket per run")
    opt = torch.optim.SGD(params, lr=cfg.effective_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=_milestones(cfg), gamma=cfg.lr_gamma)
    loader = DeviceLoader(data.x_train, data.y_train, cfg.batch_size, shuffle=True, device=device, seed=cfg.seed,
                          augment=default_augment(cfg.dataset) if cfg.augment else None)
    speed = resolve_speed(cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile, device=device,
                          allow_channels_last=not hasattr(model, "n_members"))
    return Fit(cfg, model, opt, sched, distributed.shard(loader), build_inner_attack(cfg),
               selection_for(cfg, model), build_guard(cfg), speed, device, dist_info, members,
               after_step or (lambda: None), update_model=model, attack_model=model)


def resume_fit(fit: Fit, path: Path, allow_changes: tuple[str, ...] = ()) -> None:
    """Continue ``fit`` from the checkpoint at ``path``; refused if it was written by another recipe."""
    ck = load_checkpoint(path, fit.device)
    recorded = SearchConfig.from_dict(SearchConfig.recipe(ck.get("config", {}))).to_dict()  # new fields: defaults
    check_same_recipe(path, recorded, fit.cfg.to_dict(), allow_changes)
    fit.model.load_state_dict(ck["model"])
    fit.optimizer.load_state_dict(ck["optimizer"])
    fit.scheduler.load_state_dict(ck["scheduler"])
    fit.history, fit.start_epoch = ck["history"], ck["epoch"] + 1
    fit.selection.load_state_dict(ck["best"])
    if "guard" in ck:
        fit.guard.load_state_dict(ck["guard"])
        fit.guard.resumed(fit)
    fit.after_step()


def save_fit(fit: Fit, path: Path, epoch: int) -> None:
    """Checkpoint a complete epoch (rank 0 only writes)."""
    if distributed.is_main():
        save_checkpoint(path, {"model": fit.model.state_dict(), "optimizer": fit.optimizer.state_dict(),
                               "scheduler": fit.scheduler.state_dict(), "history": fit.history,
                               "best": fit.selection.state_dict(), "guard": fit.guard.state_dict(),
                               "epoch": epoch, "config": fit.cfg.to_dict()})


def prepare_models(fit: Fit) -> None:
    """Memory format, DDP for the update step (attacks use the bare model), ``torch.compile``."""
    if fit.speed.channels_last:
        fit.model.to(memory_format=torch.channels_last)
    fit.update_model = distributed.wrap_ddp(fit.model, fit.dist)
    fit.attack_model = fit.model
    if fit.speed.compile:   # two graphs: input gradients only (attack), score gradients (update)
        fit.attack_model, fit.update_model = torch.compile(fit.model), torch.compile(fit.update_model)


def train_step(fit: Fit, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
    """Attack, forward, loss, backward, step (``replays`` times: free AT); the last logits and loss."""
    for _ in range(fit.inner.replays):
        with fit.speed.autocast(fit.device):
            x_adv = fit.inner(fit.attack_model, x, y, generator=generator)
            logits = fit.update_model(x_adv)
            loss = F.cross_entropy(logits.float(), y)
        fit.optimizer.zero_grad(set_to_none=True)
        (loss * fit.members).backward()
        fit.optimizer.step()
        fit.inner.after_update()
        fit.after_step()
    return logits.detach().float(), loss


def train_epoch(fit: Fit, epoch: int, progress: Callable[[dict], None] | None = None,
                should_stop: Callable[[], bool] | None = None, log_every: int = 20) -> dict:
    """One pass over the training batches; the epoch's training record (``complete=False`` if stopped).

    Progress events every step; the loss (a device sync) only every ``log_every`` steps and at the last.
    """
    cfg, k = fit.cfg, fit.members
    fit.loader.set_epoch(epoch)
    g = torch.Generator(device=fit.device).manual_seed(cfg.seed * 100_003 + epoch   # attack random starts
                                                       + (fit.dist.rank << 40))          # (per rank; 0: unchanged)
    fit.model.train()
    fit.inner.start_epoch()
    sums = torch.zeros(k, 3, device=fit.device)           # per member: loss * n, correct, n
    complete, n_steps = True, len(fit.loader)
    for step, (x, y) in enumerate(fit.loader):
        x, y = fit.stack(x.contiguous(memory_format=torch.channels_last) if fit.speed.channels_last else x, y)
        logits, loss = train_step(fit, x, y, g)
        per_example = F.cross_entropy(logits, y, reduction="none").view(k, -1)
        sums += torch.stack([per_example.sum(1), (logits.argmax(1) == y).view(k, -1).sum(1).float(),
                             torch.full((k,), float(per_example.shape[1]), device=fit.device)], 1)
        if progress is not None:
            event = {"event": "step", "epoch": epoch, "epochs": cfg.epochs, "step": step + 1, "steps": n_steps}
            if (step + 1) % log_every == 0 or step + 1 == n_steps:
                event["loss"] = loss.item()
            progress(event)
        if should_stop is not None and distributed.any_rank(should_stop()):
            complete = False
            break
    lr = fit.optimizer.param_groups[0]["lr"]              # the lr this epoch ran at (before the schedule moves)
    fit.scheduler.step()
    distributed.average_bn_stats(fit.model)                # ranks tracked BN statistics on their shards
    flush_subnormal_bn_stats_(fit.model)                   # dead channels' decayed statistics (rst.runtime.speed)
    sums = distributed.all_reduce_sum(sums)
    fit.model.eval()
    loss_sum, correct, n = sums.sum(0).tolist()
    record = {"epoch": epoch, "lr": lr, "train_adv_loss": loss_sum / max(n, 1),
              "train_adv_acc": correct / max(n, 1), "seconds": 0.0, "complete": complete}
    if k > 1:
        record["members"] = [{"train_adv_loss": ls / max(m, 1), "train_adv_acc": c / max(m, 1)}
                             for ls, c, m in sums.tolist()]
    return record


def adversarial_fit(model: nn.Module, params: list[torch.Tensor], cfg: SearchConfig, data: SearchData,
                    device: torch.device, *, checkpoint: Path | None = None, resume: bool = False,
                    progress: Callable[[dict], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    after_step: Callable[[], None] | None = None,
                    allow_changes: tuple[str, ...] = ()) -> FitResult:
    """Adversarially train ``params`` (scores for a search, weights for the baselines) of ``model``.

    Selection: with ``cfg.selection == "val"`` the model is left in the state of the epoch with the
    best robust accuracy on the validation split; with "last", the last epoch's state.
    ``checkpoint`` is written at the end of every complete epoch; ``resume=True`` continues from it
    (refused if the checkpoint's recipe differs, except in the fields ``allow_changes`` names) and
    ends with the same state as an uninterrupted run (same device, same seed; on a CPU: CUDA
    kernels are not all deterministic). Under ``torchrun`` it runs data-parallel (rst.search.distributed).
    """
    fit = start_fit(model, params, cfg, data, device, after_step)
    if not distributed.is_main():
        progress = None                                    # rank 0 reports and writes
    if resume and checkpoint is not None and checkpoint.exists():
        resume_fit(fit, checkpoint, allow_changes)
    prepare_models(fit)
    x_val, y_val = data.x_val[:cfg.val_images], data.y_val[:cfg.val_images]
    for epoch in range(fit.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        record = train_epoch(fit, epoch, progress, should_stop)
        _merge_validation(record, validate(fit.model, x_val, y_val, cfg.val_attack_config(), cfg.seed))
        record["seconds"] = time.perf_counter() - t0
        fit.history.append(record)
        fit.selection.observe(epoch, record, fit.model)
        fit.guard.after_epoch(fit, record)
        if progress is not None:
            progress({"event": "epoch", **record, "epochs": cfg.epochs})
        if not record["complete"]:                         # a stopped epoch is incomplete: keep the last full one
            break
        if checkpoint is not None:
            save_fit(fit, checkpoint, epoch)
    return finish_fit(fit)


def _merge_validation(record: dict, val: dict) -> None:
    for member, v in zip(record.get("members", ()), val.pop("members", ())):
        member.update(v)
    record.update(val)


def finish_fit(fit: Fit) -> FitResult:
    """Restore the selected state; the fit's result."""
    if fit.selection.restore(fit.model):
        fit.after_step()
    fit.model.eval()
    best = fit.selection.epoch
    best_metrics = next((dict(h) for h in fit.history if h["epoch"] == best), {})
    stopped = bool(fit.history) and not fit.history[-1]["complete"]
    return FitResult(fit.history, best, best_metrics, stopped, fit.speed.to_dict())


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


def score_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [layer.scores for _, layer in masked_layers(model)]


def run_search(cfg: SearchConfig, *, device: torch.device | str | None = None, data: SearchData | None = None,
               data_dir: str | None = None, workdir: str | os.PathLike | None = None, resume: bool = False,
               progress: Callable[[dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None, allow_changes: tuple[str, ...] = (),
               initial_state: dict | None = None) -> SearchResult:
    """Search one robust scratch ticket with ``cfg``; returns the ticket and its curves.

    ``initial_state``: a state dict the network starts from (e.g. another search's scores: a
    boosted search's warm start); a checkpoint being resumed overrides it.

    ``workdir`` receives ``checkpoint.pt`` after every epoch (``resume=True`` continues from it; a
    checkpoint of another recipe is refused unless ``allow_changes`` names the differing fields).
    The speed settings the search ran with (``rst.runtime.speed``) are recorded in the ticket's ``search_config``.
    The returned ticket's metrics are measured on the *validation* split with the attack named
    beside each number; test-set numbers come from ``rst.evaluation.metrics`` after the search.
    """
    device = torch.device(device or "cpu")
    spec = cfg.network_spec()
    model = build_network(spec, device=device, keep_ratio=cfg.keep_ratio)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    data = data if data is not None else search_data(cfg, data_dir)
    after_step = (lambda: set_global_keep(model, cfg.keep_ratio)) if cfg.scope == "global" else None
    if after_step is not None:
        after_step()
    ckpt = checkpoint_in(workdir)
    fit = adversarial_fit(model, score_parameters(model), cfg, data, device, checkpoint=ckpt, resume=resume,
                          progress=progress, should_stop=should_stop, after_step=after_step,
                          allow_changes=allow_changes)
    ticket = extract_ticket(model, name=f"keep{cfg.keep_ratio:g}",
                            metrics=validation_metrics(fit.best_metrics, cfg),
                            search_config={**cfg.to_dict(), "best_epoch": fit.best_epoch, "speed": fit.speed})
    return SearchResult(ticket, spec, cfg, fit.history, fit.best_epoch, fit.stopped, provenance(str(device)))
