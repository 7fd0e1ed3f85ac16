"""Data: whole data sets as tensors in [0, 1] pixel space, seeded splits, on-device loading.

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
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import struct
import types
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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

SYNTHETIC_SIZES = {True: 2048, False: 512}   # train / test examples of the "synthetic" data set
SYNTHETIC_SHAPE = (1, 28, 28)                 # (C, H, W), Fashion-MNIST-shaped
FASHION_MNIST_SIZES = {True: 60000, False: 10000}

_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)   # Debian's dataset-fashion-mnist
_IDX_IMAGES, _IDX_LABELS = 2051, 2049                         # IDX magic: uint8, 3 dims / 1 dim
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SUBSET_FORMAT, _SUBSET_VERSION = "rst-data-subset", 1


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
    ds = _torchvision_dataset(name, train, _data_root(data_dir), download)
    data = torch.as_tensor(np.asarray(ds.data))                  # uint8
    if data.ndim == 4 and data.shape[-1] == 3:                   # CIFAR stores (N, H, W, C)
        data = data.permute(0, 3, 1, 2)
    labels = getattr(ds, "targets", None)
    labels = ds.labels if labels is None else labels
    return _to_float(data.contiguous()), torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]."""
    if images.ndim == 3:
        images = images.unsqueeze(1)
    return images.to(torch.float32).div_(255)


def _load_fashion_mnist(train: bool, data_dir, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
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
    return _to_float(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64)


_LOADERS = types.MappingProxyType({
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": functools.partial(_load_torchvision, "cifar10"),
    "cifar100": functools.partial(_load_torchvision, "cifar100"),
    "svhn": functools.partial(_load_torchvision, "svhn"),
    "synthetic": _load_synthetic,
})


# --------------------------------------------------------------------------------------------
# IDX files (the MNIST format), read by content
# --------------------------------------------------------------------------------------------


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _idx_header(path: Path) -> tuple[int, tuple[int, ...]] | None:
    """``(magic, dims)`` when ``path`` starts like an IDX file (plain or gzip), else None."""
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or not 1 <= head[3] <= 4:
                return None
            raw = f.read(4 * head[3])
    except (OSError, EOFError, zlib.error):     # unreadable, or a gzip that is not one: not IDX
        return None
    if len(raw) < 4 * head[3]:
        return None
    return struct.unpack(">i", head)[0], struct.unpack(f">{head[3]}I", raw)


def _scan_idx(directory: Path) -> list[tuple[Path, int, tuple[int, ...]]]:
    """IDX files in ``directory`` and its immediate subdirectories: ``(path, magic, dims)``."""
    def entries(d: Path) -> list[Path]:
        try:
            return sorted(d.iterdir())
        except OSError:                          # unreadable directory: nothing to find there
            return []
    top = entries(directory)
    paths = [p for p in top if p.is_file()]
    for sub in (p for p in top if p.is_dir()):
        paths += [p for p in entries(sub) if p.is_file()]
    found = []
    for p in paths:
        header = _idx_header(p)
        if header is not None:
            found.append((p, *header))
    return found


def _find_idx_pair(directory: Path, n: int, image_shape: tuple[int, int] = (28, 28)) -> tuple[Path, Path] | None:
    """The first (images, labels) IDX files in ``directory`` with ``n`` examples, or None."""
    found = _scan_idx(directory)
    images = [p for p, magic, dims in found if magic == _IDX_IMAGES and dims == (n, *image_shape)]
    labels = [p for p, magic, dims in found if magic == _IDX_LABELS and dims == (n,)]
    return (images[0], labels[0]) if images and labels else None


def _read_idx(path: str | os.PathLike) -> torch.Tensor:
    """One IDX file (plain or gzip) as a tensor of its stored shape and type.

    Raises ValueError naming the file when it is not IDX, truncated, too long or a broken gzip.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: corrupt gzip stream ({err}); re-download the file") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or not 1 <= data[3] <= 4:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim, start = data[3], 4 + 4 * data[3]
    if len(data) < start:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:start])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    body = len(data) - start
    if body != expected:
        what = "truncated" if body < expected else "longer than its header says"
        raise ValueError(f"{path}: {what}: the header gives shape {tuple(dims)} = {expected} bytes of data, "
                         f"the file has {body}")
    array = np.frombuffer(data, dtype=dtype, offset=start).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _read_idx_pair(images_path: Path, labels_path: Path,
                   num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 IDX images (N, H, W) and labels (N,) -> float32 (N, 1, H, W) in [0, 1], int64 (N,)."""
    images, labels = _read_idx(images_path), _read_idx(labels_path).to(torch.int64)
    if images.ndim != 3 or images.dtype != torch.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{images_path} and {labels_path} are not matching IDX images (N, H, W) uint8 and "
                         f"labels (N,): shapes {tuple(images.shape)} and {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{labels_path}: labels outside 0..{num_classes - 1} "
                         f"(min {labels.min().item()}, max {labels.max().item()})")
    return _to_float(images), labels


# --------------------------------------------------------------------------------------------
# Synthetic data
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


def synthetic_dataset(n: int, shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable, not trivial, seeded image classification set: no files, any shape.

    Each class has a fixed smooth random template ``t_k`` in [0, 1] (drawn from a fixed generator,
    so every seed samples the *same task*: draw train and test with different seeds);
    an example is ``x = clip(a * t_y + noise, 0, 1)`` with contrast ``a ~ U(0.5, 1)`` and pixel
    noise ``N(0, 0.25^2)``; labels are balanced and shuffled. Easy for a conv net with a linear
    head (near 100 % on held-out draws within ~100 Adam steps; an adversarial ticket search gets
    clearly above chance robust accuracy), harder for one that pools spatially first (~20 % after
    300 steps): the classes differ in where their patterns lie, not in local texture.

    Args:
        n: number of examples.
        shape: ``(C, H, W)`` of one image.
        num_classes: number of classes (labels ``0 .. num_classes - 1``).
        seed: seed of the examples (``torch.Generator``); same seed, identical tensors.

    Returns:
        ``(x, y)``: x float32 ``(n, C, H, W)`` in [0, 1], y int64 ``(n,)``.

    Example:
        >>> x, y = synthetic_dataset(256, shape=(3, 32, 32), seed=1)    # CIFAR-shaped
    """
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) with positive sides, got {tuple(shape)}")
    if n < 0 or num_classes < 1:
        raise ValueError(f"need n >= 0 and num_classes >= 1, got n={n}, num_classes={num_classes}")
    c, h, w = (int(s) for s in shape)
    templates = _synthetic_templates(num_classes, c, h, w)                    # (K, C, H, W)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    contrast = 0.5 + 0.5 * torch.rand(n, 1, 1, 1, generator=g)
    noise = 0.25 * torch.randn(n, c, h, w, generator=g)
    return (contrast * templates[y] + noise).clamp_(0, 1), y


def _synthetic_templates(num_classes: int, c: int, h: int, w: int) -> torch.Tensor:
    """Class templates ``(K, C, H, W)`` in [0, 1]: a shared pattern plus a class pattern, both smooth."""
    g = torch.Generator(device="cpu").manual_seed(0x5EED)
    grid = (max(2, h // 7), max(2, w // 7))                    # coarse random grid, upsampled: smooth
    shared = torch.randn(1, c, *grid, generator=g)
    own = torch.randn(num_classes, c, *grid, generator=g)
    coarse = 0.6 * shared + 0.8 * own
    return torch.sigmoid(1.5 * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False))


# --------------------------------------------------------------------------------------------
# Splits, augmentation, loading
# --------------------------------------------------------------------------------------------


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


def augment(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding plus random horizontal flip, per example, on x's device.

    Each image is padded by ``pad`` zero pixels on every side and cropped back to ``(H, W)`` at an
    offset drawn uniformly from ``0 .. 2 * pad`` per axis; with ``flip`` it is then mirrored
    left-right with probability 1/2. The random numbers are drawn on x's device from
    ``generator`` (which must live there: no draw on the host, no copy per batch) in this order:
    offsets ``(B, 2)`` as (row, column), then flips ``(B,)``. No Python loop over examples, no
    host-device synchronisation.

    Args:
        x: images ``(B, C, H, W)``, in [0, 1].
        pad: padding in pixels (0: no crop).
        flip: random horizontal flips.
        generator: a ``torch.Generator`` on x's device; None uses the global RNG of x's device.

    Returns:
        ``(B, C, H, W)`` on x's device, still in [0, 1] (``x`` itself when pad=0 and not flip).

    Raises:
        ValueError: ``pad < 0``, or a generator on another device type than x.

    Example:
        >>> xb = augment(xb, pad=4, flip=True, generator=torch.Generator(device=xb.device).manual_seed(0))
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0 and not flip:
        return x
    if generator is not None and torch.device(generator.device).type != x.device.type:
        raise ValueError(f"generator is on {generator.device}, x on {x.device}: create it with "
                         f"torch.Generator(device=x.device)")
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=x.device)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)                       # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)                       # (B, W)
    if flip:
        mirror = torch.rand(b, generator=generator, device=x.device) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)                   # (B, H+2p, W+2p, C)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, rows[:, :, None], cols[:, None, :]]                       # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def default_augment(name: str) -> tuple[int, bool]:
    """``(pad, flip)`` for a data set: CIFAR 4 + flip, SVHN 4, Fashion-MNIST 2 + flip, synthetic none."""
    if name not in AUGMENT:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return AUGMENT[name]


def _epoch_seed(seed: int, epoch: int, stream: str = "") -> int:
    """A 63-bit seed for (seed, epoch[, stream]), the same on every platform and Python version."""
    digest = hashlib.sha256(f"rst.data.datasets:{int(seed)}:{int(epoch)}{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def augment_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """The generator :func:`augment` draws from: on ``device`` (crop offsets and flips are drawn
    where the batch lives), seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


class DeviceLoader:
    """Batches of an in-memory set, cut, shuffled and augmented on the device.

    The whole set is moved to ``device`` once. Each epoch draws its permutation on the CPU from a
    generator seeded with ``(seed, epoch)`` (the same order on every device, one copy per epoch),
    and its augmentation on the device from a device generator seeded with ``(seed, epoch)`` too
    (:func:`augment_generator`; nothing drawn on the host per batch). So an epoch's batches are a
    function of ``(seed, epoch)`` and the device type (CPU and CUDA generators differ), and a killed
    run resumes exactly with :meth:`set_epoch`. Iterating uses
    :attr:`epoch` and then advances it by one (a plain ``for`` over epochs gets a new order each
    time); ``set_epoch(e)`` picks the epoch of the next iteration.

    Args:
        x, y: the set, ``(N, C, H, W)`` in [0, 1] and ``(N,)``.
        batch_size: examples per batch.
        shuffle: a new random order every epoch (else the stored order).
        augment: ``(pad, flip)`` for :func:`augment` (e.g. :func:`default_augment`), or None.
        device: where the batches live; default x's device.
        seed: seed of the shuffling and augmentation.
        drop_last: drop the last, smaller batch.

    Example:
        >>> loader = DeviceLoader(x, y, 256, augment=(4, True), device="cuda", seed=0)
        >>> for epoch in range(start_epoch, epochs):
        ...     loader.set_epoch(epoch)
        ...     for xb, yb in loader: ...          # xb (256, C, H, W), yb (256,)
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 augment: tuple[int, bool] | None = None, device: torch.device | str | None = None,
                 seed: int = 0, drop_last: bool = False):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        device = torch.device(device) if device is not None else x.device
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.augment = tuple(augment) if augment is not None else (0, False)
        self.seed, self.epoch = int(seed), 0

    @property
    def device(self) -> torch.device:
        return self.x.device

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``'s batches."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        n = len(self.x)
        g = torch.Generator(device="cpu").manual_seed(_epoch_seed(self.seed, epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        g_aug = augment_generator(self.device, _epoch_seed(self.seed, epoch, ":augment"))
        pad, flip = self.augment
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield augment(self.x[idx], pad, flip, generator=g_aug), self.y[idx]


# --------------------------------------------------------------------------------------------
# Small subsets shipped with the app (safetensors + JSON metadata, never pickle)
# --------------------------------------------------------------------------------------------


def save_subset(path: str | os.PathLike, x: torch.Tensor, y: torch.Tensor, meta: dict) -> Path:
    """Write a small subset as safetensors: x as uint8 (``round(255 x)``), y int64, JSON metadata.

    Args:
        path: the file to write (atomically: temporary file, then rename).
        x: images ``(N, C, H, W)`` in [0, 1].
        y: labels ``(N,)``.
        meta: JSON-serialisable; must name the ``"dataset"``; record ``"source"`` and ``"licence"``
            too (e.g. ``"Fashion-MNIST test split, images 0..999"``, ``"MIT, (c) Zalando SE"``).

    Example:
        >>> save_subset("assets/fmnist_test_1k.safetensors", x[:1000], y[:1000],
        ...             {"dataset": "fashion_mnist", "source": "test split, first 1000", "licence": "MIT"})
    """
    from safetensors.torch import save

    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"need x (N, C, H, W) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if "dataset" not in meta:
        raise ValueError("meta must name the 'dataset' (and should give 'source' and 'licence')")
    full = {**meta, "format": _SUBSET_FORMAT, "format_version": _SUBSET_VERSION,
            "num_examples": len(x), "image_shape": list(x.shape[1:])}
    tensors = {"x": x.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).contiguous(),
               "y": y.detach().cpu().to(torch.int64).contiguous()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata={"rst_subset": json.dumps(full)}))
    os.replace(tmp, path)
    return path


def subset_split(meta: dict) -> str | None:
    """The split a subset's images come from, ``"train"`` or ``"test"``, read from its ``"split"``
    metadata (``"train[:6000]"``, ``"test[:1000]"``); None when the file does not say."""
    split = str(meta.get("split") or "").split("[")[0].strip()
    return split if split in ("train", "test") else None


def load_subset(path: str | os.PathLike, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Read a file written by :func:`save_subset`: ``(x float32 (N, C, H, W) in [0, 1], y int64 (N,), meta)``.

    ``split="train"`` (or ``"test"``) refuses, with a ``ValueError``, a file whose metadata does not
    say its images come from that split: a search never takes test images for training ones.

    Example:
        >>> x, y, meta = load_subset("assets/fashion_mnist_train_subset.safetensors", split="train")
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("rst_subset")
            keys = set(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys & {"x", "y"}}
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    if raw is None or keys != {"x", "y"}:
        raise ValueError(f"{path}: not a data subset file (needs tensors x, y and 'rst_subset' metadata)")
    meta = json.loads(raw)
    if meta.get("format") != _SUBSET_FORMAT or meta.get("format_version") != _SUBSET_VERSION:
        raise ValueError(f"{path}: unsupported subset format {meta.get('format')!r} "
                         f"version {meta.get('format_version')!r}")
    if split is not None and subset_split(meta) != split:
        raise ValueError(f"{path}: its images are from the {meta.get('split')!r} split, not the {split} split")
    x, y = tensors["x"], tensors["y"]
    if x.dtype != torch.uint8 or x.ndim != 4 or y.dtype != torch.int64 or y.shape != (len(x),):
        raise ValueError(f"{path}: corrupt subset: x {x.dtype} {tuple(x.shape)}, y {y.dtype} {tuple(y.shape)}")
    return _to_float(x), y, meta
