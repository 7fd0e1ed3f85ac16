"""Benchmarks: our search step against the reference recipe's, time to a ticket, the transfer matrix.

    python -m rst.bench search                                   # ResNet-18, CIFAR-shaped, batch 256, PGD-7
    python -m rst.bench search --device cpu --arch fmnist_conv4 --width 1.0 --batch-size 256 --attack-steps 7
    python -m rst.bench search --device cuda --precision fp32 --json bench-search-fp32.json
    python -m rst.bench time-to-ticket --budget 600              # real Fashion-MNIST, reference vs fast recipe
    python -m rst.bench transfer --device cuda --json bench-transfer.json
    python -m rst.bench search --toy                             # CPU-size smoke run (seconds)
    python -m rst.bench tickets --device cuda                    # 7 tickets in one pass vs one at a time

``search`` times, on the same device and the same seeded network (Fu et al., NeurIPS 2021,
arXiv:2110.14068; spec §2 and §6):

* **reference** (:class:`ReferenceStep`): the public reference code's training step, reimplemented.
  fp32; every forward re-ranks each layer's scores with a FULL SORT of |s| (hidden-networks'
  ``GetSubnet``: ``scores.abs().flatten().sort()``, threshold at index ``j = int((1 - k) * numel)``);
  the PGD-7 inner attack calls ``loss.backward()`` at every step, so it also computes the score
  gradients and throws them away; the batch comes from host memory (``.to(device)`` each step).
* **ours**: the search loop's own step (:func:`rst.search.loop.train_step`) on its device-side loader.
  The two are timed interleaved, step by step, so that a shared machine's load falls on both alike. The mask is computed once per optimiser step (top-k, no sort) and reused by every attack
  step (:func:`rst.network.masked.cached_masks`); attack steps compute the input gradient only; the data
  set lives on the device (batches cut and augmented there); the speed settings of
  :mod:`rst.runtime.speed` ("auto" by default: bf16 autocast + channels_last where the device has native
  bf16, as on AVX-512-BF16 CPUs), optional ``torch.compile``.

Both use the same attack budget (PGD-7, eps 8/255, step 2/255, BN in train mode) and batch.
The reference's host-side data pipeline (PIL augmentation in DataLoader workers) is NOT timed:
it gets a ready batch in host memory, which favours the reference.

``time-to-ticket`` (:mod:`rst.bench.time_to_ticket`) runs the reference recipe and our fast recipe
side by side on real data under one wall-clock budget each and compares the time each needs to reach
the same validation PGD accuracy.

``transfer`` times a K x K transfer matrix (spec §4) computed naively (every (source, target) pair
attacks the source again: K² attacks) against :func:`rst.evaluation.metrics.transfer_matrix` (K attacks,
each evaluated on all targets), and checks that the two matrices agree (same seed per source).
"""
from __future__ import annotations

from .cli import main
from .reference import ReferenceStep, SortMask, reference_masks, reference_pgd, sort_mask
from .search import bench_search, bench_tickets
from .time_to_ticket import bench_time_to_ticket, plot_time_to_ticket
from .timing import device_name
from .transfer import bench_transfer, keep_ratios, naive_transfer_matrix, random_candidate_set

__all__ = ["ReferenceStep", "SortMask", "bench_search", "bench_tickets", "bench_time_to_ticket", "bench_transfer", "device_name",
           "keep_ratios", "main", "naive_transfer_matrix", "plot_time_to_ticket", "random_candidate_set", "reference_masks",
           "reference_pgd", "sort_mask"]
