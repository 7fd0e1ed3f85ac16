"""Model registry: random networks whose every conv and classifier is masked.

All models share the paper's conventions: normalisation as the first layer (statistics are
buffers, inputs stay in [0, 1] pixel space), no biases, BatchNorm without affine parameters
(running statistics tracked: they are part of a ticket), every conv and the classifier masked.

    >>> import rst
    >>> rst.list_models()[:3]
    ['fmnist_conv4', 'fmnist_conv4_widefc', 'fmnist_resnet']
    >>> spec = rst.NetworkSpec("fmnist_conv4", dataset="fashion_mnist", seed=0)
    >>> model = rst.build_network(spec)          # weights regenerated from the seed
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from rst.runtime.config import check_field_types, strict_from_dict
from .masked import GRANULARITIES, MaskedConv2d, MaskedLinear, masked_layers, set_keep_ratio
from .weights import INITS, init_scores, init_weights, weight_checksum

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int           # the image side the architecture was designed for (pixels)
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, input_size: int, description: str):
    def deco(fn):
        _REGISTRY[name] = ModelEntry(name, fn, input_size, description)
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, *, num_classes: int = 10, in_channels: int = 3,
                 mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,),
                 width: float = 1.0, keep_ratio: float = 1.0, granularity: str = "element") -> nn.Module:
    """Build an architecture from the registry (weights *not* initialised: see :func:`build_network`)."""
    entry = model_entry(name)
    conv = functools.partial(MaskedConv2d, keep_ratio=keep_ratio, granularity=granularity)
    linear = functools.partial(MaskedLinear, keep_ratio=keep_ratio, granularity=granularity)
    body = entry.builder(num_classes=num_classes, in_channels=in_channels, width=width, conv=conv, linear=linear)
    return nn.Sequential(Normalize(mean, std), body)


# --------------------------------------------------------------------------------------------
# Network spec: everything the frozen weights are a function of
# --------------------------------------------------------------------------------------------

DATASET_STATS = {
    # name: (num_classes, in_channels, image_size, mean, std)
    "fashion_mnist": (10, 1, 28, (0.2860,), (0.3530,)),
    "cifar10": (10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": (10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "synthetic": (10, 1, 28, (0.5,), (0.25,)),   # rst.data.datasets.synthetic_dataset's default geometry
}


@dataclass(frozen=True)
class NetworkSpec:
    """The seeded random network: architecture, its arguments, dataset geometry, init, seed.

    ``dataset`` fixes classes, channels and the normalisation statistics (see ``DATASET_STATS``);
    the weights depend on ``arch``, ``width``, the dataset's classes/channels, ``init`` and ``seed``.
    ``granularity`` sets the score shape of every masked layer (it does not change the weights).
    """
    arch: str
    dataset: str = "fashion_mnist"
    width: float = 1.0
    init: str = "signed_kaiming_constant"
    seed: int = 0
    granularity: str = "element"

    def __post_init__(self):
        check_field_types(self)
        model_entry(self.arch)
        if self.dataset not in DATASET_STATS:
            raise ValueError(f"unknown dataset {self.dataset!r}; known: {', '.join(DATASET_STATS)}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")

    @property
    def num_classes(self) -> int:
        return DATASET_STATS[self.dataset][0]

    @property
    def in_channels(self) -> int:
        return DATASET_STATS[self.dataset][1]

    @property
    def image_size(self) -> int:
        return DATASET_STATS[self.dataset][2]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkSpec":
        return strict_from_dict(cls, d, "network spec")


def build_network(spec: NetworkSpec, device: torch.device | str | None = None,
                  keep_ratio: float = 1.0) -> nn.Module:
    """The random network of ``spec`` with weights and scores regenerated from ``spec.seed``.

    Weights are drawn on the CPU and then moved to ``device`` (bit-identical on every device).
    """
    n_cls, c_in, _, mean, std = DATASET_STATS[spec.dataset]
    model = create_model(spec.arch, num_classes=n_cls, in_channels=c_in, mean=mean, std=std,
                         width=spec.width, keep_ratio=keep_ratio, granularity=spec.granularity)
    init_weights(model, spec.init, spec.seed)
    init_scores(model, spec.seed)
    return model.to(device) if device is not None else model


def network_checksum(spec: NetworkSpec) -> str:
    """Checksum of the frozen weights of ``spec`` (built on the CPU)."""
    return weight_checksum(build_network(spec))


def count_weights(model: nn.Module) -> int:
    return sum(layer.weight.numel() for _, layer in masked_layers(model))


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; statistics are buffers (RobustBench's ImageNormalizer)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W) in [0, 1]
        return (x - self.mean) / self.std


def bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, affine=False)


def _w(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016), as in the paper's CIFAR ResNet-18."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1)
        self.bn1 = bn(c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1)
        self.bn2 = bn(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride), bn(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b)."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv):
        super().__init__()
        self.bn1 = bn(c_in)
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1)
        self.bn2 = bn(c_out)
        self.conv2 = conv(c_out, c_out, 3, stride=1, padding=1)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = conv(c_in, c_out, 1, stride=stride)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem with stride 1, stages of residual blocks, global pool, linear."""

    def __init__(self, block, stages: list[tuple[int, int, int]], stem: int, num_classes: int,
                 in_channels: int, conv, linear, preact: bool = False):
        super().__init__()
        self.preact = preact
        self.stem = conv(in_channels, stem, 3, stride=1, padding=1)
        self.stem_bn = None if preact else bn(stem)
        layers, c = [], stem
        for c_out, n_blocks, stride in stages:
            for i in range(n_blocks):
                layers.append(block(c, c_out, stride if i == 0 else 1, conv))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.final_bn = bn(c) if preact else None
        self.fc = linear(c, num_classes)

    def forward(self, x):
        out = self.stem(x)
        if self.stem_bn is not None:
            out = F.relu(self.stem_bn(out))
        out = self.layers(out)
        if self.final_bn is not None:
            out = F.relu(self.final_bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)   # (B, C)
        return self.fc(out)


# --------------------------------------------------------------------------------------------
# The paper's architectures (CIFAR geometry: 32x32 input)
# --------------------------------------------------------------------------------------------


@register_model("resnet18", 32, "The paper's CIFAR ResNet-18: post-activation, 3x3 stem, stride 1 (11.2 M weights)")
def resnet18(num_classes, in_channels, width, conv, linear):
    s = [(_w(64, width), 2, 1), (_w(128, width), 2, 2), (_w(256, width), 2, 2), (_w(512, width), 2, 2)]
    return ResNet(BasicBlock, s, _w(64, width), num_classes, in_channels, conv, linear)


@register_model("preact_resnet18", 32, "Pre-activation ResNet-18 (He et al. 2016b), CIFAR geometry")
def preact_resnet18(num_classes, in_channels, width, conv, linear):
    s = [(_w(64, width), 2, 1), (_w(128, width), 2, 2), (_w(256, width), 2, 2), (_w(512, width), 2, 2)]
    return ResNet(PreActBlock, s, _w(64, width), num_classes, in_channels, conv, linear, preact=True)


@register_model("wrn34_10", 32, "WideResNet-34-10 (the paper's 'WideResNet32'), pre-activation blocks (46 M weights)")
def wrn34_10(num_classes, in_channels, width, conv, linear):
    n, k = 5, 10   # depth 34 = 6n + 4
    s = [(_w(16 * k, width), n, 1), (_w(32 * k, width), n, 2), (_w(64 * k, width), n, 2)]
    return ResNet(PreActBlock, s, _w(16, width), num_classes, in_channels, conv, linear, preact=True)


class VGG(nn.Module):
    def __init__(self, cfg, num_classes, in_channels, width, conv, linear):
        super().__init__()
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                c_out = _w(v, width)
                layers += [conv(c, c_out, 3, padding=1), bn(c_out), nn.ReLU(inplace=True)]
                c = c_out
        self.features = nn.Sequential(*layers)
        self.fc = linear(c, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


@register_model("vgg16_bn", 32, "VGG-16 with BatchNorm, CIFAR geometry (14.7 M weights)")
def vgg16_bn(num_classes, in_channels, width, conv, linear):
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    return VGG(cfg, num_classes, in_channels, width, conv, linear)


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, expand, conv):
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers = []
        if expand != 1:
            layers += [conv(c_in, hidden, 1), bn(hidden), nn.ReLU6(inplace=True)]
        layers += [conv(hidden, hidden, 3, stride=stride, padding=1, groups=hidden), bn(hidden),
                   nn.ReLU6(inplace=True), conv(hidden, c_out, 1), bn(c_out)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


@register_model("mobilenetv2", 32, "MobileNetV2, CIFAR variant (stride-1 stem and first stages)")
def mobilenetv2(num_classes, in_channels, width, conv, linear):
    # (expand, channels, repeats, stride); strides of the first stages reduced for 32x32 inputs
    cfg = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    c = _w(32, width)
    layers = [conv(in_channels, c, 3, stride=1, padding=1), bn(c), nn.ReLU6(inplace=True)]
    for t, ch, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(c, _w(ch, width), s if i == 0 else 1, t, conv))
            c = _w(ch, width)
    last = _w(1280, width)
    layers += [conv(c, last, 1), bn(last), nn.ReLU6(inplace=True)]
    return _PoolLinear(nn.Sequential(*layers), linear(last, num_classes))


class _PoolLinear(nn.Module):
    def __init__(self, features, fc):
        super().__init__()
        self.features, self.fc = features, fc

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


# --------------------------------------------------------------------------------------------
# Small networks for 28x28 grayscale input (Fashion-MNIST)
# --------------------------------------------------------------------------------------------


class ConvNet(nn.Module):
    """Conv-4 style (Ramanujan et al. 2020): conv-conv-pool-conv-conv-pool, then two hidden FC layers."""

    def __init__(self, num_classes, in_channels, width, conv, linear, channels=(32, 32, 64, 64), hidden=256):
        super().__init__()
        c1, c2, c3, c4 = (_w(c, width) for c in channels)
        h = _w(hidden, width)
        self.features = nn.Sequential(
            conv(in_channels, c1, 3, padding=1), bn(c1), nn.ReLU(inplace=True),
            conv(c1, c2, 3, padding=1), bn(c2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            conv(c2, c3, 3, padding=1), bn(c3), nn.ReLU(inplace=True),
            conv(c3, c4, 3, padding=1), bn(c4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            # the 7x7 map is pooled to 4x4 and flattened into the masked fully connected layers
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            linear(c4 * 16, h), nn.BatchNorm1d(h, affine=False), nn.ReLU(inplace=True),
            linear(h, h), nn.BatchNorm1d(h, affine=False), nn.ReLU(inplace=True),
            linear(h, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


@register_model("fmnist_conv4", 28, "Conv-4 for 28x28 grayscale: 4 convs (32-32-64-64), FC 256-256 (0.40 M weights)")
def fmnist_conv4(num_classes, in_channels, width, conv, linear):
    return ConvNet(num_classes, in_channels, width, conv, linear)


@register_model("fmnist_conv4_widefc", 28,
                "Conv-4 with 4x wider FC layers: 4 convs (32-32-64-64), FC 1024-1024 (2.17 M weights)")
def fmnist_conv4_widefc(num_classes, in_channels, width, conv, linear):
    # The fully connected layers hold most of the weights and little of the compute: four times
    # their width multiplies the weights a mask can choose from by 5.5 and the compute by about 1.1.
    return ConvNet(num_classes, in_channels, width, conv, linear, hidden=1024)


@register_model("fmnist_resnet", 28, "Small post-activation ResNet for 28x28: stem 32, stages 32-64-128, one block each (0.31 M weights)")
def fmnist_resnet(num_classes, in_channels, width, conv, linear):
    s = [(_w(32, width), 1, 1), (_w(64, width), 1, 2), (_w(128, width), 1, 2)]
    return ResNet(BasicBlock, s, _w(32, width), num_classes, in_channels, conv, linear)


__all__ = ["NetworkSpec", "build_network", "create_model", "list_models", "register_model", "model_entry",
           "Normalize", "DATASET_STATS", "count_weights", "network_checksum", "set_keep_ratio"]
