"""Benchmark of the app (a script, not a test): ``make bench-app``.

    python bench/app_bench.py                 # the shipped zoo (RST_ZOO_DIR / RST_TEST_SUBSET, else the defaults)
    python bench/app_bench.py --tiny          # a tiny zoo built in a temporary folder (seconds)

1. ``streamlit run app`` is started and every page opened in headless Chromium: server start to the
   first page rendered (goal <= 3 s), then each page's default render after navigation (goal <= 2 s):
   its sidebar link clicked after a few seconds on the first page, and its URL loaded at once (worst case).
2. The R2S live page's default evaluation as the page runs it (``r2s_eval.run_chunks`` in a
   ``jobs.LiveJob``, ``r2s_eval.PAGE_DEFAULTS``, every member of the set the app opens on): time to
   the first numbers (goal <= 3 s) and to the end (goal <= 10 s), in bf16 and in fp32.
3. bf16 vs fp32 on the same images: per-image agreement of every member's verdict under the chosen
   attack and of every ticket alone, and the accuracy difference with its paired 95 % interval.
4. The health endpoint's latency while two browser sessions run the R2S default (goal <= 1 s).
5. The live search page's default (Streamlit's AppTest, Start pressed with every widget at its default):
   seconds to the ticket (goal <= 60 s), the data it trained on and the ticket's validation numbers.

Writes ``bench/app-speed.json`` and ``docs/app-speed.md`` (the tables, the command and the load).
The server / browser helpers are in ``tests/browser.py`` (shared with the browser test).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
sys.path[:0] = [str(APP), str(ROOT / "tests")]     # the app's modules; the browser helpers and the tiny zoo

from browser import CHROMEDRIVER, CHROMIUM, click_page_link, free_port, make_driver, start_server, stop_server, wait_healthy, wait_rendered  # noqa: E402


# --------------------------------------------------------------------------------------------
# the two measurements
# --------------------------------------------------------------------------------------------


PAGES = [("", "RST Explorer"), ("network", "The random network"), ("search", "Search a robust scratch ticket"),
         ("sparsity", "Accuracy vs keep ratio"), ("transfer", "Transferability between tickets"),
         ("r2s", "R2S live"), ("masks", "Mask files")]


READING_S = 3.0     # seconds on the first page before the user clicks on: reading it


def bench_pages(env: dict, by: str = "link") -> dict:
    """Server start -> first page rendered, then every page's render after navigation. ``by="link"``:
    :data:`READING_S` on the first page, then each page's sidebar link clicked, as a user navigates
    (the goal's measure); ``by="url"``: each page's URL loaded at once, a full reload of the front end
    with no pause (the worst case)."""
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
            if by == "link":
                time.sleep(READING_S)
            pages = {}
            for url, title in PAGES[1:] + PAGES[:1]:
                t1 = time.perf_counter()
                if by == "link":
                    click_page_link(driver, url)
                else:
                    driver.get(f"http://127.0.0.1:{port}/{url}")
                wait_rendered(driver, title, settle=0.0)
                pages[url or "home"] = time.perf_counter() - t1
        finally:
            stop_server(proc)
    finally:
        driver.quit()
    return {"server_healthy_s": t_healthy, "first_page_rendered_s": t_first, "page_render_s": pages}


def bench_pages_repeated(env: dict, repeats: int = 3) -> dict:
    """:func:`bench_pages` ``repeats`` times each way (a fresh server and browser each, the two ways
    interleaved): the median of every measure, and all runs."""
    from statistics import median as med
    runs, url_runs = [], []
    for _ in range(repeats):
        runs.append(bench_pages(env, by="link"))
        url_runs.append(bench_pages(env, by="url"))
    every = runs + url_runs
    return {"server_healthy_s": med([r["server_healthy_s"] for r in every]),
            "first_page_rendered_s": med([r["first_page_rendered_s"] for r in every]),
            "page_render_s": {k: med([r["page_render_s"][k] for r in runs]) for k in runs[0]["page_render_s"]},
            "page_by_url_s": {k: med([r["page_render_s"][k] for r in url_runs]) for k in url_runs[0]["page_render_s"]},
            "reading_s": READING_S, "repeats": repeats, "runs": runs, "url_runs": url_runs}


def settle(below: float = 0.3, max_wait: float = 120.0) -> float:
    """Wait until the CPUs are idle (other work keeps fewer than ``below`` cores busy, over a second,
    ``jobs.cores_busy``; the browser runs before this one end a little later), at most ``max_wait``
    s; the 1-minute load average then (which lags, and reads about 1 on this VM's idle CPUs)."""
    import jobs
    end = time.monotonic() + max_wait
    while time.monotonic() < end:
        busy = jobs.cores_busy(1.0)
        if busy is None or busy < below:
            break
    return os.getloadavg()[0]


def bench_health(env: dict, seconds: float = 15.0) -> dict:
    """Health latency (every 0.25 s for ``seconds``) while two browser sessions run the R2S default."""
    import urllib.request
    from selenium.webdriver.common.by import By
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"rst-bench-streamlit-{port}.log"
    drivers = [make_driver(), make_driver()]
    proc = start_server(port, env, log)
    lat = []
    try:
        wait_healthy(port, proc)
        for d in drivers:
            d.get(f"http://127.0.0.1:{port}/r2s")
            wait_rendered(d, "R2S live", settle=0.0)
        for d in drivers:
            d.find_element(By.XPATH, '//button[.//p[normalize-space()="Attack"]]').click()
        time.sleep(1.0)                              # both runs started (one computes, one waits in line)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
                r.read()
            lat.append(time.perf_counter() - t)
            time.sleep(0.25)
    finally:
        for d in drivers:
            d.quit()
        stop_server(proc)
    lat.sort()
    return {"n": len(lat), "median_s": lat[len(lat) // 2], "max_s": lat[-1], "seconds_polled": seconds}


def _in_a_thread_that_ends(fn):
    """``fn()`` in a thread that ends, so that its OpenMP thread pool ends with it. While more OpenMP
    threads exist than CPUs, libgomp shortens every team's spin-wait, and the R2S job's chunks ran
    25-40 % slower (10.3-11.3 s against 7.8-8.3 s) when this process's main thread had loaded the set
    with two threads. The app has no such pool: its main thread runs no torch, and its script threads
    end after each run."""
    import threading
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(value=fn()))
    worker.start()
    worker.join()
    return out["value"]


def kernel_yardstick(act, batch: int = 32, reps: int = 8) -> float:
    """This machine's speed today, in the unit of ``bench/fast_members.py``: the best of ``reps`` steps of
    the expectation attack in bf16 on the folded copies (batch ``batch``, every member, 2 threads). The
    CPUs are shared and vary from day to day; beside that file's own number it says how fast this run's
    machine was."""
    import torch
    from fast_members import step
    from rst.evaluation.r2s import R2S

    def run():
        torch.set_num_threads(os.cpu_count() or 1)
        r2s = R2S(act.cs, keep_member_weights=True)
        spec = act.cs.spec
        x = torch.rand(batch, spec.in_channels, spec.image_size, spec.image_size, generator=torch.Generator().manual_seed(0))
        y = torch.arange(batch) % spec.num_classes
        step(r2s, x, y, fast=True, bf16=True)
        return min(step(r2s, x, y, fast=True, bf16=True)[0] for _ in range(reps))
    return _in_a_thread_that_ends(run)


def bench_r2s(device: str = "cpu", threads: int | None = None) -> dict:
    """The R2S live default in bf16 and fp32: first numbers, completion; and their agreement."""
    import jobs
    import r2s_eval
    import state
    import store
    act = _in_a_thread_that_ends(lambda: state.get_set(f"zoo:{store.zoo_entries()[0]['id']}"))
    cs = act.cs
    d = r2s_eval.PAGE_DEFAULTS
    out, lives = {"kernel_step_s": kernel_yardstick(act)}, {}
    for precision in ("bf16", "fp32"):
        if precision == "bf16" and r2s_eval.default_precision(device) != "bf16":
            continue
        p = dict(members=tuple(range(len(cs))), switch=d["switch"], attack=d["attack"], eps=state.default_eps(act),
                 steps=d["steps"], n_images=d["n_images"], seed=d["seed"], dev=device, source_member=0,
                 compare=d["compare"], precision=precision, threads=threads or "auto")
        cache = {}
        t0 = time.perf_counter()
        job = jobs.LiveJob("bench", p, lambda j: r2s_eval.run_chunks(j, cs, act.key, p, cache)).start()
        job.join()
        if job.error:
            raise RuntimeError(job.error)
        live = job.partial
        lives[precision] = live
        out[precision] = {"first_numbers_s": job.first_partial_s, "complete_s": time.perf_counter() - t0,
                          "rows": [(r["what"], round(100 * r["expected"], 1), round(r["± SE"] or 0, 1))
                                   for r in live.table]}
    out.update(zoo=act.label, network=f"{cs.spec.arch} x{cs.spec.width:g}", members=len(cs), n_images=d["n_images"],
               attack=d["attack"], steps=d["steps"], compare=d["compare"], eps=state.default_eps(act))
    if len(lives) == 2:
        out["agreement"] = agreement(lives["bf16"], lives["fp32"])
    return out


def bench_verdicts(device: str = "cpu") -> dict:
    """The live page's scoring (``member_verdicts``: bf16 on the folded copies, near-ties rechecked in
    fp32) against every verdict in fp32 on the members, on the R2S default's batches of one run: the
    clean images, the expectation attack's and the K single-member attacks' (bf16). Also the largest
    bf16 logit error (what the recheck margin must exceed twice), and both scorings' seconds."""
    import r2s_eval
    import state
    import store
    import torch
    from rst.evaluation.verdicts import FOLD_MARGIN, RECHECK_MARGIN, member_verdicts

    def run():
        torch.set_num_threads(os.cpu_count() or 1)
        act = state.get_set(f"zoo:{store.zoo_entries()[0]['id']}")
        cs, d, eps = act.cs, r2s_eval.PAGE_DEFAULTS, state.default_eps(act)
        x, y = (lambda data: (data.x, data.y))(store.eval_data(cs.spec.dataset, d["n_images"]))
        r2s = r2s_eval.build_r2s({}, cs, act.key, list(range(len(cs))), d["switch"], d["seed"], device)
        batches = [x, r2s_eval._chosen_examples(r2s, d["attack"], x, y, eps, d["steps"], d["seed"], 0, "bf16")]
        batches += r2s_eval._single_member_examples(r2s, x, y, eps, d["steps"], d["seed"], "bf16")
        t = time.perf_counter()
        exact = torch.stack([member_verdicts(r2s, b, y, fast=False) for b in batches])
        t_exact, t = time.perf_counter() - t, time.perf_counter()
        fast = torch.stack([member_verdicts(r2s, b, y) for b in batches])
        t_fast = time.perf_counter() - t
        bare = torch.stack([member_verdicts(r2s, b, y, recheck_margin=0.0) for b in batches])
        err, near = 0.0, 0
        with torch.no_grad():
            for b in batches:
                exact_logits = r2s.member_logits(b)
                with r2s.fast_members(), torch.autocast(b.device.type, dtype=torch.bfloat16):
                    fast_logits = r2s.member_logits(b).float()
                err = max(err, float((fast_logits - exact_logits).abs().max()))
                top2 = fast_logits.topk(2, dim=-1).values
                near += int(((top2[..., 0] - top2[..., 1]) < RECHECK_MARGIN).sum())
        return {"verdicts": int(exact.numel()), "differ": int((fast != exact).sum()),
                "differ_without_recheck": int((bare != exact).sum()), "rechecked": near,
                "recheck_margin": RECHECK_MARGIN, "fold_margin": FOLD_MARGIN, "max_bf16_logit_error": err, "batches": len(batches),
                "n_images": len(y), "fp32_s": t_exact, "fast_s": t_fast}
    return _in_a_thread_that_ends(run)


def agreement(bf, fp) -> list[dict]:
    """bf16 vs fp32 on the same images: per (member, image) verdict agreement, and the paired
    difference of the accuracies (bf16 - fp32) over images, for R2S's chosen attack and each ticket alone."""
    sys.path.insert(0, str(APP))
    from ui import paired
    rows = []
    pairs = [(bf.table[0]["what"], bf.per_image["chosen"], fp.per_image["chosen"])]
    if bf.per_image["paper"] is not None:
        for k, name in enumerate(bf.members):
            pairs.append((f"ticket {name} alone", bf.per_image["paper"][k, k][None], fp.per_image["paper"][k, k][None]))
    for what, a, b in pairs:
        a, b = a.float(), b.float()
        d = paired(a.mean(0), b.mean(0))
        rows.append({"what": what, "verdicts": int(a.numel()), "agree": float((a == b).float().mean()),
                     "bf16": float(a.mean()), "fp32": float(b.mean()), "difference": d["difference"],
                     "ci_low": d["ci_low"], "ci_high": d["ci_high"], "n_images": d["n_images"]})
    return rows


def bench_search(timeout: float = 300.0) -> dict:
    """The search page's default run as a user starts it (AppTest: open the page, press Start)."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(APP / "explorer.py"), default_timeout=120).run()
    at.switch_page("views/search.py").run()
    t0 = time.perf_counter()
    at.button(key="se_start").click().run()
    job = at.session_state["search_job"]
    job.join(timeout=timeout)
    seconds = time.perf_counter() - t0
    out = {"seconds": seconds, "finished": not job.running, "error": job.error, "data": job.data_label}
    if job.result is not None:
        cfg = job.cfg
        out.update(network=f"{cfg.arch} x{cfg.width}", epochs=cfg.epochs, keep_ratio=cfg.keep_ratio,
                   n_val=len(job.data.y_val),
                   metrics={k: v.get("value") if isinstance(v, dict) else v
                            for k, v in job.result.ticket.metrics.items()})
    else:
        job.stop()
    return out


def _kernel_sections() -> list[str]:
    """The two measurements behind how R2S live computes its members (their own JSON files)."""
    lines = []
    fast = ROOT / "bench" / "fast-members.json"
    if fast.is_file():
        f = json.loads(fast.read_text())
        b = f["best_s"]
        lines += ["", "### The members' folded copies", "",
                  "An attack only needs the members' function, not their last bit. Inside `R2S.fast_members()` each "
                  "member runs as a plain copy of itself with its masks folded into the weights, each BatchNorm folded "
                  "into the convolution before it, the channels a sparse ticket leaves dead cut out "
                  "(`rst.network.compact`: keep0.01 keeps 2 of the first convolution's 48) and the convolutions in "
                  "channels-last layout (`rst.network.folded.folded_copy`). One step of an attack on the expectation (6 members' logits "
                  f"and the input gradient, batch {f['batch']}, best of {f['repetitions']} interleaved repetitions, "
                  f"{f['threads']} threads, load {f['load_1min']:.1f}):", "",
                  "| precision | members (s) | folded copies (s) | members / folded |", "|---|---:|---:|---:|",
                  f"| bf16 autocast | {b['members_bf16']:.4f} | {b['folded_bf16']:.4f} | {f['members_over_folded_bf16']:.2f}× |",
                  f"| fp32 | {b['members_fp32']:.4f} | {b['folded_fp32']:.4f} | {f['members_over_folded_fp32']:.2f}× |", "",
                  f"In fp32 the copies' logits are within {f['max_abs_logit_difference_fp32']:.1e} of the members', "
                  f"their input gradients within {f['relative_gradient_difference_fp32']:.1e} (relative), with "
                  f"{100 * f['gradient_sign_agreement_fp32']:.2f} % of the gradient's signs (what a PGD step uses) equal. "
                  "Verdicts are the members' own in fp32 (see below).", "",
                  "```text", "OMP_NUM_THREADS=2 .venv/bin/python bench/fast_members.py      # bench/fast-members.json",
                  "```"]
    batched = ROOT / "bench" / "batched-members.json"
    if batched.is_file():
        v = json.loads(batched.read_text())
        lines += ["", "### All members in one batched pass?", "",
                  "`torch.func.vmap` over the members' stacked masked weights and BN statistics computes every "
                  "member's logits in one pass (the convolutions become one grouped convolution), with the same "
                  f"logits to the last bit. On this CPU it does not pay: at batch {v['batch']}, forward + backward, "
                  f"best of {v['repetitions']} interleaved repetitions, {v['threads']} threads, the vmapped pass takes "
                  f"{v['vmap_over_loop']:.2f}× the member-by-member time ({v['vmap_best_s']:.2f} s against "
                  f"{v['loop_best_s']:.2f} s, machine load {v['load_1min']:.1f}), so R2S keeps the loop.", "",
                  "```text", "OMP_NUM_THREADS=2 .venv/bin/python bench/batched_members.py      # bench/batched-members.json",
                  "```"]
    return lines


def agreement_table(rows: list[dict]) -> list[str]:
    """The bf16 against fp32 table (:func:`agreement`'s rows): docs/app-speed.md and the README."""
    lines = ["| attack | verdicts | agree | bf16 (%) | fp32 (%) | bf16 − fp32 (points) | paired 95 % |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for a in rows:
        lines.append(f"| {a['what']} | {a['verdicts']} | {100 * a['agree']:.1f} % | {100 * a['bf16']:.1f} | "
                     f"{100 * a['fp32']:.1f} | {100 * a['difference']:+.1f} | "
                     f"[{100 * a['ci_low']:+.1f}, {100 * a['ci_high']:+.1f}] |")
    return lines


def markdown(res: dict, command: str, load: dict) -> str:
    """docs/app-speed.md: the measured tables, with the command and the load."""
    lines = ["# How fast the app answers", "",
             "Measured with `" + command + "` on this machine's CPU "
             f"({os.cpu_count()} cores; torch threads {res['threads']}); load average "
             f"{load['before']:.2f} before and {load['after']:.2f} after the run (1-minute). "
             "Goals are for an idle machine: numbers taken under load are slower than what an idle one gives.", "",
             "How the live pages answer: R2S live, the Sparsity and the Transfer pages compute in a background job of "
             "the browser session, so the page and the other pages stay usable. A progress bar shows how far it "
             "is; **Stop** ends it within one forward pass and keeps what was done. R2S live attacks 16 images, shows "
             "their numbers, then refines them 32 images at a time; each member is built once per "
             "session. When two cores are free, the chosen attack and the single-ticket attacks run at once on "
             "one thread each, and so do the two halves of the scoring. Its attacks run under bf16 autocast where the CPU has native bf16 (the page says "
             "\"attacks in bf16\"; **Attack precision: fp32** is one click away); the verdicts are always the "
             "members' own in fp32 (scored in bf16, every near-tie again in fp32). All sessions share one queue of CPU work: a second user's run waits in line (the page shows "
             "its position) and the two alternate chunk by chunk, so two runs never oversubscribe the cores. "
             "Starting a computation on another page stops the session's running one; a second start on the same "
             "page is refused until Stop. Every accuracy shows ± one binomial standard error, and R2S against each "
             "ticket alone its paired 95 % interval on the same images.", ""]
    if "pages" in res:
        p = res["pages"]
        runs = p.get("runs") or [p]
        url_runs = p.get("url_runs") or []
        def spread(get, among=None) -> str:
            v = [get(r) for r in (among if among is not None else runs)]
            return f"{min(v):.2f}–{max(v):.2f}" if len(v) > 1 else ""
        by_url = p.get("page_by_url_s") or {}
        lines += ["## Start-up and pages", "",
                  f"A fresh server and browser each time, {len(runs)} times each way; the median and the range. "
                  "The first page needs neither torch nor `rst`: the server starts importing them (and loads the "
                  "default set) when it starts (`app/streamlit_app.py`), so the page opened next finds them ready. "
                  "Nor does it show a chart, a table or a number input; once it is drawn it asks the browser to load "
                  "that code while the page is read (`app/preload.py`: Plotly's script alone is 4.7 MB, about a "
                  "second on this CPU, which the first page with a chart paid before).", "",
                  f"*After a click* is how a user navigates: {p.get('reading_s', READING_S):g} s on the first page, "
                  "then each page's link in the sidebar clicked (the goal's measure). *URL at once* loads each "
                  "page's address right after the first page is drawn: a full reload of the front end, with no "
                  "time to read (the worst case).", "",
                  "| what | seconds (median) | range | URL at once (median) | range | goal |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| server start → healthy | {p['server_healthy_s']:.2f} | "
                  f"{spread(lambda r: r['server_healthy_s'], runs + url_runs)} | | | |",
                  f"| server start → first page rendered | {p['first_page_rendered_s']:.2f} | "
                  f"{spread(lambda r: r['first_page_rendered_s'], runs + url_runs)} | | | ≤ 3 |"]
        lines += [f"| {name} page, after a click | {t:.2f} | {spread(lambda r, n=name: r['page_render_s'][n])} | "
                  + (f"{by_url[name]:.2f} | {spread(lambda r, n=name: r['page_render_s'][n], url_runs)}" if name in by_url
                     else " | ") + " | ≤ 2 |"
                  for name, t in p["page_render_s"].items()]
        lines.append("")
    r = res["r2s"]
    lines += ["## R2S live, page defaults", "",
              f"{r['zoo']} ({r['network']}), all {r['members']} members, {r['n_images']} test images, "
              f"{r['attack']} PGD-{r['steps']}, ε = {r['eps']:g}, with the paper's protocol and every ticket alone "
              "beside it (the page's default), run as the page runs it (a background job: 16 images, then chunks of 32)"
              + (f"; 1-minute load {load['before_r2s']:.2f} when it started" if "before_r2s" in load else "") + ". "
              "In bf16 the attacks run on the members' BN-folded channels-last copies (see below); in fp32 on the "
              "members themselves.", ""]
    fast_json = ROOT / "bench" / "fast-members.json"
    if "kernel_step_s" in r and fast_json.is_file():
        ref = json.loads(fast_json.read_text())["best_s"]["folded_bf16"]
        lines += [f"How fast this machine was: one step of the expectation attack in bf16 on the folded copies "
                  f"(batch 32, best of 8) took {r['kernel_step_s']:.4f} s in this run, against "
                  f"{ref:.4f} s in `bench/fast_members.py`'s own run below: the shared CPUs vary from day to "
                  f"day, and the R2S times scale with this step.", ""]
    lines += ["| attack precision | first numbers (s) | complete (s) | goal |", "|---|---:|---:|---|"]
    for prec in ("bf16", "fp32"):
        if prec in r:
            lines.append(f"| {prec} | {r[prec]['first_numbers_s']:.2f} | {r[prec]['complete_s']:.2f} | ≤ 3 / ≤ 10 |")
    if "agreement" in r:
        lines += ["", "### bf16 against fp32, same images", "",
                  "Every member's verdict on every image (right / wrong after the attack), the bf16 attack (autocast, "
                  "on the folded copies) vs the fp32 attack (on the members), both scored as the members' fp32 forwards say; the difference is bf16 − fp32 in points with its paired 95 % interval "
                  "over the images.", "",
                  *agreement_table(r["agreement"])]
    if "verdicts" in res:
        v = res["verdicts"]
        lines += ["", "### Scoring: bf16, near-ties in fp32", "",
                  "A verdict (right / wrong) only changes where the two largest logits swap. With bf16 attacks the "
                  "page scores every batch in bf16 on the folded copies and scores again in fp32 every verdict whose "
                  f"bf16 top-two margin is below {v['recheck_margin']:g}: on the folded copy, and on the member itself "
                  f"where the fp32 margin is below {v['fold_margin']:g} (folding moves a logit by about 1e-6) "
                  "(`rst.evaluation.verdicts.member_verdicts`). On the R2S default's "
                  f"{v['batches']} batches of {v['n_images']} images (clean, the expectation attack's, each single "
                  f"ticket's), {v['verdicts']} verdicts:", "",
                  "| | value |", "|---|---:|",
                  f"| verdicts that differ from fp32 on the members | {v['differ']} |",
                  f"| the same without the fp32 recheck | {v['differ_without_recheck']} |",
                  f"| verdicts rechecked in fp32 | {v['rechecked']} ({100 * v['rechecked'] / v['verdicts']:.1f} %) |",
                  f"| largest bf16 logit error | {v['max_bf16_logit_error']:.3f} |",
                  f"| scoring in fp32 on the members (s) | {v['fp32_s']:.2f} |",
                  f"| scoring in bf16 with the recheck (s) | {v['fast_s']:.2f} |"]
    lines += _kernel_sections()
    if "search" in res:
        s = res["search"]
        what = (f"{s.get('network', '?')}, keep_ratio {s.get('keep_ratio', '?')}, {s.get('epochs', '?')} epochs, on "
                f"{s['data']}") if s.get("data") else "?"
        lines += ["", "## Live search, page defaults", "",
                  f"Start pressed with the page's defaults ({what}): the ticket after **{s['seconds']:.1f} s** "
                  f"(goal ≤ 60 s)" + (f"; it failed: {s['error']}" if s.get("error") else "") + "."]
        if s.get("metrics"):
            from ui import pct_se
            lines.append(f"Its validation numbers ({s.get('n_val')} images, ± one binomial SE): " + ", ".join(
                f"{k} {pct_se(v, s.get('n_val'))}" for k, v in s["metrics"].items()
                if isinstance(v, float) and 0 <= v <= 1) + ".")
    if "health" in res:
        h = res["health"]
        lines += ["", "## Several users", "",
                  f"Health endpoint (`/_stcore/health`) polled {h['n']} times over {h['seconds_polled']:.0f} s while "
                  f"two browser sessions ran the R2S default (one computes, the other waits in the shared queue): "
                  f"median {h['median_s'] * 1000:.0f} ms, max {h['max_s'] * 1000:.0f} ms (goal ≤ 1 s)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="benchmark on a tiny zoo built in a temporary folder")
    p.add_argument("--skip-browser", action="store_true", help="no Chromium: only the R2S timings")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for the R2S timing (default: as the app chooses, jobs.torch_threads)")
    p.add_argument("--skip-search", action="store_true", help="no live search timing")
    p.add_argument("--no-write", action="store_true", help="print only (no bench/app-speed.json, docs/app-speed.md)")
    args = p.parse_args(argv)
    if args.tiny:
        from tiny_zoo import build_tiny_zoo
        out = build_tiny_zoo(tempfile.mkdtemp(prefix="rst-bench-zoo-"), with_reports=False)
        os.environ["RST_ZOO_DIR"], os.environ["RST_TEST_SUBSET"] = str(out["zoo_dir"]), str(out["subset"])
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    load = {"before": os.getloadavg()[0]}
    res = {"threads": args.threads or "as the app chooses them per chunk (jobs.torch_threads, from what the CPUs do now)", "cpu_count": os.cpu_count(),
           "zoo_dir": os.environ.get("RST_ZOO_DIR") or str(ROOT / "pretrained_masks")}
    have_browser = CHROMIUM.exists() and Path(CHROMEDRIVER).exists() and not args.skip_browser
    if have_browser:
        res["pages"] = bench_pages_repeated(dict(os.environ))
        print("pages:", json.dumps({k: v for k, v in res["pages"].items() if k != "runs"}))
    load["before_r2s"] = settle()
    res["r2s"] = bench_r2s(threads=args.threads)
    print("r2s:", json.dumps({k: v for k, v in res["r2s"].items() if k != "agreement"}))
    for a in res["r2s"].get("agreement", []):
        print("   ", json.dumps(a))
    res["verdicts"] = bench_verdicts()
    print("verdicts:", json.dumps(res["verdicts"]))
    if have_browser:
        res["health"] = bench_health(dict(os.environ))
        print("health:", json.dumps(res["health"]))
    if not args.skip_search:
        res["search"] = bench_search()
        print("search:", json.dumps(res["search"]))
    load["after"] = os.getloadavg()[0]
    res["load_average"] = load
    command = "python bench/app_bench.py" + "".join(
        flag for flag, on in ((" --tiny", args.tiny), (" --skip-browser", args.skip_browser),
                              (f" --threads {args.threads}", bool(args.threads)), (" --skip-search", args.skip_search))
        if on)
    if not args.no_write and not args.tiny:
        (ROOT / "bench" / "app-speed.json").write_text(json.dumps(res, indent=1) + "\n")
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "app-speed.md").write_text(markdown(res, command, load))
    print(markdown(res, command, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
