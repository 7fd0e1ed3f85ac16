"""Benchmark of the app (a script, not a test): start-up time and the R2S live evaluation.

    python bench/app_bench.py                 # the shipped zoo (RST_ZOO_DIR / RST_TEST_SUBSET, else the defaults)
    python bench/app_bench.py --tiny          # a tiny zoo built in a temporary folder (seconds)

1. ``streamlit run app/main.py`` is started and the home page opened in headless Chromium: the time
   from starting the server to the first page rendered (goal < 5 s). The browser is started first,
   so its own start-up is not counted.
2. The R2S live page's default evaluation, through ``r2s_eval.r2s_live`` (the function the page
   calls) with ``r2s_eval.PAGE_DEFAULTS`` (the page's own defaults: 128 test images, expectation
   PGD-10, every member of the set the app opens on, the paper's protocol and every ticket alone
   beside it, the gallery), on the CPU: goal < 10 s. Also the chosen attack alone.

The server / browser helpers are in ``tests/browser.py`` (shared with the browser test).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
sys.path[:0] = [str(APP), str(ROOT / "tests")]     # the app's modules; the browser helpers and the tiny zoo

from browser import CHROMEDRIVER, CHROMIUM, free_port, make_driver, start_server, stop_server, wait_healthy, wait_rendered  # noqa: E402


# --------------------------------------------------------------------------------------------
# the two measurements
# --------------------------------------------------------------------------------------------


def bench_startup(env: dict) -> dict:
    driver = make_driver()
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"rst-bench-streamlit-{port}.log"
    try:
        t0 = time.perf_counter()
        proc = start_server(port, env, log)
        try:
            wait_healthy(port, proc)
            t_healthy = time.perf_counter() - t0
            driver.get(f"http://127.0.0.1:{port}/")
            wait_rendered(driver, "RST Explorer", settle=0.0)
            t_first = time.perf_counter() - t0
            t1 = time.perf_counter()
            driver.get(f"http://127.0.0.1:{port}/sparsity")
            wait_rendered(driver, "Accuracy vs keep ratio", settle=0.0)
            t_sparsity = time.perf_counter() - t1
        finally:
            stop_server(proc)
    finally:
        driver.quit()
    return {"server_healthy_s": t_healthy, "first_page_rendered_s": t_first, "sparsity_page_s": t_sparsity}


def bench_r2s(device: str = "cpu", repeat: int = 1) -> dict:
    """The R2S live page's default evaluation (``r2s_eval.PAGE_DEFAULTS``, every member of the set the app
    opens on, its default eps), as the page calls it; and the chosen attack alone (comparison unticked)."""
    import r2s_eval
    import state
    import store
    # the app's functions run here outside a Streamlit server: its caches would say so at every call
    logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
    act = state.get_set(f"zoo:{store.zoo_entries()[0]['id']}")
    cs = act.cs
    d = r2s_eval.PAGE_DEFAULTS
    members = tuple(range(len(cs)))
    times = {True: [], False: []}
    cpu = {True: [], False: []}            # CPU seconds of this process: with 1 thread, the wall time when idle
    for r in range(repeat):
        for compare in (d["compare"], not d["compare"]):
            t0, c0 = time.perf_counter(), time.process_time()
            live = r2s_eval.r2s_live(f"{act.key}#{r}", cs, members, d["switch"], d["attack"], state.default_eps(act),
                                     d["steps"], d["n_images"], d["seed"], device, compare=compare, quiet=True)
            times[compare].append(time.perf_counter() - t0)
            cpu[compare].append(time.process_time() - c0)
            if compare == d["compare"]:
                rows = [(row["what"], round(100 * row["expected"], 1)) for row in live.table]
    return {"page_default_s": times[d["compare"]], "other_s": times[not d["compare"]],
            "page_default_cpu_s": cpu[d["compare"]], "other_cpu_s": cpu[not d["compare"]], "members": len(members),
            "n_images": live.n_images, "steps": d["steps"], "attack": d["attack"], "compare": d["compare"],
            "zoo": act.label, "network": f"{cs.spec.arch} x{cs.spec.width:g}", "rows": rows}


def main(argv: list[str] | None = None) -> int:
    # the service functions run here outside a Streamlit server: its caches say so once per call
    logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="benchmark on a tiny zoo built in a temporary folder")
    p.add_argument("--bench-zoo", action="store_true",
                   help="a zoo with the real one's network (fmnist_conv4, width 1) and 5 members, built in seconds "
                        "in a temporary folder (tickets of no quality: for timing only)")
    p.add_argument("--skip-browser", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the R2S timing (default: torch's)")
    p.add_argument("--repeat", type=int, default=1, help="time the R2S evaluation this many times (the median)")
    args = p.parse_args(argv)
    if args.tiny or args.bench_zoo:
        from tiny_zoo import build_tiny_zoo
        kwargs = dict(width=1.0, keep_ratios=(0.05, 0.1, 0.2, 0.3, 0.5), n_test=1000) if args.bench_zoo else {}
        out = build_tiny_zoo(tempfile.mkdtemp(prefix="rst-bench-zoo-"), with_reports=False, **kwargs)
        os.environ["RST_ZOO_DIR"], os.environ["RST_TEST_SUBSET"] = str(out["zoo_dir"]), str(out["subset"])
    import torch
    print(f"zoo: {os.environ.get('RST_ZOO_DIR') or ROOT / 'pretrained_masks'} · torch threads {torch.get_num_threads()}"
          f" · load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if not args.skip_browser:
        if not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists():
            print("start-up: skipped (needs /usr/bin/chromium and chromedriver)")
        else:
            s = bench_startup(dict(os.environ))
            print(f"start-up: server healthy {s['server_healthy_s']:.2f} s, first page rendered "
                  f"{s['first_page_rendered_s']:.2f} s (goal < 5 s); then the Sparsity page {s['sparsity_page_s']:.2f} s")
    if args.threads:
        torch.set_num_threads(args.threads)
    r = bench_r2s(repeat=args.repeat)
    med = lambda v: sorted(v)[len(v) // 2]       # noqa: E731
    print(f"R2S live page default: {r['n_images']} images, {r['attack']} PGD-{r['steps']}, all {r['members']} members "
          f"of {r['zoo']} ({r['network']}), CPU ({torch.get_num_threads()} threads), with the paper's protocol and "
          f"every ticket alone beside it: {med(r['page_default_s']):.2f} s wall, {med(r['page_default_cpu_s']):.2f} s CPU "
          f"(median of {len(r['page_default_s'])}; goal < 10 s); the chosen attack alone (comparison unticked): "
          f"{med(r['other_s']):.2f} s wall, {med(r['other_cpu_s']):.2f} s CPU; load average now {os.getloadavg()[0]:.1f}")
    for what, acc in r["rows"]:
        print(f"    {what:28s} {acc:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
