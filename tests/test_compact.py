"""Dead channels cut out of a folded ticket (rst.network.compact): the same function, fewer channels."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse

from rst.network.compact import compact_channels
from rst.network.folded import folded_copy
from rst.network.models import NetworkSpec, build_network, set_keep_ratio


def _chain() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                        nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        c0, c1, c2, l0 = net[0], net[2], net[5], net[9]
        c0.weight[0] = 0; c0.bias[0] = -0.5      # zero after its ReLU: cut
        c0.weight[1] = 0; c0.bias[1] = 0.5       # a positive constant: read by the next layer, kept
        c1.weight[:, 2] = 0                      # channel 2 of the first layer unread: cut
        c1.weight[3] = 0; c1.bias[3] = -1.0      # zero after its ReLU: cut
        l0.weight[:, 4 * 1:4 * 2] = 0            # channel 1 of the last conv unread by the flatten's layer: cut
        net[11].weight[:, 0] = 0                 # first hidden unit unread: cut
    return net


class _Functional(nn.Module):
    """The same chain with its ReLUs, pooling and flatten as functions and tensor methods (as VGG writes them)."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.c0, self.c1, self.c2, self.l0, self.l1 = net[0], net[2], net[5], net[9], net[11]

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.c1(F.relu(self.c0(x)))), 2)
        x = F.adaptive_avg_pool2d(self.c2(x).relu(), 2).flatten(1)
        return self.l1(F.relu(self.l0(x)))


def _shapes(gm) -> list[tuple[int, int]]:
    return [tuple(m.weight.shape[:2]) for m in gm.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("written", ["modules", "functions"])
def test_dead_channels_are_cut_and_the_function_is_the_same(written):
    net = _chain() if written == "modules" else _Functional(_chain()).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    gm = compact_channels(fuse(copy.deepcopy(net)))
    assert _shapes(gm) == [(4, 1), (7, 4), (3, 7), (4, 12), (3, 4)]
    xc = x.detach().clone().requires_grad_(True)
    ref, out = net(x), gm(xc)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    ref.sum().backward(), out.sum().backward()
    torch.testing.assert_close(xc.grad, x.grad, atol=1e-6, rtol=1e-6)       # what an attack uses


def test_a_live_network_and_a_graph_that_is_not_a_chain_are_left_as_they_are():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    assert _shapes(compact_channels(fuse(dense))) == [(4, 1), (3, 144)]
    last_axis = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        last_axis[0].weight[0], last_axis[0].bias[0] = 0, -1.0   # dead, but the linear layer reads W, not C
    assert _shapes(compact_channels(fuse(last_axis))) == [(4, 1), (3, 8)]
    net = build_network(NetworkSpec("fmnist_resnet", dataset="fashion_mnist", seed=0)).eval()
    set_keep_ratio(net, 0.01)                    # sparse, but its residual adds are not a chain
    before = [p.shape for p in folded_copy(net).parameters()]
    from rst.network.dense_export import to_dense
    assert [p.shape for p in compact_channels(fuse(to_dense(net).eval())).parameters()] == before


@pytest.mark.parametrize("keep_ratio", [0.01, 0.05])
def test_a_sparse_tickets_folded_copy_is_narrower_and_computes_the_same(keep_ratio):
    net = build_network(NetworkSpec("fmnist_conv4", dataset="fashion_mnist", seed=0)).eval()
    set_keep_ratio(net, keep_ratio)
    fast = folded_copy(net)
    full = sum(m.weight.shape[0] for m in net.modules() if isinstance(m, nn.Conv2d))
    assert sum(m.weight.shape[0] for m in fast.modules() if isinstance(m, nn.Conv2d)) < full
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), atol=1e-5, rtol=1e-5)
