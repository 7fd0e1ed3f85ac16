"""Independent jobs in worker processes, the machine's threads split between them.

A zoo build is a list of independent jobs (one search per keep ratio, the dense baseline, one
AutoAttack run per network). On a small CPU, two jobs at one thread each go through more work
than one job at two threads: measured on the 2-core EPYC here (``fmnist-fast`` search step, full
width), two 1-thread searches ran at about 430 + 530 images/s side by side, one 2-thread search at
634 images/s (README, "The default zoo"). ``run_jobs(fn, args, workers=2)`` runs ``fn(*a)`` for
every ``a`` of ``args`` in ``workers`` spawned processes with ``threads // workers`` threads each.

* ``workers=1`` (or a single job) runs everything here, in order: one code path, no processes.
* ``on_result(i, result)`` is called here, in the parent, as each job finishes (in completion
  order), so the caller can save after every job: a killed run keeps every finished job.
* The first job that raises cancels the jobs not started and re-raises here.

Jobs must be top-level functions with picklable arguments (``spawn``: nothing is forked, a worker
imports what it needs). They report progress by printing lines (their stdout is the parent's).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Sequence

import torch


def _init_worker(threads: int) -> None:
    from .allocator import keep_freed_memory
    torch.set_num_threads(threads)
    keep_freed_memory()        # a spawned worker starts with glibc's defaults


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """Intra-op threads for each of ``workers`` processes sharing ``threads`` (default: torch's)."""
    return max(1, (threads or torch.get_num_threads()) // max(1, workers))


def run_jobs(fn: Callable[..., Any], args: Sequence[tuple], *, workers: int = 1,
             on_result: Callable[[int, Any], None] | None = None) -> list:
    """``[fn(*a) for a in args]``, in ``workers`` processes when ``workers > 1`` (see module doc)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results: list = [None] * len(args)
    if workers == 1 or len(args) <= 1:
        for i, a in enumerate(args):
            results[i] = fn(*a)
            if on_result is not None:
                on_result(i, results[i])
        return results
    ctx = multiprocessing.get_context("spawn")
    n = min(workers, len(args))
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads_per_worker(n),)) as pool:
        futures = {pool.submit(fn, *a): i for i, a in enumerate(args)}
        pending = set(futures)
        try:
            while pending:
                # FIRST_COMPLETED, not FIRST_EXCEPTION (which waits for ALL unless one fails): each
                # result reaches on_result when its job ends, so the caller saves it then
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    results[futures[f]] = f.result()          # re-raises a job's exception
                    if on_result is not None:
                        on_result(futures[f], results[futures[f]])
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    return results


__all__ = ["run_jobs", "threads_per_worker"]
