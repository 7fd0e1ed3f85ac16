"""Masked layers: exact top-k counts, straight-through gradient through |s|, global top-k, cached masks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rst.network.masked import (GRANULARITIES, MaskedConv2d, MaskedLinear, MaskedMixin, TopKMask, cached_masks,
                        layer_stats, masked_layers, n_keep, score_shape, set_dense, set_global_keep,
                        set_keep_ratio)
from rst.network.models import NetworkSpec, build_network

KEEP_RATIOS = (0.01, 0.1, 0.5, 1.0)


def _group_size(layer) -> int:
    return layer.weight.numel() // layer.scores.numel()


# --------------------------------------------------------------------------------------------
# score shapes and n_keep
# --------------------------------------------------------------------------------------------


def test_score_shape_table():
    conv, lin = (8, 4, 3, 5), (8, 4)
    assert score_shape(conv, "element") == (8, 4, 3, 5)
    assert score_shape(conv, "row") == (8, 4, 3, 1)
    assert score_shape(conv, "kernel") == (8, 4, 1, 1)
    assert score_shape(conv, "channel") == (8, 1, 1, 1)
    assert score_shape(lin, "element") == score_shape(lin, "row") == score_shape(lin, "kernel") == (8, 4)
    assert score_shape(lin, "channel") == (8, 1)
    with pytest.raises(ValueError, match="granularity"):
        score_shape(conv, "block")


def test_n_keep_rounds_and_clamps():
    assert n_keep(1000, 0.1) == 100
    assert n_keep(1000, 1.0) == 1000
    assert n_keep(10, 0.01) == 1           # never an empty layer
    assert n_keep(7, 0.5) == round(3.5)
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="keep_ratio"):
            n_keep(10, bad)
    with pytest.raises(ValueError, match="keep_ratio"):
        MaskedLinear(4, 4, keep_ratio=0.0)


# --------------------------------------------------------------------------------------------
# 1. exact kept count per layer, every granularity and keep ratio
# --------------------------------------------------------------------------------------------


def _layers_for(granularity: str) -> list[tuple[str, MaskedMixin]]:
    """Masked convs (3x3, 1x1 shortcut, depthwise) and linears of three small networks."""
    out = []
    for arch, ds in (("fmnist_conv4", "fashion_mnist"), ("fmnist_resnet", "fashion_mnist"),
                     ("mobilenetv2", "cifar10")):
        net = build_network(NetworkSpec(arch, dataset=ds, width=0.25, granularity=granularity))
        out += [(f"{arch}.{name}", layer) for name, layer in masked_layers(net)]
    return out


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_exact_kept_count_per_layer(granularity):
    layers = _layers_for(granularity)
    kinds = {type(layer) for _, layer in layers}
    assert kinds == {MaskedConv2d, MaskedLinear}
    for keep_ratio in KEEP_RATIOS:
        for name, layer in layers:
            layer.keep_ratio = keep_ratio
            mask = layer.mask()
            k = n_keep(layer.scores.numel(), keep_ratio)
            assert mask.shape == layer.scores.shape == score_shape(layer.weight.shape, granularity), name
            assert set(mask.unique().tolist()) <= {0.0, 1.0}, name
            assert int(mask.sum().item()) == k, (name, keep_ratio)
            assert layer.kept_weights() == k * _group_size(layer), (name, keep_ratio)
            # the mask broadcasts over its groups: w_eff is non-zero exactly where the group is kept
            # (signed Kaiming constant weights are never zero)
            w_eff = layer.effective_weight()
            assert w_eff.shape == layer.weight.shape, name
            kept = mask.expand_as(layer.weight).bool()
            assert torch.equal(w_eff != 0, kept), name
            assert torch.equal(w_eff[kept], layer.weight[kept]), name


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_mask_keeps_the_largest_magnitudes(granularity):
    layer = MaskedConv2d(6, 5, 3, keep_ratio=0.3, granularity=granularity)
    with torch.no_grad():
        layer.scores.uniform_(-1, 1)
    mask = layer.mask().bool()
    mags = layer.scores.abs()
    assert mags[mask].min() > mags[~mask].max()
    # ranking is by |s|: flipping signs does not change the mask
    with torch.no_grad():
        layer.scores.neg_()
    assert torch.equal(layer.mask().bool(), mask)


def test_layer_stats_and_set_keep_ratio(tiny_model):
    set_keep_ratio(tiny_model, 0.1)
    rows = layer_stats(tiny_model)
    assert [r["layer"] for r in rows] == [n for n, _ in masked_layers(tiny_model)]
    for row, (_, layer) in zip(rows, masked_layers(tiny_model)):
        assert row["weights"] == layer.weight.numel()
        assert row["kept"] == n_keep(layer.scores.numel(), 0.1)
        assert row["density"] == pytest.approx(0.1, abs=0.5 / layer.scores.numel() + 1e-9)
    with pytest.raises(ValueError):
        set_keep_ratio(tiny_model, 0.0)


def test_dense_mode_uses_every_weight(tiny_model, tiny_batch):
    set_dense(tiny_model, True)
    for _, layer in masked_layers(tiny_model):
        assert layer.effective_weight() is layer.weight
        assert layer.kept_weights() == layer.weight.numel()
    set_dense(tiny_model, False)
    for _, layer in masked_layers(tiny_model):
        assert layer.kept_weights() == n_keep(layer.scores.numel(), 0.5)


# --------------------------------------------------------------------------------------------
# 2. gradient reaches the scores, never the frozen weights
# --------------------------------------------------------------------------------------------


def test_scores_get_gradient_weights_never(tiny_model, tiny_batch):
    x, y = tiny_batch
    learnable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert learnable and all(n.endswith(".scores") for n in learnable)
    before = {n: layer.weight.detach().clone() for n, layer in masked_layers(tiny_model)}
    opt = torch.optim.SGD([p for p in tiny_model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    tiny_model.train()
    F.cross_entropy(tiny_model(x), y).backward()
    for name, layer in masked_layers(tiny_model):
        assert layer.weight.requires_grad is False, name
        assert layer.weight.grad is None, name
        assert layer.scores.grad is not None, name
        assert layer.scores.grad.abs().sum() > 0, name
    opt.step()
    for name, layer in masked_layers(tiny_model):
        assert torch.equal(layer.weight, before[name]), name


# --------------------------------------------------------------------------------------------
# 3. the gradient goes through |s|: dL/ds = sign(s) * sum_group(dL/dw_eff * w)
# --------------------------------------------------------------------------------------------


def _layer_and_input(kind: str, granularity: str):
    g = torch.Generator().manual_seed(3)
    if kind == "conv":
        layer = MaskedConv2d(3, 4, 3, padding=1, keep_ratio=0.4, granularity=granularity)
        x = torch.rand(2, 3, 6, 6, generator=g)
        fwd = lambda w: F.conv2d(x, w, padding=1)  # noqa: E731
    else:
        layer = MaskedLinear(12, 5, keep_ratio=0.4, granularity=granularity)
        x = torch.rand(3, 12, generator=g)
        fwd = lambda w: F.linear(x, w)  # noqa: E731
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
        layer.scores.copy_(torch.rand(layer.scores.shape, generator=g) * 2 - 1)   # both signs
    return layer, x, fwd


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_score_gradient_is_signed_straight_through(kind, granularity):
    layer, x, fwd = _layer_and_input(kind, granularity)
    s = layer.scores.detach().clone()
    assert (s < 0).any() and (s > 0).any()
    r = torch.randn(layer(x).shape, generator=torch.Generator().manual_seed(4))
    (layer(x) * r).sum().backward()

    # manual: gradient of the same loss w.r.t. w_eff, as a leaf
    w_eff = (layer.weight * layer.mask().detach()).clone().requires_grad_(True)
    (g_weff,) = torch.autograd.grad((fwd(w_eff) * r).sum(), w_eff)
    unsigned = (g_weff * layer.weight).sum_to_size(s.shape)     # summed over each group
    expected = torch.sign(s) * unsigned

    torch.testing.assert_close(layer.scores.grad, expected, rtol=1e-5, atol=1e-6)
    # and the sign matters here: the unsigned gradient is a different tensor
    assert not torch.allclose(layer.scores.grad, unsigned, rtol=1e-3, atol=1e-6)
    assert layer.weight.grad is None


class _AbsWithoutSign(torch.autograd.Function):
    """|s| in the forward, but the gradient passed to s as if s were |s| (the spec's fatal bug)."""

    @staticmethod
    def forward(ctx, s):
        return s.abs()

    @staticmethod
    def backward(ctx, grad):
        return grad


def _mask_without_sign(self):
    return TopKMask.apply(_AbsWithoutSign.apply(self.scores), self.n_keep)


def _synthetic_task(g: torch.Generator, n: int, templates: torch.Tensor, noise: float = 0.3):
    """4 classes: a fixed random +-1 template per class, plus Gaussian noise, in [0, 1]."""
    y = torch.randint(0, templates.shape[0], (n,), generator=g)
    x = 0.5 + 0.25 * templates[y] + noise * torch.randn(n, *templates.shape[1:], generator=g)
    return x.clamp(0, 1), y


def _search_accuracy(seed: int = 0, steps: int = 80, batch: int = 32) -> float:
    """Edge-popup on the scores only (SGD momentum), then eval-mode test accuracy."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(4, 1, 28, 28, generator=g).sign()
    x_train, y_train = _synthetic_task(g, 1024, templates)
    x_test, y_test = _synthetic_task(g, 512, templates)
    model = build_network(NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=seed),
                          keep_ratio=0.5)
    scores = [layer.scores for _, layer in masked_layers(model)]
    opt = torch.optim.SGD(scores, lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x_train.shape[0], (batch,), generator=g)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def test_mask_search_beats_chance_and_needs_the_sign(monkeypatch):
    chance = 0.25
    acc = _search_accuracy()
    assert acc >= chance + 0.45, f"mask search reached {acc:.3f} on a 4-class task (chance {chance})"

    monkeypatch.setattr(MaskedMixin, "mask", _mask_without_sign)
    acc_unsigned = _search_accuracy()
    assert acc_unsigned < acc - 0.4, (acc_unsigned, acc)


# --------------------------------------------------------------------------------------------
# 4. global (network-wide) top-k
# --------------------------------------------------------------------------------------------


def test_set_global_keep_total_count_and_uneven_densities(tiny_model):
    layers = list(masked_layers(tiny_model))
    total = sum(layer.scores.numel() for _, layer in layers)
    counts = set_global_keep(tiny_model, 0.3)
    assert set(counts) == {name for name, _ in layers}
    assert min(counts.values()) > 0          # (at 0.1 the 256->64 linear is emptied: next test)
    kept = {name: int(layer.mask().sum().item()) for name, layer in layers}
    assert kept == counts
    assert sum(kept.values()) == n_keep(total, 0.3)
    densities = [kept[name] / layer.scores.numel() for name, layer in layers]
    assert max(densities) - min(densities) > 0.2, densities   # not the uniform per-layer ratio
    # the global threshold: every kept |s| beats every dropped |s|, across layers
    kept_mags = torch.cat([l.scores.abs()[l.mask().bool()] for _, l in layers])
    dropped_mags = torch.cat([l.scores.abs()[~l.mask().bool()] for _, l in layers])
    assert kept_mags.min() > dropped_mags.max()
    # back to the paper's uniform ratio
    set_keep_ratio(tiny_model, 0.1)
    for _, layer in layers:
        assert layer.k_override is None
        assert int(layer.mask().sum()) == n_keep(layer.scores.numel(), 0.1)


def test_set_global_keep_never_empties_a_layer(tiny_model):
    (_, first), *_ = masked_layers(tiny_model)
    with torch.no_grad():
        first.scores.mul_(1e-6)               # its scores all rank below every other layer's
    counts = set_global_keep(tiny_model, 0.05)
    assert counts[next(iter(counts))] == 1     # reported as kept: the count is what the layer really keeps
    assert int(first.mask().sum()) == 1      # topk needs k >= 1: the layer keeps one group


# --------------------------------------------------------------------------------------------
# 5. cached_masks
# --------------------------------------------------------------------------------------------


def test_cached_masks_same_outputs_no_score_gradient(tiny_model, tiny_batch, monkeypatch):
    x, y = tiny_batch
    tiny_model.eval()
    with torch.no_grad():
        reference = tiny_model(x)
    calls = []
    original = TopKMask.forward

    def counting_forward(ctx, magnitude, k):
        calls.append(k)
        return original(ctx, magnitude, k)

    monkeypatch.setattr(TopKMask, "forward", staticmethod(counting_forward))
    x_adv = x.clone().requires_grad_(True)
    with cached_masks(tiny_model) as m:
        assert m is tiny_model
        n_layers = len(calls)
        assert n_layers == len(list(masked_layers(tiny_model)))
        for _ in range(3):                  # an attack's inner loop
            out = tiny_model(x_adv)
            assert torch.equal(out, reference)
            (g,) = torch.autograd.grad(F.cross_entropy(out, y), x_adv)
            assert g.abs().sum() > 0        # the input gradient is there
        F.cross_entropy(tiny_model(x_adv), y).backward()
        assert len(calls) == n_layers       # top-k computed once per layer, on entry
        for name, layer in masked_layers(tiny_model):
            assert layer.scores.grad is None, name
            assert layer._cached_weight is not None and not layer._cached_weight.requires_grad
    for _, layer in masked_layers(tiny_model):
        assert layer._cached_weight is None
    # after the context the masks are live again: scores get gradient
    F.cross_entropy(tiny_model(x), y).backward()
    assert all(layer.scores.grad is not None for _, layer in masked_layers(tiny_model))


def test_cached_masks_cleared_after_exception(tiny_model, tiny_batch):
    x, _ = tiny_batch
    with pytest.raises(RuntimeError, match="boom"):
        with cached_masks(tiny_model):
            tiny_model(x)
            raise RuntimeError("boom")
    assert all(layer._cached_weight is None for _, layer in masked_layers(tiny_model))


def test_cached_masks_see_scores_of_entry_time(tiny_model, tiny_batch):
    """Scores changed inside the context do not take effect until the next entry."""
    x, _ = tiny_batch
    tiny_model.eval()
    with torch.no_grad():
        before = tiny_model(x)
        with cached_masks(tiny_model):
            for _, layer in masked_layers(tiny_model):
                layer.scores.copy_(torch.rand_like(layer.scores))
            assert torch.equal(tiny_model(x), before)
        assert not torch.equal(tiny_model(x), before)


def test_masked_layers_are_plain_modules_elsewhere():
    conv = MaskedConv2d(3, 8, 3, padding=1, keep_ratio=0.25)
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert conv(torch.rand(2, 3, 8, 8)).shape == (2, 8, 8, 8)
    lin = MaskedLinear(5, 2, keep_ratio=1.0)
    assert isinstance(lin, nn.Linear) and lin.bias is None
    assert torch.allclose(lin(torch.eye(5)), lin.weight.t())   # keep ratio 1: plain linear
    assert math.prod(lin.scores.shape) == 10
