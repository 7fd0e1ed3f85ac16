"""Multi-GPU search with DistributedDataParallel: the few helpers :func:`rst.search.loop.adversarial_fit` calls.

Launch the unchanged CLI with ``torchrun``; every process runs the same search on its own shard of
each batch, and DDP averages the score gradients, so the replicas stay identical::

    python -m torch.distributed.run --nproc_per_node=4 -m rst search --preset paper-cifar10-resnet18 ...

Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) every helper is a no-op that
returns its input, so the single-process search is exactly the code you read in ``rst.search.loop``.

Decisions (the numbers keep their single-process meaning):

* ``SearchConfig.batch_size`` is the GLOBAL batch (images per optimiser step, the paper's 256);
  each rank takes ``ceil(batch_size / world_size)`` of it, so the learning rate needs no change
  (pick a batch size the number of GPUs divides).
* Sharding (:class:`ShardedLoader`): every rank draws the same permutation of the epoch from the
  same seed (the permutation :class:`rst.data.datasets.DeviceLoader` draws) and takes every
  ``world_size``-th example from offset ``rank`` (DistributedSampler's layout): the shards are
  disjoint, and step ``i``'s union over ranks is the single-process loader's batch ``i`` when
  ``world_size`` divides the batch size. The ``N mod world_size`` last examples of the permutation
  are dropped so every rank takes the same number of steps. Augmentation is drawn per rank.
* BatchNorm: per-rank batch statistics (plain ``BatchNorm2d``, no buffer sync in DDP's forward),
  as data-parallel training without SyncBatchNorm (DDP or ``nn.DataParallel``) computes them. So
  with 4 GPUs and batch 256 the BN statistics of the inner attack and of the update come from 64
  images, not 256: a small departure from the one-GPU search. SyncBatchNorm would remove it but
  add a collective to every forward of the inner attack (7 per step for PGD-7). The running
  statistics (each rank's own EMA) are averaged over ranks at the end of every epoch
  (:func:`average_bn_stats`), before validation, selection and checkpoints.
* The inner attack runs on the underlying module, not through DDP's forward: no gradient sync
  (and no DDP bookkeeping) happens during attack steps. Only the update step goes through DDP
  (``find_unused_parameters=False``: every trainable tensor, the scores in a search, gets a
  gradient at every step).
* Metrics: the epoch's loss/accuracy sums are summed over ranks; validation is sharded the same
  way and combined weighted by image count, so every rank sees the same numbers and selects
  the same epoch. Only rank 0 reports progress and writes checkpoints; a caller that writes files
  after the fit returns (the CLI's ticket and log) should do so only where :func:`is_main`.

Backends: NCCL with ``cuda:LOCAL_RANK`` when the search was asked to run on CUDA, Gloo on the CPU.
"""
from __future__ import annotations

import atexit
import hashlib
import inspect
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from rst.data.augmentation import augment, augment_generator
from rst.data.device_loader import DeviceLoader, _epoch_seed


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_distributed() -> bool:
    """True when this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device | str | None = None) -> DistInfo:
    """Join the process group ``torchrun`` set up (idempotent); a no-op in a single process.

    ``device``: where the caller wants to compute. A CUDA device becomes ``cuda:LOCAL_RANK``
    (and the current CUDA device, so a bare ``"cuda"`` elsewhere means this rank's GPU) with the
    NCCL backend; anything else runs on the CPU with Gloo.

    Example::

        >>> info = init_distributed("cuda")     # under torchrun: DistInfo(rank=1, ..., device=cuda:1)
    """
    device = torch.device(device if device is not None else "cpu")
    if not launched_distributed():
        return DistInfo(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():     # NCCL cannot put two ranks on one GPU
            raise RuntimeError(f"rank {rank} has LOCAL_RANK {local_rank}, but this machine has "
                               f"{torch.cuda.device_count()} CUDA GPU(s): start at most that many processes "
                               f"per node (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_destroy)
    return DistInfo(rank, local_rank, world, device)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and reports progress."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (in place; ``t`` itself in a single process)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks (in place; ``t`` itself in a single process)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (a stop request must stop all ranks together)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


class ShardedLoader:
    """This rank's part of every epoch of a :class:`rst.data.datasets.DeviceLoader` (same interface).

    Epoch ``e``'s permutation is the one the wrapped loader draws (seed ``(seed, e)``, the same on
    all ranks); this rank takes ``order[rank::world_size]`` of its first ``N - N mod world_size``
    entries and cuts it into batches of ``ceil(batch_size / world_size)``. Augmentation
    (crop/flip) is drawn on the data's device from a generator seeded with ``(seed, epoch, rank)``.
    """

    def __init__(self, loader: DeviceLoader, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(loader.x) < world_size:
            raise ValueError(f"{len(loader.x)} examples cannot be split over {world_size} ranks")
        self.loader, self.rank, self.world_size = loader, int(rank), int(world_size)
        self.batch_size = math.ceil(loader.batch_size / world_size)     # per rank
        self.per_rank = len(loader.x) // world_size                    # examples per rank and epoch

    @property
    def device(self) -> torch.device:
        return self.loader.device

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        n, b = self.per_rank, self.batch_size
        return n // b if self.loader.drop_last else math.ceil(n / b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        src, epoch = self.loader, self.loader.epoch
        src.epoch += 1
        g = torch.Generator(device="cpu").manual_seed(_epoch_seed(src.seed, epoch))   # shared by all ranks
        n = len(src.x)
        order = torch.randperm(n, generator=g) if src.shuffle else torch.arange(n)
        mine = order[:self.per_rank * self.world_size][self.rank::self.world_size].to(src.device)
        g_aug = augment_generator(src.device, _rank_seed(src.seed, epoch, self.rank))      # on the device
        pad, flip = src.augment
        for i in range(len(self)):
            idx = mine[i * self.batch_size:(i + 1) * self.batch_size]
            yield augment(src.x[idx], pad, flip, generator=g_aug), src.y[idx]


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    digest = hashlib.sha256(f"rst.search.distributed:{int(seed)}:{int(epoch)}:{int(rank)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shard(loader: DeviceLoader) -> DeviceLoader | ShardedLoader:
    """This rank's :class:`ShardedLoader` of ``loader``; ``loader`` itself in a single process."""
    return ShardedLoader(loader, rank(), world_size()) if is_distributed() else loader


def sharded_mean(fn: Callable[[torch.Tensor, torch.Tensor], float], x: torch.Tensor, y: torch.Tensor) -> float:
    """``fn(x, y)`` (a mean over examples, e.g. an accuracy) computed on this rank's rows
    ``x[rank::world_size]`` and combined over ranks weighted by row count; ``fn(x, y)`` in a single
    process. Every rank gets the same number."""
    if not is_distributed():
        return fn(x, y)
    xs, ys = x[rank()::world_size()], y[rank()::world_size()]
    value = fn(xs, ys) if len(xs) else 0.0
    t = all_reduce_sum(torch.tensor([value * len(xs), float(len(xs))], dtype=torch.float64,
                                    device=_collective_device()))
    return float(t[0] / t[1]) if t[1] > 0 else float("nan")


def _collective_device() -> torch.device:
    """Tensors passed to collectives live here (NCCL needs CUDA tensors)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel(model)`` for the update step; ``model`` itself in a single process.

    The attack must keep using ``model`` (the underlying module): DDP's forward prepares a gradient
    all-reduce, which the input-gradient-only attack steps must not trigger.
    """
    if not info.enabled:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # no buffer sync in forward (per-rank BN statistics); newer torch renamed the switch
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
                      else {"broadcast_buffers": False})
    return ddp(model, device_ids=device_ids, find_unused_parameters=False, **no_buffer_sync)


def average_bn_stats(model: nn.Module) -> None:
    """Average BatchNorm running means and variances over ranks (each rank tracked its own shard)."""
    if not is_distributed():
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None:
            all_reduce_mean(m.running_mean)
            all_reduce_mean(m.running_var)


__all__ = ["DistInfo", "ShardedLoader", "all_reduce_mean", "all_reduce_sum", "any_rank", "average_bn_stats",
           "barrier", "init_distributed", "is_distributed", "is_main", "launched_distributed", "rank", "shard",
           "sharded_mean", "world_size", "wrap_ddp"]
