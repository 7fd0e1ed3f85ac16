"""Tickets in memory: a :class:`Ticket` (a subnetwork's masks and BatchNorm statistics), a
:class:`CandidateSet` of tickets over one seeded random network, and moving a ticket between a
model and its snapshot (:func:`extract_ticket`, :func:`apply_ticket`, :func:`clear_ticket`).

Their file format is :mod:`rst.network.masks`, which re-exports every name here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from rst.runtime.speed import flush_subnormal_bn_stats_
from .mask_errors import MaskFileError
from .masked import masked_layers
from .models import NetworkSpec, build_network


@dataclass
class Ticket:
    """One subnetwork: boolean masks per masked layer (score shape) and its BN running statistics."""
    keep_ratio: float
    masks: dict[str, torch.Tensor]
    bn_stats: dict[str, torch.Tensor]
    name: str = ""
    metrics: dict = field(default_factory=dict)
    search_config: dict = field(default_factory=dict)

    def kept_fraction(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / sum(m.numel() for m in self.masks.values())


@dataclass
class CandidateSet:
    """Tickets over the same seeded random network (``spec``), plus the file's metadata.

    ``warnings``: what loading could not verify (one line each, e.g. metadata without its digest);
    the CLI and the app show them. ``probabilities``: the R2S switch probabilities of the tickets
    (one per ticket, summing to 1; :mod:`rst.evaluation.switch_probabilities`), or None: uniform.
    """
    spec: NetworkSpec
    tickets: list[Ticket]
    weight_checksum: str = ""
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    probabilities: list[float] | None = None

    def model(self, index: int = 0, device: torch.device | str | None = None) -> nn.Module:
        """A fresh network with ticket ``index`` applied, in eval mode."""
        net = build_network(self.spec, device=device)
        apply_ticket(net, self.tickets[index])
        return net.eval()

    def __len__(self) -> int:
        return len(self.tickets)


def _bn_buffers(model: nn.Module):
    """``(key, module, buffer name)`` of every BatchNorm running statistic of ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                t = getattr(module, buf)
                if t is not None:
                    yield f"{name}.{buf}", module, buf


@torch.no_grad()
def extract_ticket(model: nn.Module, name: str = "", metrics: dict | None = None,
                   search_config: dict | None = None) -> Ticket:
    """Snapshot the model's current masks (from its scores or fixed masks) and BN statistics."""
    masks, keep = {}, None
    for lname, layer in masked_layers(model):
        masks[lname] = layer.mask().detach().to("cpu").bool().clone()
        keep = layer.keep_ratio if keep is None else keep
    bn_stats = {k: getattr(m, b).detach().to("cpu").clone() for k, m, b in _bn_buffers(model)}
    return Ticket(keep_ratio=float(keep), masks=masks, bn_stats=bn_stats, name=name,
                  metrics=dict(metrics or {}), search_config=dict(search_config or {}))


def _check_fits(model: nn.Module, layers: dict, ticket: Ticket) -> None:
    """Refuse a ticket whose layers, mask shapes or BatchNorm statistics do not fit ``model``."""
    if set(layers) != set(ticket.masks):
        missing, extra = set(layers) - set(ticket.masks), set(ticket.masks) - set(layers)
        raise MaskFileError(f"ticket does not fit this network: missing masks for {sorted(missing)[:3]}, "
                            f"unknown layers {sorted(extra)[:3]}")
    for lname, layer in layers.items():
        m = ticket.masks[lname]
        if tuple(m.shape) != tuple(layer.scores.shape):
            raise MaskFileError(f"mask of layer {lname!r} has shape {tuple(m.shape)}, "
                                f"the network expects {tuple(layer.scores.shape)}")
    for key, module, buf in _bn_buffers(model):
        if key not in ticket.bn_stats:
            raise MaskFileError(f"ticket has no BatchNorm statistic {key!r}")
        if tuple(ticket.bn_stats[key].shape) != tuple(getattr(module, buf).shape):
            raise MaskFileError(f"BatchNorm statistic {key!r} has shape {tuple(ticket.bn_stats[key].shape)}, "
                                f"the network expects {tuple(getattr(module, buf).shape)}")


@torch.no_grad()
def apply_ticket(model: nn.Module, ticket: Ticket) -> nn.Module:
    """Fix the model's masks and BN statistics to ``ticket`` (on the model's device); returns it."""
    layers = dict(masked_layers(model))
    _check_fits(model, layers, ticket)      # validate everything before changing the model
    for lname, layer in layers.items():
        layer.fixed_mask = ticket.masks[lname].to(layer.weight.device, torch.bool)
        layer.keep_ratio = ticket.keep_ratio
        layer.dense = False
    for key, module, buf in _bn_buffers(model):
        getattr(module, buf).copy_(ticket.bn_stats[key])
    return flush_subnormal_bn_stats_(model)      # a dead channel's decayed statistics slow fp32 convs


def clear_ticket(model: nn.Module) -> None:
    """Go back to masks computed from the scores."""
    for _, layer in masked_layers(model):
        layer.fixed_mask = None
