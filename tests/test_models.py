"""Model registry and seeded weights: every registered model, reproducible inits across processes."""
from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rst
from rst.network.masked import MASKED_TYPES, masked_layers
from rst.network.models import (DATASET_STATS, Normalize, NetworkSpec, build_network, count_weights, model_entry,
                        network_checksum)
from rst.network.weights import INITS, draw_weight, init_scores, init_weights, weight_checksum

BIG = {"wrn34_10", "resnet18", "preact_resnet18", "vgg16_bn", "mobilenetv2"}   # tested at width 0.25


def _spec_for(arch: str, **kw) -> NetworkSpec:
    dataset = "fashion_mnist" if arch.startswith("fmnist") else "cifar10"
    return NetworkSpec(arch, dataset=dataset, width=0.25 if arch in BIG else 1.0, **kw)


# --------------------------------------------------------------------------------------------
# 7. every registered model
# --------------------------------------------------------------------------------------------


def test_registry_lists_the_papers_architectures():
    names = rst.list_models()
    assert names == sorted(names)
    assert {"resnet18", "wrn34_10", "vgg16_bn", "mobilenetv2", "fmnist_conv4"} <= set(names)
    with pytest.raises(KeyError, match="unknown architecture"):
        model_entry("alexnet")


@pytest.mark.parametrize("arch", rst.list_models())
def test_every_model_forward_backward_conventions(arch):
    spec = _spec_for(arch)
    side = 28 if arch.startswith("fmnist") else 32
    channels = 1 if arch.startswith("fmnist") else 3
    assert (spec.image_size, spec.in_channels) == (side, channels)
    assert model_entry(arch).input_size == side
    model = build_network(spec, keep_ratio=0.5)

    # the first module is the Normalize layer, with the dataset's statistics as buffers
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    _, _, _, mean, std = DATASET_STATS[spec.dataset]
    assert torch.allclose(first.mean.flatten(), torch.tensor(mean))
    assert torch.allclose(first.std.flatten(), torch.tensor(std))
    assert {n for n, _ in first.named_buffers()} == {"mean", "std"}

    # every conv / linear is masked, no biases, BatchNorm without affine parameters
    n_masked = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert isinstance(m, MASKED_TYPES), f"{arch}.{name} is a plain {type(m).__name__}"
            assert m.bias is None, name
            n_masked += 1
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not m.affine and m.weight is None and m.bias is None, name
            assert m.track_running_stats, name
        assert not isinstance(m, (nn.LayerNorm, nn.GroupNorm)), name
    assert n_masked == len(list(masked_layers(model))) >= 4
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    learnable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert learnable and all(n.endswith(".scores") for n in learnable)
    # the classifier is masked too: the last masked layer has num_classes outputs
    _, last = list(masked_layers(model))[-1]
    assert last.weight.shape[0] == spec.num_classes

    # forward and backward at the architecture's geometry
    model.train()
    x = torch.rand(2, channels, side, side)
    logits = model(x)
    assert logits.shape == (2, spec.num_classes)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for name, layer in masked_layers(model):
        assert layer.weight.grad is None, name
        assert layer.scores.grad is not None, name
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, spec.num_classes)


def test_width_scales_the_network():
    small = count_weights(build_network(NetworkSpec("resnet18", dataset="cifar10", width=0.25)))
    assert 0.04 < small / 11_164_352 < 0.08          # ~1/16 of the full ResNet-18


def test_full_resnet18_weight_count():
    """The paper's CIFAR ResNet-18 has 11.2 M conv+fc weights (create_model builds, does not init)."""
    model = rst.create_model("resnet18", num_classes=10, in_channels=3)
    assert count_weights(model) == 11_164_352


# --------------------------------------------------------------------------------------------
# NetworkSpec
# --------------------------------------------------------------------------------------------


def test_network_spec_validation_and_round_trip():
    spec = NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.5, init="kaiming_normal",
                       seed=7, granularity="kernel")
    assert NetworkSpec.from_dict(spec.to_dict()) == spec
    assert (spec.num_classes, spec.in_channels, spec.image_size) == (10, 1, 28)
    assert NetworkSpec("resnet18", dataset="cifar100").num_classes == 100
    with pytest.raises(KeyError, match="unknown architecture"):
        NetworkSpec("alexnet")
    with pytest.raises(ValueError, match="dataset"):
        NetworkSpec("fmnist_conv4", dataset="imagenet21k")
    with pytest.raises(ValueError, match="init"):
        NetworkSpec("fmnist_conv4", init="orthogonal")
    with pytest.raises(ValueError, match="granularity"):
        NetworkSpec("fmnist_conv4", granularity="block")
    with pytest.raises(ValueError, match="width"):
        NetworkSpec("fmnist_conv4", width=0)
    with pytest.raises(ValueError, match="unknown network spec fields"):
        NetworkSpec.from_dict({**spec.to_dict(), "prune_rate": 0.5})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1


def test_granularity_changes_scores_not_weights():
    a = build_network(NetworkSpec("fmnist_conv4", width=0.25, granularity="element"))
    b = build_network(NetworkSpec("fmnist_conv4", width=0.25, granularity="channel"))
    assert weight_checksum(a) == weight_checksum(b)
    assert [l.scores.shape for _, l in masked_layers(a)] != [l.scores.shape for _, l in masked_layers(b)]


# --------------------------------------------------------------------------------------------
# 6. seeded weights: identical across processes, different across seeds, right scale per init
# --------------------------------------------------------------------------------------------

_CHILD = """
import torch, rst
from rst.network.models import NetworkSpec, build_network
torch.manual_seed(12345)   # the global RNG must not matter
spec = NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed={seed})
print(rst.weight_checksum(build_network(spec)))
"""


def test_same_seed_same_weights_in_another_process(tiny_spec, repo_root):
    here = weight_checksum(build_network(tiny_spec))
    assert here == network_checksum(tiny_spec)
    out = subprocess.run([sys.executable, "-c", _CHILD.format(seed=tiny_spec.seed)], cwd=repo_root,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == here
    assert len(here) == 64 and int(here, 16) >= 0


def test_weights_do_not_depend_on_global_rng_or_build_order(tiny_spec):
    torch.manual_seed(1)
    a = build_network(tiny_spec)
    torch.manual_seed(2)
    torch.rand(100)
    b = build_network(tiny_spec)
    for (_, la), (_, lb) in zip(masked_layers(a), masked_layers(b)):
        assert torch.equal(la.weight, lb.weight)
        assert torch.equal(la.scores, lb.scores)


def test_different_seed_or_init_different_checksum(tiny_spec):
    base = network_checksum(tiny_spec)
    other_seed = NetworkSpec(tiny_spec.arch, dataset=tiny_spec.dataset, width=tiny_spec.width, seed=1)
    assert network_checksum(other_seed) != base
    other_init = NetworkSpec(tiny_spec.arch, dataset=tiny_spec.dataset, width=tiny_spec.width,
                             init="kaiming_normal", seed=0)
    assert network_checksum(other_init) != base
    # the checksum sees a single changed weight
    model = build_network(tiny_spec)
    _, layer = next(masked_layers(model))
    with torch.no_grad():
        layer.weight.view(-1)[0] *= -1
    assert weight_checksum(model) != base


def _fans(shape):
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def test_signed_kaiming_constant_is_exactly_plus_minus_const(tiny_spec):
    model = build_network(tiny_spec)   # default init
    for name, layer in masked_layers(model):
        fan_in, _ = _fans(layer.weight.shape)
        c = math.sqrt(2.0 / fan_in)
        assert torch.allclose(layer.weight.abs(), torch.full_like(layer.weight, c)), name
        frac_pos = (layer.weight > 0).float().mean().item()
        assert 0.3 < frac_pos < 0.7, name          # both signs, roughly balanced


@pytest.mark.parametrize("init", INITS)
def test_init_scales(init):
    g = torch.Generator().manual_seed(0)
    shape = (128, 64, 3, 3)                        # fan_in 576, fan_out 1152, 73 k draws
    fan_in, fan_out = _fans(shape)
    w = draw_weight(torch.Size(shape), init, g)
    assert w.shape == shape and w.dtype == torch.float32
    expected_std = {
        "signed_kaiming_constant": math.sqrt(2.0 / fan_in),
        "kaiming_normal": math.sqrt(2.0 / fan_in),
        "kaiming_uniform": math.sqrt(2.0 / fan_in),      # U(-b, b), b = sqrt(6 / fan_in)
        "xavier_normal": math.sqrt(2.0 / (fan_in + fan_out)),
    }[init]
    assert w.std().item() == pytest.approx(expected_std, rel=0.02)
    assert abs(w.mean().item()) < 0.1 * expected_std
    if init == "signed_kaiming_constant":
        assert torch.allclose(w.abs(), torch.full_like(w, expected_std))
    if init == "kaiming_uniform":
        bound = math.sqrt(6.0 / fan_in)
        assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    # a linear weight uses its in_features as fan_in
    w2 = draw_weight(torch.Size((300, 200)), init, g)
    scale2 = {"xavier_normal": math.sqrt(2.0 / 500)}.get(init, math.sqrt(2.0 / 200))
    assert w2.std().item() == pytest.approx(scale2, rel=0.03)


def test_unknown_init_rejected():
    with pytest.raises(ValueError, match="init"):
        draw_weight(torch.Size((4, 4)), "orthogonal", torch.Generator())


@pytest.mark.parametrize("init", INITS)
def test_init_weights_each_layer_its_own_fan_in(init):
    model = build_network(NetworkSpec("fmnist_resnet", width=0.5, init=init))
    for name, layer in masked_layers(model):
        fan_in, fan_out = _fans(layer.weight.shape)
        if layer.weight.numel() < 2000:
            continue                              # too few draws for a std estimate
        target = math.sqrt(2.0 / (fan_in + fan_out)) if init == "xavier_normal" else math.sqrt(2.0 / fan_in)
        assert layer.weight.std().item() == pytest.approx(target, rel=0.1), name


def test_scores_uniform_in_fan_in_bound_and_independent_of_weights(tiny_spec):
    model = build_network(tiny_spec)
    for name, layer in masked_layers(model):
        fan_in, _ = _fans(layer.weight.shape)
        bound = 1.0 / math.sqrt(fan_in)
        assert layer.scores.abs().max().item() <= bound, name
        assert (layer.scores < 0).any() and (layer.scores > 0).any(), name
    # re-drawing scores with another seed leaves the weights alone
    before = weight_checksum(model)
    init_scores(model, seed=99)
    assert weight_checksum(model) == before
    init_weights(model, tiny_spec.init, seed=tiny_spec.seed)
    assert weight_checksum(model) == before
