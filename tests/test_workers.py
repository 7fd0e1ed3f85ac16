"""rst.runtime.workers: independent jobs in spawned worker processes, threads split between them."""
import operator

import pytest

from rst.runtime.workers import run_jobs, threads_per_worker


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_argument_order_and_each_is_reported_once(workers):
    seen = []
    out = run_jobs(operator.mul, [(2, 3), (4, 5), (6, 7)], workers=workers, on_result=lambda i, r: seen.append((i, r)))
    assert out == [6, 20, 42]
    assert sorted(seen) == [(0, 6), (1, 20), (2, 42)]


def test_a_failing_job_raises_in_the_caller():
    with pytest.raises(ZeroDivisionError):
        run_jobs(operator.truediv, [(1, 1), (1, 0)], workers=2)


def test_threads_are_split_between_workers_and_never_below_one():
    assert threads_per_worker(2, threads=2) == 1
    assert threads_per_worker(2, threads=16) == 8
    assert threads_per_worker(4, threads=2) == 1
    with pytest.raises(ValueError):
        run_jobs(operator.mul, [(1, 2)], workers=0)


def test_each_result_is_reported_when_its_job_ends_not_when_all_have():
    import time
    seen = {}
    start = time.monotonic()
    run_jobs(time.sleep, [(0,), (4,)], workers=2, on_result=lambda i, r: seen.setdefault(i, time.monotonic()))
    end = time.monotonic()
    assert set(seen) == {0, 1}
    assert end - seen[0] > 2, (seen[0] - start, end - start)     # the quick job was saved while the slow one ran


def test_workers_keep_freed_memory_for_reuse():
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt only")
    from test_allocator import page_faults_of_reused_blocks
    faults = run_jobs(page_faults_of_reused_blocks, [(), ()], workers=2)   # two jobs: two workers
    assert max(faults) < 5_000, faults             # rst.runtime.allocator.keep_freed_memory in each worker
