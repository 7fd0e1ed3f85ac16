"""Dead channels cut out of a folded ticket: a sparse ticket leaves whole channels without a kept
weight, and they cost a dense convolution as much as live ones.

A channel of a layer is *dead* when its output is zero on every input (no kept weight from a live
input channel, and a bias of zero, or below zero with a ReLU after it), or when the next layer has no
kept weight from it. Cutting it from the layer's outputs and from the next layer's inputs changes no
logit beyond float rounding (each cut term is an exact zero). On the default zoo's sparsest members
most channels of the first layers are dead (keep0.01 keeps 2 of the first convolution's 48).

Works on a chain of modules as :func:`torch.fx.experimental.optimization.fuse` leaves a plain
feed-forward network: convolutions and linear layers with ReLU, pooling, flatten or dropout between
them (as modules, functions or tensor methods). Any other graph (a residual add, a grouped
convolution) is returned as it is.

    >>> gm = compact_channels(fuse(dense))     # gm: a torch.fx.GraphModule, same function
"""
from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

# what maps a zero channel to a zero channel and keeps the channel axis (flatten: see _group), as modules,
# functions and tensor methods
_BETWEEN = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
            nn.Dropout, nn.Identity)
_RELU_FUNCTIONS = (F.relu, torch.relu)
_BETWEEN_FUNCTIONS = _RELU_FUNCTIONS + (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                                        torch.flatten)
_BETWEEN_METHODS = ("relu", "flatten")


def _between(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str | None:
    """"relu", "flatten" or "other" for what may stand between two layers (it maps zero channels to zero),
    else None."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if not isinstance(mod, _BETWEEN):
            return None
        return "relu" if isinstance(mod, nn.ReLU) else "flatten" if isinstance(mod, nn.Flatten) else "other"
    if node.op == "call_function" and node.target in _BETWEEN_FUNCTIONS:
        return "relu" if node.target in _RELU_FUNCTIONS else "flatten" if node.target is torch.flatten else "other"
    if node.op == "call_method" and node.target in _BETWEEN_METHODS:
        return node.target                   # "relu" or "flatten"
    return None


def _chain(gm: torch.fx.GraphModule) -> list[tuple[str, list[str]]] | None:
    """The weight layers in order, each with what stands between it and the next (:func:`_between`), or
    None when the graph is not a plain chain that this module knows how to cut."""
    layers: list[tuple[str, list[str]]] = []
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    for node in nodes:
        if len(node.users) != 1:
            return None
        mod = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(mod, nn.Conv2d) and mod.groups == 1 or isinstance(mod, nn.Linear):
            layers.append((node.target, []))
        elif not layers:
            continue                         # what runs before the first layer (normalisation) stays
        elif (kind := _between(gm, node)) is not None:
            layers[-1][1].append(kind)
        else:
            return None
    return layers if len(layers) >= 2 else None


def _group(a: nn.Module, b: nn.Module, between: list[str]) -> int | None:
    """Inputs of ``b`` per output channel of ``a`` (a flatten after a convolution), or None."""
    if isinstance(b, nn.Conv2d):
        return 1 if isinstance(a, nn.Conv2d) and b.in_channels == a.out_channels else None
    if isinstance(a, nn.Conv2d) and "flatten" not in between:
        return None                          # a linear layer over a convolution's last axis, not its channels
    n_out = a.out_channels if isinstance(a, nn.Conv2d) else a.out_features
    return b.in_features // n_out if b.in_features % n_out == 0 else None


def _rows(m: nn.Module) -> torch.Tensor:
    """(out, in, k) view of a layer's weight."""
    return m.weight.detach().flatten(2) if m.weight.dim() == 4 else m.weight.detach().unsqueeze(-1)


def _cut(m: nn.Module, out_idx: torch.Tensor, in_idx: torch.Tensor, group: int) -> nn.Module:
    """A copy of layer ``m`` with only the output channels ``out_idx`` and the input channels ``in_idx``
    (each standing for ``group`` consecutive inputs)."""
    cols = (in_idx.view(-1, 1) * group + torch.arange(group, device=in_idx.device)).flatten()
    w = m.weight.detach()[out_idx][:, cols]
    b = None if m.bias is None else m.bias.detach()[out_idx]
    if isinstance(m, nn.Conv2d):
        new = nn.Conv2d(len(cols), len(out_idx), m.kernel_size, m.stride, m.padding, m.dilation,
                        bias=b is not None, padding_mode=m.padding_mode, device=w.device, dtype=w.dtype)
    else:
        new = nn.Linear(len(cols), len(out_idx), bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.requires_grad_(False)
    if isinstance(m, nn.Conv2d) and m.weight.is_contiguous(memory_format=torch.channels_last):
        new = new.to(memory_format=torch.channels_last)       # the layout of the copy it replaces
    return new.eval()


@torch.no_grad()
def compact_channels(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` with its dead channels cut out (module docstring), in place; the last layer's outputs stay."""
    chain = _chain(gm)
    if chain is None:
        return gm
    mods = [gm.get_submodule(t) for t, _ in chain]
    groups = [_group(a, b, between) for a, b, (_, between) in zip(mods[:-1], mods[1:], chain)]
    if any(g is None for g in groups):
        return gm
    live_in = [torch.ones(mods[0].weight.shape[1], dtype=torch.bool, device=mods[0].weight.device)]
    live_out = []
    for i, m in enumerate(mods):                         # forward: outputs that are zero on every input
        g = 1 if i == 0 else groups[i - 1]
        w = _rows(m)[:, live_in[i].repeat_interleave(g)]
        silent = w.abs().sum((1, 2)) == 0
        if i == len(mods) - 1:
            live = torch.ones_like(silent)
        else:
            relu = "relu" in chain[i][1]
            b = torch.zeros_like(silent, dtype=w.dtype) if m.bias is None else m.bias.detach()
            live = ~(silent & ((b == 0) | (relu & (b < 0))))
        live_out.append(live)
        if i + 1 < len(mods):
            live_in.append(live.clone())
    for i in range(len(mods) - 2, -1, -1):               # backward: outputs the next layer does not read
        nxt, g = mods[i + 1], groups[i]
        w = _rows(nxt)[live_out[i + 1]]                  # (out kept, in, k)
        read = w.abs().sum((0, 2)).view(-1, g).sum(1) != 0
        live_out[i] &= read
        if not live_out[i].any():
            live_out[i][0] = True                        # a layer keeps one channel: never a 0-wide tensor
        live_in[i + 1] = live_out[i]
    for i, (target, _) in enumerate(chain):
        out_idx = live_out[i].nonzero().flatten()
        in_idx = live_in[i].nonzero().flatten()
        if len(out_idx) == len(live_out[i]) and len(in_idx) == len(live_in[i]):
            continue
        parent, _, name = target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, name,
                _cut(mods[i], out_idx, in_idx, 1 if i == 0 else groups[i - 1]))
    return gm


__all__ = ["compact_channels"]
