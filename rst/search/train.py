"""Training baselines (Fu et al. 2021, §2 of the spec), on the same loop as the search.

* :func:`train_dense` — dense adversarial training: the same architecture and seeded weights,
  every weight kept and trained (the baseline an RST is compared with).
* :func:`finetune` — a ticket's mask frozen, its weights adversarially trained, either inherited
  from the random network (``mode="inherit"``) or re-initialised Kaiming-normal (``mode="reinit"``).

Both return the trained model and its per-epoch history; save it with ``rst.network.masks.save_weights``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from rst.network.masked import masked_layers, set_dense
from rst.network.masks import CandidateSet, apply_ticket
from rst.network.models import build_network
from rst.runtime.checkpoint import checkpoint_in
from .loop import SearchConfig, SearchData, adversarial_fit, search_data
from rst.network.weights import init_weights

FINETUNE_MODES = ("inherit", "reinit")


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    best_epoch: int
    stopped: bool = False


def _weights(model: nn.Module) -> list[nn.Parameter]:
    params = []
    for _, layer in masked_layers(model):
        layer.weight.requires_grad_(True)
        layer.scores.requires_grad_(False)
        params.append(layer.weight)
    return params


def _fit(model, cfg, device, data, data_dir, workdir, resume, progress, should_stop, allow_changes) -> TrainResult:
    data = data if data is not None else search_data(cfg, data_dir)
    ckpt = checkpoint_in(workdir)
    fit = adversarial_fit(model, _weights(model), cfg, data, device, checkpoint=ckpt, resume=resume,
                          progress=progress, should_stop=should_stop, allow_changes=allow_changes)
    return TrainResult(model, fit.history, fit.best_epoch, fit.stopped)


def train_dense(cfg: SearchConfig, *, device=None, data: SearchData | None = None, data_dir=None, workdir=None,
                resume: bool = False, progress: Callable | None = None,
                should_stop: Callable | None = None, allow_changes: tuple[str, ...] = ()) -> TrainResult:
    """Dense adversarial training of ``cfg``'s network (all weights kept), with ``cfg``'s recipe
    (its speed settings too: ``cfg.precision``, see :mod:`rst.runtime.speed`)."""
    device = torch.device(device or "cpu")
    model = build_network(cfg.network_spec(), device=device)
    set_dense(model, True)
    return _fit(model, cfg, device, data, data_dir, workdir, resume, progress, should_stop, allow_changes)


def finetune(cs: CandidateSet, index: int, mode: str, cfg: SearchConfig, *, device=None,
             data: SearchData | None = None, data_dir=None, workdir=None, resume: bool = False,
             progress: Callable | None = None, should_stop: Callable | None = None,
             allow_changes: tuple[str, ...] = ()) -> TrainResult:
    """Adversarially train the weights of ticket ``index`` of ``cs`` under its frozen mask."""
    if mode not in FINETUNE_MODES:
        raise ValueError(f"mode must be one of {FINETUNE_MODES}, got {mode!r}")
    device = torch.device(device or "cpu")
    model = build_network(cs.spec, device=device)
    apply_ticket(model, cs.tickets[index])
    if mode == "reinit":
        init_weights(model, "kaiming_normal", cs.spec.seed + 1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
    return _fit(model, cfg, device, data, data_dir, workdir, resume, progress, should_stop, allow_changes)
