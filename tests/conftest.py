"""Shared fixtures: CPU only, one thread (RST_TEST_THREADS overrides), tiny seeded networks, and the ``RUN_SLOW`` switch.

Tests marked ``slow`` (real data, larger models) are skipped unless ``RUN_SLOW=1``
(RobustBench's convention). pyproject's ``addopts = -m 'not slow'`` already deselects them;
``RUN_SLOW=1 pytest -m slow`` (or ``-m ''``) runs them.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from rst.network.masks import CandidateSet, load_tickets, save_tickets
from rst.network.models import NetworkSpec, build_network

# One intra-op thread by default: the networks here are tiny, and on a loaded 2-core machine two
# OpenMP threads spin-waiting for each other made the same test 10-20x slower than one thread.
torch.set_num_threads(int(os.environ.get("RST_TEST_THREADS", "1")))

RUN_SLOW = os.environ.get("RUN_SLOW", "0") not in ("", "0", "false", "False")
REPO_ROOT = Path(__file__).resolve().parent.parent
BAD_MASKS = Path(__file__).resolve().parent / "bad_masks"


def pytest_collection_modifyitems(config, items):
    if RUN_SLOW:
        return
    skip = pytest.mark.skip(reason="slow test: set RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _main_module_restored():
    """Streamlit's script runner (AppTest) makes the app's script ``sys.modules["__main__"]`` and leaves
    it there: a worker process spawned later (rst.runtime.workers) would run the app's script as its
    main module before its job. Each test gives the test runner's ``__main__`` back."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state (tests still pass seeds explicitly)."""
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_spec() -> NetworkSpec:
    """Conv-4 at quarter width for 28x28 grayscale input: ~25 k weights, milliseconds per pass."""
    return NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0)


@pytest.fixture
def tiny_model(tiny_spec):
    """The tiny network at keep ratio 0.5, weights and scores regenerated from seed 0."""
    return build_network(tiny_spec, keep_ratio=0.5)


@pytest.fixture
def tiny_batch(tiny_spec):
    """A (4, 1, 28, 28) batch in [0, 1] pixel space and its labels."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, tiny_spec.in_channels, tiny_spec.image_size, tiny_spec.image_size, generator=g)
    y = torch.randint(0, tiny_spec.num_classes, (4,), generator=g)
    return x, y


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def bad_masks_dir() -> Path:
    return BAD_MASKS


# --------------------------------------------------------------------------------------------
# a tiny candidate set shared by the evaluation and R2S tests
# --------------------------------------------------------------------------------------------

TINY_KEEP_RATIOS = (0.2, 0.5, 0.8)


def build_tiny_candidate_set(tmp_path_factory) -> CandidateSet:
    """Three tickets (keep 0.2 / 0.5 / 0.8) over one seeded random network, cached for the session.

    Each is searched for two epochs without an inner attack (62 SGD steps of 64 synthetic images,
    a few seconds): clean accuracy ~0.65-0.8 on the synthetic test images, PGD-10 robust accuracy
    ~0.2-0.35 at eps = 0.02 and ~0 at eps = 0.1.
    """
    from rst.search.loop import preset, run_search
    path = tmp_path_factory.getbasetemp() / "rst_eval_tiny_tickets.rst.safetensors"
    if path.exists():
        return load_tickets(path)
    tickets, spec = [], None
    for r in TINY_KEEP_RATIOS:
        # fp32: the evaluation tests' fixture must not depend on the CPU's bf16 support
        cfg = preset("tiny", keep_ratio=r, epochs=2, selection="last", val_size=64, inner_attack="none",
                     precision="fp32")
        result = run_search(cfg, device="cpu")
        tickets.append(result.ticket)
        spec = result.spec
    save_tickets(path, CandidateSet(spec, tickets))
    return load_tickets(path)


@pytest.fixture(scope="session")
def tiny_cs(tmp_path_factory) -> CandidateSet:
    return build_tiny_candidate_set(tmp_path_factory)


