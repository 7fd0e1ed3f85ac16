"""Plain PyTorch export of a masked network: the masks folded into the weights (``w * mask``), no scores.

:func:`dense_state_dict` gives a plain ``state_dict`` (what ``rst.network.masks.save_weights``
writes), :func:`to_dense` a copy of the model made of plain ``nn.Conv2d`` / ``nn.Linear`` layers.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from .masked import masked_layers


@torch.no_grad()
def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain ``state_dict``: masked weights folded in (``w * mask``), no scores, no masks.

    It loads into :func:`to_dense` 's module, or any ``torch.nn`` network of the same layout.
    """
    out = {}
    layers = dict(masked_layers(model))
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in layers:
            if leaf == "weight":
                out[key] = layers[owner].effective_weight().detach().clone()
            continue   # scores (and fixed_mask, which is not persistent) are dropped
        out[key] = value.detach().clone()
    return out


def to_dense(model: nn.Module) -> nn.Module:
    """A copy of ``model`` made of plain ``nn.Conv2d`` / ``nn.Linear`` layers holding ``w * mask``."""
    dense = copy.deepcopy(model)
    for name, layer in list(masked_layers(dense)):
        parent = dense.get_submodule(name.rpartition(".")[0]) if "." in name else dense
        leaf = name.rpartition(".")[2]
        w = layer.effective_weight().detach().clone()
        if isinstance(layer, nn.Conv2d):
            plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                              layer.padding, layer.dilation, layer.groups, bias=False)
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, bias=False)
        plain.weight = nn.Parameter(w, requires_grad=False)
        setattr(parent, leaf, plain)
    return dense
