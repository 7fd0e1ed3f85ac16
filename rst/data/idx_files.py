"""IDX files (the MNIST format: Fashion-MNIST's four files), read by content, plain or gzip.

A directory is searched for an image file and a label file of the expected size by their headers,
whatever their names (:func:`find_idx_pair`); :func:`read_idx` refuses a file that is not IDX, is
truncated or too long, or is a broken gzip, with a ``ValueError`` naming it.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .pixels import to_float_pixels

_IDX_IMAGES, _IDX_LABELS = 2051, 2049                         # IDX magic: uint8, 3 dims / 1 dim
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _open(path: Path):
    """``path`` opened for reading, through gzip when it starts with the gzip magic."""
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


def find_idx_pair(directory: Path, n: int, image_shape: tuple[int, int] = (28, 28)) -> tuple[Path, Path] | None:
    """The first (images, labels) IDX files in ``directory`` with ``n`` examples, or None."""
    found = _scan_idx(directory)
    images = [p for p, magic, dims in found if magic == _IDX_IMAGES and dims == (n, *image_shape)]
    labels = [p for p, magic, dims in found if magic == _IDX_LABELS and dims == (n,)]
    return (images[0], labels[0]) if images and labels else None


def read_idx(path: str | os.PathLike) -> torch.Tensor:
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


def read_idx_pair(images_path: Path, labels_path: Path,
                   num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 IDX images (N, H, W) and labels (N,) -> float32 (N, 1, H, W) in [0, 1], int64 (N,)."""
    images, labels = read_idx(images_path), read_idx(labels_path).to(torch.int64)
    if images.ndim != 3 or images.dtype != torch.uint8 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{images_path} and {labels_path} are not matching IDX images (N, H, W) uint8 and "
                         f"labels (N,): shapes {tuple(images.shape)} and {tuple(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{labels_path}: labels outside 0..{num_classes - 1} "
                         f"(min {labels.min().item()}, max {labels.max().item()})")
    return to_float_pixels(images), labels
