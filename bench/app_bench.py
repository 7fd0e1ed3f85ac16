"""Benchmark of the app (a script, not a test): start-up time and the R2S live evaluation.

    python bench/app_bench.py                 # the shipped zoo (RST_ZOO_DIR / RST_TEST_SUBSET, else the defaults)
    python bench/app_bench.py --tiny          # a tiny zoo built in a temporary folder (seconds)

1. ``streamlit run app/main.py`` is started and the home page opened in headless Chromium: the time
   from starting the server to the first page rendered (goal < 5 s). The browser is started first,
   so its own start-up is not counted.
2. The R2S live evaluation of 128 test images, PGD-10, 5 members (all members when the set has
   fewer), on the CPU, through ``r2s_eval.r2s_live`` — the function the R2S live page calls — with
   the page's default attack (exact expectation PGD, plus the paper's protocol it always shows,
   plus the gallery): goal < 10 s.

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


def bench_r2s(n_images: int = 128, steps: int = 10, members: int = 5, device: str = "cpu") -> dict:
    import r2s_eval
    import state
    import store
    act = state.get_set(f"zoo:{store.zoo_entries()[0]['id']}")
    cs = act.cs
    k = min(members, len(cs))
    eps = float(store.zoo_entries()[0].get("eps") or 0.1)
    times = {}
    for compare in (False, True):
        t0 = time.perf_counter()
        live = r2s_eval.r2s_live(act.key, cs, tuple(range(k)), "batch", "protocol:expectation", eps, steps, n_images,
                                 0, device, compare=compare, quiet=True)
        times[compare] = time.perf_counter() - t0
    return {"attack_only_s": times[False], "with_comparison_s": times[True], "members": k,
            "n_images": live.n_images, "zoo": act.label,
            "network": f"{cs.spec.arch} x{cs.spec.width:g}", "rows": [(r["what"], round(100 * r["expected"], 1))
                                                                  for r in live.table]}


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
    r = bench_r2s()
    print(f"R2S live: {r['n_images']} images, PGD-10, {r['members']} members of {r['zoo']} ({r['network']}), CPU "
          f"({torch.get_num_threads()} threads): expectation attack {r['attack_only_s']:.2f} s (goal < 10 s); "
          f"with the paper's protocol + every ticket alone beside it (the page's default) {r['with_comparison_s']:.2f} s")
    for what, acc in r["rows"]:
        print(f"    {what:28s} {acc:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
