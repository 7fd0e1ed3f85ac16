"""The CPU memory allocator of a long-running process: keep freed tensor memory for reuse.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves large blocks (above a
threshold that adapts up to 32 MiB) with ``mmap`` and gives them back with ``munmap`` when the
tensor is freed, so each training step maps its activations afresh and the kernel zero-fills
every page on first touch. On the 2-core EPYC here that showed as 30 % system time in a
full-width Conv-4 search and about 0.5 M page faults per 10 steps (README, "Speed"). Raising
glibc's mmap and trim thresholds keeps freed blocks in the heap, so a step reuses the previous
step's pages: no page faults, no system time, the same maths bit for bit.

This is a setting of the whole process (glibc's ``mallopt``), so the library never changes it
on import: the command line (``python -m rst ...``) and its worker processes call
:func:`keep_freed_memory` once at start; a Python user opts in the same way. (``python -m
rst.bench`` leaves glibc's defaults, so its figures stay comparable with earlier ones;
``bench/allocator.py`` measures the difference.)
The price: the process keeps its peak heap instead of returning it to the system between
steps. Elsewhere than glibc (macOS, musl, Windows) it does nothing and says so.

    >>> import rst.runtime.allocator
    >>> rst.runtime.allocator.keep_freed_memory()      # True on glibc
    True
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc <malloc.h>
MMAP_THRESHOLD = 1 << 30                          # blocks under 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1                    # never give the heap's top back (int max)
OPT_OUT = "RST_KEEP_FREED_MEMORY"                 # "0": leave the allocator as it is


@functools.lru_cache(maxsize=None)
def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return lib if hasattr(lib, "mallopt") else None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds so that freed tensor memory is reused, not unmapped.

    Returns True when the thresholds were set; False where there is no glibc, or when the
    environment variable ``RST_KEEP_FREED_MEMORY=0`` opts out. Calling it again is harmless.
    """
    if os.environ.get(OPT_OUT, "1") == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = ["keep_freed_memory"]
