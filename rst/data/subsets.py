"""The small data subsets shipped with the app and the tests: safetensors (x as uint8, y int64) plus
JSON metadata naming the data set, its split, source and licence; never pickle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .pixels import to_float_pixels

_SUBSET_FORMAT, _SUBSET_VERSION = "rst-data-subset", 1


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
    return to_float_pixels(x), y, meta
