"""rst.runtime.allocator: freed tensor memory is reused instead of unmapped (a per-process setting, so
each case runs in a fresh interpreter and this test process keeps glibc's defaults)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
PROBE = f"""
import json, sys
sys.path.insert(0, {TESTS!r})
from rst.runtime.allocator import keep_freed_memory
from test_allocator import page_faults_of_reused_blocks
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
print(json.dumps({{"kept": kept, "faults": page_faults_of_reused_blocks()}}))
"""


def page_faults_of_reused_blocks() -> int:
    """Page faults of 10 allocations of 64 MiB after 3 warm-up ones: ~16k each when glibc unmaps them."""
    import resource

    import torch
    for _ in range(3):
        torch.ones(16 << 20).sum()                   # 64 MiB allocated, touched and freed
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(16 << 20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0


glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's mallopt only")


def _probe(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_tensors_are_reused_without_page_faults():
    default, kept = _probe("default"), _probe("keep")
    assert kept["kept"] is True
    # glibc's default maps and unmaps each 64 MiB block: ~16k faults per allocation, 10 allocations
    assert default["faults"] > 50_000, default
    assert kept["faults"] < default["faults"] / 20, (default, kept)


@glibc
def test_environment_opts_out():
    out = _probe("keep", RST_KEEP_FREED_MEMORY="0")
    assert out["kept"] is False and out["faults"] > 50_000, out


def test_the_library_leaves_the_allocator_alone_on_import():
    code = "import rst, rst.search.loop, rst.zoo.build, rst.runtime.allocator; print(rst.runtime.allocator._glibc.cache_info().currsize)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"         # keep_freed_memory() never ran
