"""Property-based fuzzing of the mask and weights file readers (Hypothesis).

Every mutant of a valid file (``tests/fuzz_masks.py``: header JSON, tensor table, payload bytes, raw
bytes; digests mostly recomputed) loads, loads with the named ``MaskFileWarning``, or is refused with
a one-line ``MaskFileError``, within 5 CPU seconds and 1 GiB of new address space. The default run
tries ``RST_FUZZ_EXAMPLES`` (300) derandomised examples in a few seconds; ``make fuzz`` runs the
long campaign (``tests/fuzz_campaign.py``).
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_masks as fm  # noqa: E402

SEEDS = fm.seed_bytes()
EXAMPLES = int(os.environ.get("RST_FUZZ_EXAMPLES", "300"))


@pytest.fixture(scope="module", autouse=True)
def _warm():
    """Lazy imports and allocator pools before the limits apply (as the corpus test's workers do)."""
    for name, (_, kind) in fm.SEEDS.items():
        assert fm.run_case(SEEDS[name], kind)["outcome"] == "loaded", name


def test_every_seed_file_loads_and_the_limits_are_real():
    from rst.network.masks import load_tickets
    assert {fm.run_case(SEEDS[n], k)["outcome"] for n, (_, k) in fm.SEEDS.items()} == {"loaded"}
    assert fm.run_case(b"", "mask")["outcome"] == "refused"
    original = fm.load_case
    try:                                     # a case over the limits is reported as such, not as a pass
        over = fm.MEMORY + fm.free_heap_bytes() + 2**28   # freed heap is reused without new address space
        fm.load_case = lambda data, kind: bytearray(over)
        assert fm.run_case(b"", "mask")["outcome"] == "memory"
        fm.load_case = lambda data, kind: [load_tickets(SEEDS["good"]) for _ in range(10**6)]
        assert fm.run_case(b"", "mask", seconds=0.5)["outcome"] == "timeout"
    finally:
        fm.load_case = original


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(rng=st.randoms(use_true_random=False))
def test_every_mutant_loads_or_is_refused_in_one_line_within_the_limits(rng: random.Random):
    seed, mutators, data = fm.mutant(rng, SEEDS)
    rec = fm.run_case(data, fm.SEEDS[seed][1])
    assert rec["outcome"] in fm.OK, (seed, mutators, rec)


def test_mutants_reach_the_checks_behind_the_digests():
    """The fuzzer is not stopped at the door: resealed mutants are refused for their contents too."""
    classes = set()
    for i in range(400):
        seed, _, data = fm.mutant(random.Random(f"reach:{i}"), SEEDS)
        classes.add(fm.run_case(data, fm.SEEDS[seed][1]).get("class"))
    assert {"dtype", "shape", "offsets", "truncated", "tickets", "BatchNorm statistics"} <= classes, classes


WEIGHTS_CORPUS = Path(__file__).resolve().parent / "bad_masks" / "weights"


def test_the_fuzzers_minimised_weights_files_are_refused_in_one_line():
    """Regressions the campaign found (``tests/bad_masks/weights/expected.json`` says which cases)."""
    import json
    expected = json.loads((WEIGHTS_CORPUS / "expected.json").read_text())
    assert fm.run_case((WEIGHTS_CORPUS / "good.weights.safetensors").read_bytes(), "weights")["outcome"] == "loaded"
    for name, want in expected.items():
        rec = fm.run_case((WEIGHTS_CORPUS / name).read_bytes(), "weights")
        assert rec["outcome"] == "refused" and want["keyword"] in rec["message"], (name, rec)
