"""The data sets: where each one's images come from, its test split, a seeded train / validation split
and its augmentation recipe, as whole tensors in [0, 1] pixel space.

Every loader returns ``(x, y)``: ``x`` float32 ``(N, C, H, W)`` in [0, 1] (no normalisation: the
model's first layer normalises, see ``rst.network.models.DATASET_STATS``), ``y`` int64 ``(N,)``. The sets
are small enough to hold in memory, so a :class:`DeviceLoader` moves a whole set to the device once
and cuts, shuffles and augments batches there, with no worker processes.

Where the files come from (``data_dir`` argument, else ``$RST_DATA_DIR``, else ``~/.cache/rst/data``):

    cifar10 / cifar100 / svhn   torchvision's layout under that root (downloaded when possible)
    fashion_mnist               the four IDX files, found by content (any names, plain or .gz), in
                                data_dir, $RST_DATA_DIR, $RST_DATA_DIR/fashion-mnist,
                                /usr/share/datasets/fashion-mnist (Debian ``dataset-fashion-mnist``),
                                then torchvision's FashionMNIST under the root
    synthetic                   generated from a seed (:func:`synthetic_dataset`), no files

    >>> import rst.data.datasets as data
    >>> x, y = data.load_dataset("synthetic", train=True)
    >>> x.shape, y.shape
    (torch.Size([2048, 1, 28, 28]), torch.Size([2048]))
    >>> loader = data.DeviceLoader(x, y, batch_size=128, augment=data.default_augment("fashion_mnist"))
    >>> loader.set_epoch(3)
    >>> xb, yb = next(iter(loader))              # (128, 1, 28, 28), (128,)

The pieces live beside this module and are re-exported here: :mod:`rst.data.synthetic` (the
generated set), :mod:`rst.data.idx_files` (IDX files read by content), :mod:`rst.data.subsets` (the
shipped subsets), :mod:`rst.data.augmentation` (crop and flip on the device) and
:mod:`rst.data.device_loader` (the :class:`DeviceLoader`).
"""
from __future__ import annotations

import functools
import os
import types
from pathlib import Path

import numpy as np
import torch

from .augmentation import augment, augment_generator  # noqa: F401  (re-exported)
from .device_loader import DeviceLoader, _epoch_seed  # noqa: F401  (re-exported)
from .idx_files import find_idx_pair as _find_idx_pair, read_idx_pair as _read_idx_pair
from .idx_files import read_idx as _read_idx  # noqa: F401  (re-exported)
from .pixels import to_float_pixels
from .subsets import load_subset, save_subset, subset_split  # noqa: F401  (re-exported)
from .synthetic import SYNTHETIC_SHAPE, SYNTHETIC_SIZES, synthetic_dataset

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "svhn", "synthetic")
DATA_DIR_ENV = "RST_DATA_DIR"

# (pad in pixels, random horizontal flip): random crop with zero padding + flip, per data set
AUGMENT = types.MappingProxyType({
    "fashion_mnist": (2, True),
    "cifar10": (4, True),
    "cifar100": (4, True),
    "svhn": (4, False),           # digits: a mirrored 2 or 5 is not a 2 or 5
    "synthetic": (0, False),
})

FASHION_MNIST_SIZES = {True: 60000, False: 10000}

_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)   # Debian's dataset-fashion-mnist


class DataUnavailableError(RuntimeError):
    """A data set's files are neither on disk nor downloadable; the message says how to provide them."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir``, else ``$RST_DATA_DIR``, else ``~/.cache/rst/data``."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "rst" / "data"


def load_dataset(name: str, train: bool, data_dir: str | os.PathLike | None = None,
                 download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split of a data set as tensors in [0, 1] pixel space.

    Args:
        name: one of :data:`DATASETS`.
        train: the training split (else the test split).
        data_dir: where the files are (see the module docstring); default ``$RST_DATA_DIR`` or
            ``~/.cache/rst/data``.
        download: let torchvision download missing files into the data root.

    Returns:
        ``(x, y)``: x float32 ``(N, C, H, W)`` in [0, 1], y int64 ``(N,)``.

    Raises:
        DataUnavailableError: the files are missing and cannot be downloaded (offline); the message
            names the places looked at and the layout expected.
        ValueError: an unknown name, or a file found but truncated or corrupt (the message names it).

    Example:
        >>> x, y = load_dataset("fashion_mnist", train=False)     # (10000, 1, 28, 28), (10000,)
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return _LOADERS[name](train=bool(train), data_dir=data_dir, download=download)


def _load_synthetic(train: bool, data_dir, download) -> tuple[torch.Tensor, torch.Tensor]:
    """The "synthetic" split: 2048 train images drawn with seed 0, 512 test images with seed 1."""
    return synthetic_dataset(SYNTHETIC_SIZES[train], SYNTHETIC_SHAPE, num_classes=10, seed=0 if train else 1)


# torchvision-backed sets: (class name, split keyword, files expected under the root)
_TORCHVISION = {
    "cifar10": ("CIFAR10", "train", "cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz)"),
    "cifar100": ("CIFAR100", "train", "cifar-100-python/ (the extracted cifar-100-python.tar.gz)"),
    "svhn": ("SVHN", "split", "train_32x32.mat and test_32x32.mat (format 2, cropped digits)"),
    "fashion_mnist": ("FashionMNIST", "train", "FashionMNIST/raw/ with the four IDX files"),
}


def _torchvision_dataset(name: str, train: bool, root: Path, download: bool):
    """The torchvision dataset object, or DataUnavailableError explaining what to do."""
    import torchvision.datasets

    cls_name, split_kw, layout = _TORCHVISION[name]
    cls = getattr(torchvision.datasets, cls_name)
    split = {"split": "train" if train else "test"} if split_kw == "split" else {"train": train}
    try:
        return cls(str(root), download=download, **split)
    except (OSError, RuntimeError) as err:       # URLError is an OSError; "not found" a RuntimeError
        why = (f"downloading it failed, the machine appears to be offline ({type(err).__name__}: {err})"
               if download else f"it is not under {root} and download=False ({err})")
        raise DataUnavailableError(
            f"{name} ({'train' if train else 'test'} split) is unavailable: {why}. "
            f"Provide the files yourself: put {layout} under a directory and pass it as "
            f"--data-dir (data_dir=...) or set {DATA_DIR_ENV}; it is used as torchvision's root "
            f"(looked in {root}).") from err


def _load_torchvision(name: str, train: bool, data_dir, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A split of a torchvision-backed set (CIFAR, SVHN) in [0, 1] pixels, labels int64."""
    ds = _torchvision_dataset(name, train, _data_root(data_dir), download)
    data = torch.as_tensor(np.asarray(ds.data))                  # uint8
    if data.ndim == 4 and data.shape[-1] == 3:                   # CIFAR stores (N, H, W, C)
        data = data.permute(0, 3, 1, 2)
    labels = getattr(ds, "targets", None)
    labels = ds.labels if labels is None else labels
    return to_float_pixels(data.contiguous()), torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def _load_fashion_mnist(train: bool, data_dir, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A Fashion-MNIST split from IDX files in the known places, else from torchvision's FashionMNIST."""
    n = FASHION_MNIST_SIZES[train]
    candidates: list[Path] = []
    if data_dir is not None:
        candidates.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        candidates += [Path(env).expanduser(), Path(env).expanduser() / "fashion-mnist"]
    candidates += list(_SYSTEM_DIRS)

    looked, seen = [], set()
    for directory in candidates:
        if directory in seen:
            continue
        seen.add(directory)
        if not directory.is_dir():
            looked.append(f"{directory} (no such directory)")
            continue
        pair = _find_idx_pair(directory, n)
        if pair is None:
            looked.append(f"{directory} (no IDX image + label files with {n} examples)")
            continue
        return _read_idx_pair(*pair)

    root = _data_root(data_dir)
    try:
        ds = _torchvision_dataset("fashion_mnist", train, root, download)
    except DataUnavailableError as err:
        looked.append(f"torchvision FashionMNIST under {root} ({err.__cause__})")
        raise DataUnavailableError(
            f"fashion_mnist ({'train' if train else 'test'} split, {n} examples) is unavailable"
            f"{' and the download failed: the machine appears to be offline' if download else ''}. "
            f"Looked in: {'; '.join(looked)}. Provide the four IDX files (train-images-idx3-ubyte, "
            f"train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; any names, "
            f"plain or .gz; found by content) in a directory passed as --data-dir (data_dir=...) or "
            f"set {DATA_DIR_ENV}; on Debian/Ubuntu `apt install dataset-fashion-mnist` puts them in "
            f"/usr/share/datasets/fashion-mnist.") from err.__cause__
    return to_float_pixels(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64)


_LOADERS = types.MappingProxyType({
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": functools.partial(_load_torchvision, "cifar10"),
    "cifar100": functools.partial(_load_torchvision, "cifar100"),
    "svhn": functools.partial(_load_torchvision, "svhn"),
    "synthetic": _load_synthetic,
})


# --------------------------------------------------------------------------------------------
# Splits and the augmentation of each data set
# --------------------------------------------------------------------------------------------


def test_split(dataset: str, seed: int = 0, data_dir: str | os.PathLike | None = None,
               n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of ``dataset`` (the first ``n``): "synthetic" draws 512 with ``seed + 1``.

    The one rule every evaluation uses (CLI, eval commands, zoo), so that a synthetic network of
    seed ``s`` is always evaluated on the same images, disjoint from its training draw (seed ``s``).
    """
    if dataset == "synthetic":
        x, y = synthetic_dataset(512, seed=seed + 1)
    else:
        x, y = load_dataset(dataset, train=False, data_dir=data_dir)
    return (x[:n], y[:n]) if n else (x, y)


def split_train_val(x: torch.Tensor, y: torch.Tensor, val_size: int | float,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out a seeded random validation set.

    Args:
        x, y: the set, ``(N, ...)`` and ``(N,)``.
        val_size: number of validation examples (int), or a fraction of N in [0, 1] (float);
            0 gives empty validation tensors.
        seed: seed of the permutation; both parts keep the original relative order.

    Returns:
        ``(x_train, y_train, x_val, y_val)``: disjoint, together exactly the original set.

    Example:
        >>> xt, yt, xv, yv = split_train_val(x, y, val_size=0.1, seed=0)
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y differ in length: {n} vs {len(y)}")
    if isinstance(val_size, bool):
        raise TypeError("val_size must be an int count or a float fraction, not a bool")
    if isinstance(val_size, float):
        if not 0.0 <= val_size <= 1.0:
            raise ValueError(f"a fractional val_size must be in [0, 1], got {val_size}")
        n_val = int(round(val_size * n))
    else:
        n_val = int(val_size)
    if not 0 <= n_val <= n:
        raise ValueError(f"val_size must be between 0 and {n} examples, got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator(device="cpu").manual_seed(int(seed)))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    val_idx, train_idx = val_idx.to(x.device), train_idx.to(x.device)
    return x[train_idx], y[train_idx.to(y.device)], x[val_idx], y[val_idx.to(y.device)]


def default_augment(name: str) -> tuple[int, bool]:
    """``(pad, flip)`` for a data set: CIFAR 4 + flip, SVHN 4, Fashion-MNIST 2 + flip, synthetic none."""
    if name not in AUGMENT:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return AUGMENT[name]
