"""The long fuzz campaign (``make fuzz``): N seeded mutants of the valid files, each loaded under limits.

    OMP_NUM_THREADS=1 .venv/bin/python tests/fuzz_campaign.py --cases 100000 --seed 36 --workers 2

Case ``i`` of seed ``S`` is ``tests.fuzz_masks.mutant(random.Random(f"{S}:{i}"))``: any case can be
rebuilt from the printed seed and its index (``--replay I`` writes it out). Every case must load,
load with the named warning, or be refused in one line, within 5 CPU seconds and 1 GiB of new
address space. Prints (and writes to ``--out``) a summary: cases tried, outcomes by class, the
slowest case, the workers' peak memory; failing mutants are kept in ``--failures`` for minimising.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_masks as fm  # noqa: E402


def worker(seed: int, start: int, stop: int, step: int, failures: Path) -> None:
    """Run cases ``range(start, stop, step)``; one JSON line per case on stdout."""
    seeds = fm.seed_bytes()
    for name, (_, kind) in fm.SEEDS.items():           # warm up: lazy imports, allocator pools
        fm.run_case(seeds[name], kind)
    for i in range(start, stop, step):
        name, mutators, data = fm.mutant(random.Random(f"{seed}:{i}"), seeds)
        rec = fm.run_case(data, fm.SEEDS[name][1])
        rec.update(case=i, seed_file=name, mutators=mutators, bytes=len(data),
                   maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        if rec["outcome"] not in fm.OK:
            failures.mkdir(parents=True, exist_ok=True)
            (failures / f"case{i}.safetensors").write_bytes(data)
        print(json.dumps({k: rec[k] for k in rec if k != "message"} | {"message": rec["message"][:200]}), flush=True)


def summarise(records: list[dict], seed: int, seconds: float) -> dict:
    outcomes = collections.Counter(r["outcome"] for r in records)
    classes = collections.Counter(r.get("class", "-") for r in records if r["outcome"] == "refused")
    slowest = max(records, key=lambda r: r["cpu_seconds"])
    return {"seed": seed, "cases": len(records), "wall_seconds": round(seconds, 1),
            "outcomes": dict(outcomes.most_common()), "refusals_by_class": dict(classes.most_common()),
            "by_mutator": dict(collections.Counter(r["mutators"].split("+")[0] for r in records).most_common()),
            "failures": [{k: r[k] for k in ("case", "seed_file", "mutators", "outcome", "message")}
                         for r in records if r["outcome"] not in fm.OK][:50],
            "slowest": {k: slowest[k] for k in ("case", "seed_file", "mutators", "outcome", "cpu_seconds", "seconds")},
            "peak_memory_mib": round(max(r["maxrss_kib"] for r in records) / 1024, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/fuzz/summary.json")
    p.add_argument("--failures", default="runs/fuzz/failures")
    p.add_argument("--replay", type=int, help="write case I of --seed to --failures and load it once")
    p.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
    if a.worker:
        worker(seed, *a.worker, Path(a.failures))
        return 0
    if a.replay is not None:
        name, mutators, data = fm.mutant(random.Random(f"{seed}:{a.replay}"), fm.seed_bytes())
        path = Path(a.failures) / f"case{a.replay}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(path, name, mutators, json.dumps(fm.run_case(data, fm.SEEDS[name][1])))
        return 0
    print(f"fuzz campaign: {a.cases} cases, seed {seed}, {a.workers} workers", flush=True)
    t = time.perf_counter()
    logs = [Path(a.out).with_name(f"worker{w}.jsonl") for w in range(a.workers)]   # files, not pipes: none blocks
    logs[0].parent.mkdir(parents=True, exist_ok=True)
    procs = []
    for w, log in enumerate(logs):
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, __file__, "--seed", str(seed), "--failures", a.failures,
                                           "--worker", str(w), str(a.cases), str(a.workers)], stdout=f,
                                          env={**os.environ, "OMP_NUM_THREADS": "1"}))
    codes = [proc.wait() for proc in procs]
    records = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    if any(codes) or len(records) != a.cases:
        print(f"a worker died: {len(records)} of {a.cases} cases reported", file=sys.stderr)
        return 1
    summary = summarise(records, seed, time.perf_counter() - t)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    bad = sum(v for k, v in summary["outcomes"].items() if k not in fm.OK)
    print(f"{summary['cases']} cases, seed {seed}: {bad} crashes, hangs or over-limit cases; "
          f"slowest {summary['slowest']['cpu_seconds']:.2f} CPU s (case {summary['slowest']['case']}); "
          f"peak memory {summary['peak_memory_mib']} MiB per worker")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
