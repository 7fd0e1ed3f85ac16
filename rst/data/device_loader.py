"""The device-side loader: a whole in-memory set moved to the device once, then cut, shuffled and
augmented there in batches, each epoch's batches a function of ``(seed, epoch)``.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch

from .augmentation import augment, augment_generator


def _epoch_seed(seed: int, epoch: int, stream: str = "") -> int:
    """A 63-bit seed for (seed, epoch[, stream]), the same on every platform and Python version."""
    # the key names the module this lived in first: changing it would change every epoch's batches
    digest = hashlib.sha256(f"rst.data.datasets:{int(seed)}:{int(epoch)}{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


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
