"""Transfer: robust accuracy of inference ticket (column) on adversarial examples of attack ticket (row)."""
import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import compute
import jobs
import reports
import state
import store
import ui

K_PARAMS = "transfer_live_params"

st.title("Transferability between tickets")
st.caption("Tickets of different keep ratios drawn from the *same* random weights. A cell is the accuracy of the "
           "inference ticket (column) on adversarial examples crafted against the attack ticket (row): the "
           "diagonal is white-box robust accuracy, off-diagonal cells are transfer.")
act = state.require_active()
if act is None:
    st.stop()
cs = act.cs
if len(cs) < 2:
    st.info("The active set has one ticket: a transfer matrix needs at least two (add one on the Search page, "
            "or upload a set on the Masks page).")
    st.stop()
default_eps = state.default_eps(act)

stored = reports.stored_transfer(act.zoo_id)
options = (["stored"] if stored else []) + ["live"]
source = st.radio("Matrix", options, horizontal=True, key="transfer_source",
                  format_func={"stored": "stored zoo report", "live": "compute live on test images"}.get)

view = None
if source == "stored":
    flags = sorted(stored, key=lambda f: (f is None, bool(f)))
    if len(flags) > 1:
        early = st.toggle("Early stop on the source (the paper's code; inflated)", value=False,
                          key="transfer_stored_early_stop")
        view = stored.get(early) or stored[flags[0]]
    else:
        view = stored[flags[0]]
else:
    n_max = store.require_eval_images(cs.spec.dataset)
    with st.form("transfer_form"):
        c1, c2, c3, c4, c5 = st.columns(5)
        n_images = c1.number_input("Test images", 8, n_max, min(128, n_max), 8, key="tr_images")
        attack = c2.selectbox("Attack", ["pgd", "fgsm", "cw"], format_func=compute.ATTACK_LABELS.get, key="tr_attack")
        eps = c3.number_input("ε", 0.0, 1.0, default_eps, 0.01, format="%.4f", key="tr_eps")
        steps = c4.number_input("Steps", 1, 100, 10, 1, key="tr_steps")
        early_stop = c5.toggle("Early stop on the source", value=False, key="tr_early_stop",
                               help="The paper's code stops perturbing an example once the *attack* ticket errs; "
                                    "that weakens the examples and inflates transfer accuracy.")
        go_live = st.form_submit_button("Compute", type="primary", key="tr_compute")
    if go_live:
        params = dict(n_images=int(n_images), early_stop=bool(early_stop), dev=state.device(),
                      attack_json=json.dumps(compute.attack_config(attack, eps, steps).to_dict(), sort_keys=True))
        _, msg = jobs.start_live(st.session_state, "transfer", {**params, "set_key": act.key},
                                 lambda job, cs=cs, params=params: compute.transfer_job(job, cs, **params))
        if msg:
            st.warning(msg)
    job = jobs.live_job(st.session_state, "transfer")
    if job is None or job.params.get("set_key") != act.key:
        st.info("Choose the test images and the attack, then **Compute**.")
        st.stop()
    ui.job_panel(job, "tr_stop")
    view = job.partial
    if view is None:
        st.stop()

m = 100 * np.asarray(view.matrix, dtype=float) if np.nanmax(view.matrix) <= 1.0 else np.asarray(view.matrix, float)
ticks = [f"{n} ({k:g})" if k == k else str(n) for n, k in zip(view.names, view.keep_ratios)]
# the colour scale spans the data (not 0-100): cells a few points apart must look apart; every cell says its value
fig = go.Figure(go.Heatmap(z=m.tolist(), x=ticks, y=ticks, colorscale="Viridis", zmin=float(np.nanmin(m)), zmax=float(np.nanmax(m)),
                           text=[[f"{v:.1f}" for v in r] for r in m], texttemplate="%{text}", textfont=dict(size=13),
                           colorbar=dict(title="acc. %"),
                           customdata=[[ui.se_points(v / 100, view.n_images) or 0 for v in r] for r in m],
                           hovertemplate="attack %{y}<br>inference %{x}<br>%{z:.1f} % ± %{customdata:.1f}<extra></extra>"))
fig.update_layout(title=view.label, xaxis_title="inference ticket (evaluated)", yaxis_title="attack ticket (source)",
                  height=480, margin=dict(t=60, b=10, r=120))      # colour bar, then the tool bar
fig.update_xaxes(type="category")
fig.update_yaxes(autorange="reversed", type="category")
ui.plot(fig, key="transfer_heatmap")

k = len(m)
diag = float(np.mean(np.diag(m)))
off = float((m.sum() - np.trace(m)) / max(1, k * k - k))
c1, c2, c3, c4 = st.columns(4)
n_img = view.n_images
c1.metric("Diagonal (white-box)", ui.pct_se(diag / 100, n_img))
c2.metric("Off-diagonal (transfer)", ui.pct_se(off / 100, n_img))
c3.metric("Mean of all cells", ui.pct_se(float(m.mean()) / 100, n_img),
          help="The paper's R2S number (63.93 %) is close to the mean of its matrix (64.42 %).")
c4.metric("Early stop", {True: "on (inflated)", False: "off", None: "not recorded"}[view.early_stop])
st.caption(f"{view.source} · attack: {view.attack} · {view.n_images or '?'} images · ours = {cs.spec.dataset}. "
           f"± one binomial standard error at that accuracy on {view.n_images or '?'} images (every cell: see its "
           "hover); the cells share their images, so compare them paired, not by their ± alone.")

with st.expander("Reference: the paper's matrix (ResNet-18, CIFAR-10, PGD-20 ε=8/255, with early stop)"):
    p = store.paper_reference()["transfer_matrix_resnet18_cifar10"]
    pt = [f"{r:g}" for r in p["keep_ratio"]]
    pm = np.asarray(p["robust_accuracy"])
    pfig = go.Figure(go.Heatmap(z=pm.tolist(), x=pt, y=pt, colorscale="Viridis", zmin=float(pm.min()), zmax=float(pm.max()),
                                text=[[f"{v:.1f}" for v in r] for r in pm], texttemplate="%{text}",
                                colorbar=dict(title="acc. %")))
    pfig.update_layout(title="Paper = CIFAR-10 (printed numbers)", xaxis_title="inference RST keep ratio",
                       yaxis_title="attack RST keep ratio", height=420, margin=dict(t=50, b=10, r=120))
    pfig.update_xaxes(type="category")       # one equal cell per keep ratio, not a numeric axis
    pfig.update_yaxes(autorange="reversed", type="category")
    ui.plot(pfig, key="paper_heatmap")
