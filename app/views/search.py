"""Search: run ``rst.search.loop.run_search`` live (progress, curves, stop) or load tickets from the zoo."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import jobs
import state
import store
import ui
from rst.network.masks import CandidateSet, SUFFIX, MaskFileError
from rst.search.loop import PRESETS, preset

K_LIVE = "search_live_job"     # id of the job the live panel is following (to rerun the page when it ends)

st.title("Search a robust scratch ticket")

# ---------------------------------------------------------------- the zoo
entries = store.zoo_entries()
with st.expander(f"Load tickets from the zoo ({len(entries)} candidate set(s) in `{store.zoo_dir()}`)",
                 expanded=not entries):
    if not entries:
        st.markdown(f"No zoo yet. Build it with `{store.ZOO_BUILD_CMD}` (minutes on a GPU), or search a "
                    "ticket below (seconds with the `tiny` preset).")
    for z in entries:
        c1, c2 = st.columns([4, 1])
        c1.markdown(f"**{z.get('title') or z['id']}** — {z.get('arch', '?')} on {z.get('dataset', '?')}, "
                    f"ε = {z.get('eps')}, keep ratios {', '.join(str(t['keep_ratio']) for t in z.get('tickets', []))}")
        c2.button("Use", key=f"use_zoo_{z['id']}", on_click=state.set_active, args=(f"zoo:{z['id']}",),
                  disabled=st.session_state.get(state.K_ACTIVE) == f"zoo:{z['id']}")

try:
    act = state.active_set()
except MaskFileError as e:
    st.error(f"The active candidate set cannot be loaded: {e}")
    act = None
job = st.session_state.get(state.K_JOB)
running = job is not None and job.running

# ---------------------------------------------------------------- the form
st.subheader("Live search")
names = list(PRESETS)
DATA_LABELS = {"train_subset": "shipped training subset (training images)", "train": "training split on disk",
               "synthetic": "synthetic", "subset": "shipped TEST subset (not held out)"}
sources = (["train_subset"] if store.train_subset_dataset() else []) + ["train", "synthetic"] \
    + (["subset"] if store.subset_available() else [])
# the default: training images of the active set's data set (synthetic sets: synthetic data)
default_source = ("synthetic" if act is not None and act.cs.spec.dataset == "synthetic" else
                  "train_subset" if "train_subset" in sources else "synthetic")
source = st.radio("Data the search trains and validates on", sources, index=sources.index(default_source),
                  horizontal=True, key="se_data", format_func=DATA_LABELS.get,
                  help="The training subset: 6,000 images of the training split, shipped. Test numbers on the "
                       "other pages come from the test subset, which a search should never see.")
if source == "subset":
    st.warning("**Test images.** A search on the test subset trains and selects on the images every other page "
               "tests on: its ticket is marked “searched on TEST images” on every page, and its numbers there are "
               "not held out. Use the training subset for a real search.", icon=":material/warning:")
with st.form("search_form"):
    c1, c2 = st.columns(2)
    preset_name = c1.selectbox("Preset", names, index=names.index("tiny"), key="se_preset",
                               help="`tiny` runs in seconds on a CPU; the paper presets take hours on a GPU.")
    net_opts = ["active", "preset"] if act is not None else ["preset"]
    net_choice = c2.radio("Network", net_opts, horizontal=True, key="se_network",
                          format_func={"active": "the active set's (ticket can join it)",
                                       "preset": "the preset's"}.get)
    c1, c2, c3, c4, c5, c6 = st.columns(6)
    keep_ratio = c1.number_input("Keep ratio", 0.01, 1.0, 0.5, 0.05, key="se_keep", help="fraction of weights kept per layer")
    epochs = c2.number_input("Epochs", 1, 200, 2, 1, key="se_epochs")
    eps = c3.number_input("ε (pixels in [0, 1])", 0.0, 1.0, float(PRESETS["tiny"].eps), 0.01, format="%.4f", key="se_eps")
    steps = c4.number_input("PGD steps (inner attack)", 1, 50, int(PRESETS["tiny"].steps), 1, key="se_steps")
    n_train = c5.number_input("Training images", 64, 60000, 512, 64, key="se_train")
    seed = c6.number_input("Seed of the search", 0, 2**31 - 1, 0, 1, key="se_seed",
                           help="With 'the preset's network' this is also the network's seed.")
    submitted = st.form_submit_button("Start search", type="primary", key="se_start", icon=":material/play_arrow:",
                                      help="One search per session: a second start while one runs is refused.")

K_DATA = "search_data_record"     # (job id, what it searches on): the ticket records it

if submitted and running:
    st.warning("A search is already running: stop it (or wait for it) before starting another.")
elif submitted:
    base = PRESETS[preset_name]
    overrides = dict(keep_ratio=float(keep_ratio), epochs=int(epochs), eps=float(eps), steps=int(steps),
                     alpha=float(eps) * (base.alpha / base.eps if base.eps else 0.25), lr_milestones=())
    if net_choice == "active" and act is not None:
        s = act.cs.spec
        overrides.update(arch=s.arch, dataset=s.dataset, width=s.width, init=s.init, seed=s.seed,
                         granularity=s.granularity)
    else:
        overrides["seed"] = int(seed)
        # the preset's network on real images: name the images' data set (its normalisation, its test images)
        if base.dataset == "synthetic" and source != "synthetic":
            overrides["dataset"] = {"subset": store.subset_dataset(),
                                    "train_subset": store.train_subset_dataset()}.get(source) or "fashion_mnist"
    try:
        cfg = preset(preset_name, **overrides)
        data, data_label = (store.train_subset_search_data(cfg, int(n_train)) if source == "train_subset"
                            else jobs.search_data(source, cfg, int(n_train)))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        st.error(f"Cannot start this search: {' '.join(str(e).split())}")
    else:
        job = jobs.SearchJob(cfg, data, state.device(), data_label).start()
        st.session_state[state.K_JOB] = job
        st.session_state[K_DATA] = (job.id, state.search_data_record(source, data))
        running = True

if job is not None:
    st.caption(f"{job.cfg.arch} ×{job.cfg.width:g} on {job.cfg.dataset} geometry · keep {job.cfg.keep_ratio:g} · "
               f"{job.cfg.epochs} epoch(s) · inner {job.cfg.describe_inner_attack()} · "
               f"{job.data_label} · device {job.device}")


def job_data_record(job) -> dict:
    """What ``job`` searched on (recorded when it started); a job of an older session: unknown."""
    rec = st.session_state.get(K_DATA)
    return rec[1] if rec and rec[0] == job.id else {}


if job is not None and job_data_record(job).get("split") == "test":
    st.warning(f"This search ran on the test subset: its ticket is marked “{state.TEST_MARK}”.",
               icon=":material/warning:")


# ---------------------------------------------------------------- the live panel
def _curves(job) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("adversarial training loss per step",
                                                        "accuracy per epoch, ± 1 SE"))
    losses = [e for e in job.steps if "loss" in e]          # the loop reports it every few steps
    if losses:
        n = losses[-1]["steps"]
        fig.add_scatter(x=[e["epoch"] + e["step"] / n for e in losses], y=[e["loss"] for e in losses],
                        mode="lines", name="loss", row=1, col=1)
    if job.epochs:
        ep = [e["epoch"] + 1 for e in job.epochs]
        for key, name in (("val_clean", "clean (val)"), ("val_robust", "robust (val)"),
                          ("train_adv_acc", "adversarial (train)")):
            if key in job.epochs[0]:       # ± one binomial standard error, as bars
                n = len(job.data.y_train if key.startswith("train") else job.data.y_val)
                fig.add_scatter(x=ep, y=[100 * e[key] for e in job.epochs], mode="lines+markers", name=name,
                                error_y=dict(type="data", array=[ui.se_points(e[key], n) for e in job.epochs]),
                                row=1, col=2)
    # one x convention on both: epochs counted from 1, x = k at the end of epoch k (steps in between)
    for col in (1, 2):
        fig.update_xaxes(title_text="epoch", range=[0, job.cfg.epochs + 0.05], dtick=1 if job.cfg.epochs <= 20 else None,
                         row=1, col=col)
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=2)
    fig.update_layout(height=360, margin=dict(t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0))
    return fig


def live_panel() -> None:
    job = st.session_state.get(state.K_JOB)
    if job is None:
        return
    frac = job.fraction_done()
    if job.steps:
        e = job.steps[-1]
        loss = next((f" · loss {s['loss']:.3f}" for s in reversed(job.steps) if "loss" in s), "")
        text = f"epoch {e['epoch'] + 1}/{e['epochs']} · step {e['step']}/{e['steps']}{loss}"
    else:
        text = "starting…"
    if job.running:
        st.progress(frac, text=("stopping at the end of this step… " if job.stop_requested else "") + text)
        st.button("Stop", key="stop_search", icon=":material/stop:", on_click=job.stop, disabled=job.stop_requested,
                  help="Stops after the current optimiser step; the best state so far is kept.")
        st.session_state[K_LIVE] = job.id
    else:
        st.progress(1.0, text=f"finished in {job.finished - job.started:.1f} s" + (" (stopped)" if job.result is not None and job.result.stopped else ""))
    ui.plot(_curves(job), key="search_curves")
    if not job.running and st.session_state.get(K_LIVE) == job.id:
        del st.session_state[K_LIVE]
        st.rerun(scope="app")      # the search ended while we watched it: show its result


if job is not None:
    st.fragment(live_panel, run_every=1.0 if running else None)()


# ---------------------------------------------------------------- the result
def history_table(history: list[dict], n_val: int | None = None, n_train: int | None = None) -> pd.DataFrame:
    """The search's epochs as the chart and the messages count them: from 1, accuracies in percent with
    one binomial standard error (``n_val`` validation, ``n_train`` training images; "n?" when unknown)."""
    df = pd.DataFrame([{k: v for k, v in h.items() if k != "members"} for h in history])
    df["epoch"] = df["epoch"] + 1
    for col in [c for c in df.columns if c.endswith("_acc") or c.startswith("val_")]:
        n = n_val if col.startswith("val_") else n_train
        df[col] = [ui.pct_se(v, n) for v in df[col]]
    names = {"train_adv_loss": "adv. loss (train)", "train_adv_acc": "adv. accuracy, train",
             "val_clean": "clean, validation", "val_robust": "robust, validation", "seconds": "seconds",
             "complete": "complete epoch"}
    return df.rename(columns={c: names.get(c, c) for c in df.columns})


def _add_to_active(ticket, job_id: str) -> None:
    """Button callback: a new session set = the active set's tickets + this one (nothing is changed in place)."""
    act = state.active_set()
    cs = state.with_ticket(act.cs, ticket)
    state.add_session_set(cs, f"{act.label} + {cs.tickets[-1].name}", "search")
    st.session_state["search_kept"] = job_id


def _new_set(result, ticket, job_id: str) -> None:
    state.add_session_set(CandidateSet(result.spec, [ticket]), f"searched {ticket.name}", "search")
    st.session_state["search_kept"] = job_id


if job is not None and not job.running:
    if job.error:
        st.error(f"The search failed: {job.error}")
        with st.expander("Traceback"):
            st.code(job.error_trace)
    elif job.result is not None:
        res = job.result
        record = job_data_record(job)
        t = state.mark_search_data(res.ticket, record) if record else res.ticket
        st.success(jobs.result_summary(res))
        c1, c2, c3, c4 = st.columns(4)
        rob, cln = t.metrics.get("val_robust"), t.metrics.get("val_clean")
        n_val, n_train = len(job.data.y_val), len(job.data.y_train)
        c1.metric("Clean accuracy (validation)", ui.pct_se(cln["value"], n_val) if cln else "—",
                  help=f"± one binomial standard error on the {n_val} validation images")
        c2.metric("Robust accuracy (validation)", ui.pct_se(rob["value"], n_val) if rob else "—",
                  help=(rob["attack"] + "; " if rob else "") + f"± one standard error on {n_val} images")
        c3.metric("Kept weights", f"{100 * t.kept_fraction():.1f} %")
        c4.metric("Searched on", {"train": "training images", "test": "TEST images",
                                  "synthetic": "synthetic images"}.get(state.searched_split(t), "not recorded"),
                  help=f"{job.data_label}; recorded in the ticket (search_config['data'])")
        st.dataframe(history_table(res.history, n_val, n_train), hide_index=True, width="stretch")
        c1, c2, c3 = st.columns(3)
        fits = act is not None and act.cs.spec == res.spec
        kept = st.session_state.get("search_kept") == job.id
        c1.button("Add to the active candidate set", icon=":material/add:", on_click=_add_to_active, args=(t, job.id),
                  disabled=not fits or kept, key="add_ticket",
                  help="Makes a new session set: the active set's tickets plus this one." if fits else
                  "The ticket was searched over another network than the active set's.")
        c2.button("Keep as a new candidate set", icon=":material/library_add:", on_click=_new_set, args=(res, t, job.id), key="new_set",
                  disabled=kept)
        if kept:
            st.caption(f"Kept in this session: the active set is now “{state.set_options().get(st.session_state.get(state.K_ACTIVE), '?')}”.")
        c3.download_button("Download the ticket", state.set_bytes(f"search:{job.id}", CandidateSet(res.spec, [t])),
                           file_name=f"{t.name}{SUFFIX}", mime="application/octet-stream", key="dl_search",
                           icon=":material/download:")
