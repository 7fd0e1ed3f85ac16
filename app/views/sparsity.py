"""Sparsity: robust and natural accuracy vs keep ratio; per-layer density of a chosen ticket; the paper beside."""
import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import across
import compute
import jobs
import reports
import state
import store
import ui

K_PARAMS = "sparsity_live_params"

st.title("Accuracy vs keep ratio")
act = state.require_active()
if act is None:
    st.stop()
cs = act.cs
entry = store.zoo_entry(act.zoo_id) if act.zoo_id else None
default_eps = state.default_eps(act)

stored = reports.stored_curve(act.zoo_id, cs)
options = (["stored"] if stored else []) + ["live"] + (["across"] if act.zoo_id else [])
source = st.radio("Numbers", options, horizontal=True, key="sparsity_source",
                  format_func={"stored": f"stored ({stored[1] if stored else ''})",
                               "live": "compute live on test images",
                               "across": "across random networks (same recipe, other seeds)"}.get)
if source == "across":
    across.render(act.zoo_id)
    st.stop()

rows, where = None, ""
if source == "stored":
    rows, where = stored
else:
    n_max = store.require_eval_images(cs.spec.dataset)
    with st.form("sparsity_form"):
        c1, c2, c3, c4 = st.columns(4)
        n_images = c1.number_input("Test images", 8, n_max, min(256, n_max), 8, key="sp_images")
        attack = c2.selectbox("Attack", ["pgd", "fgsm", "cw"], format_func=compute.ATTACK_LABELS.get, key="sp_attack")
        eps = c3.number_input("ε", 0.0, 1.0, default_eps, 0.01, format="%.4f", key="sp_eps")
        steps = c4.number_input("Steps", 1, 100, 10, 1, key="sp_steps")
        go_live = st.form_submit_button("Compute", type="primary", key="sp_compute")
    if go_live:
        params = dict(n_images=int(n_images), attack_json=json.dumps(
            compute.attack_config(attack, eps, steps).to_dict(), sort_keys=True), dev=state.device())
        _, msg = jobs.start_live(st.session_state, "sparsity", {**params, "set_key": act.key},
                                 lambda job, cs=cs, params=params: compute.sparsity_job(job, cs, **params))
        if msg:
            st.warning(msg)
    job = jobs.live_job(st.session_state, "sparsity")
    if job is None or job.params.get("set_key") != act.key:
        st.info("Choose the test images and the attack, then **Compute**.")
        st.stop()
    ui.job_panel(job, "sp_stop")
    rows = job.partial
    if not rows:
        st.stop()
    where = "computed live" + (f" ({len(rows)} of {len(cs)} tickets so far)" if len(rows) < len(cs) else "")

df = pd.DataFrame(rows)
if "n_images" not in df:
    df["n_images"] = None
for col in ("clean", "robust"):
    df[col] = df[col].map(reports.as_percent)
# map every row to its ticket (by name, else by keep ratio)
by_name = {t.name: i for i, t in enumerate(cs.tickets)}
df["ticket"] = [by_name.get(r.get("name"), next((i for i, t in enumerate(cs.tickets)
                                                  if abs(t.keep_ratio - r["keep_ratio"]) < 1e-9), -1))
                for r in rows]
df = df.sort_values("keep_ratio").reset_index(drop=True)
attack_label = str(df["attack"].iloc[0]) if "attack" in df and len(df) else ""

dup = df["keep_ratio"].duplicated(keep=False)
labels = {i: (f"{kr:g}" + (f" ({df['name'][i]})" if dup[i] else "")) for i, kr in enumerate(df["keep_ratio"])}
sel = st.select_slider("Keep ratio of the highlighted ticket", options=list(range(len(df))),
                       format_func=labels.get, key="sparsity_slider")
row = df.iloc[sel]

# dense adversarially trained baseline (same network, all weights trained), when the zoo has one
dense = (entry or {}).get("dense") or {}
dense_rob = reports.pick_metric(dense.get("metrics"), "robust")
dense_cln = reports.pick_metric(dense.get("metrics"), "clean")

def _se(pct, n):
    """± one binomial standard error, in points, of an accuracy in percent measured on n images."""
    se = reports.standard_error(None if pct is None or pd.isna(pct) else pct / 100, n)
    return None if se is None else 100 * se


def _errors(values, ns):
    e = [_se(v, None if pd.isna(n) else int(n)) for v, n in zip(values, ns)]
    return dict(type="data", array=[x or 0 for x in e], visible=any(x is not None for x in e), thickness=1)


aa = reports.stored_autoattack(act.zoo_id) if source == "stored" else None
# a report may cover only some tickets (``zoo build --autoattack-tickets N``): plot those it has
aa_df = df[df["name"].isin(list(aa[0]))] if aa is not None and "name" in df else df.iloc[0:0]
has_aa = len(aa_df) > 0
fig = go.Figure()
fig.add_scatter(x=df["keep_ratio"], y=df["robust"], mode="lines+markers", name=f"robust ({attack_label.split(' ')[0]})",
                line=dict(color="#d62728"), error_y=_errors(df["robust"], df["n_images"]))
fig.add_scatter(x=df["keep_ratio"], y=df["clean"], mode="lines+markers", name="natural (clean)",
                line=dict(color="#1f77b4"), error_y=_errors(df["clean"], df["n_images"]))
if has_aa:
    fig.add_scatter(x=aa_df["keep_ratio"], y=[reports.as_percent(aa[0][n]) for n in aa_df["name"]], mode="lines+markers",
                    name="robust (AutoAttack)", line=dict(color="#d62728", dash="dot"),
                    error_y=_errors([reports.as_percent(aa[0][n]) for n in aa_df["name"]], [aa[2]] * len(aa_df)))
fig.add_scatter(x=[row["keep_ratio"]] * 2, y=[row["robust"], row["clean"]], mode="markers", name="highlighted",
                marker=dict(size=16, symbol="circle-open", line=dict(width=3), color="black"))
# the dense baseline: points at keep ratio 1 with their error bars (every level in the legend, no labels in
# the plot to collide), and faint dashed levels across for comparison with the tickets
x_span = [df["keep_ratio"].min(), 1.0]
dense_points = []
if dense_rob:
    dense_points.append(("dense AT, robust", reports.as_percent(dense_rob["value"]), reports.n_from_split(dense_rob["split"]),
                         "#d62728", "dash", "diamond"))
if aa is not None and "dense AT" in aa[0]:
    dense_points.append(("dense AT, AutoAttack", reports.as_percent(aa[0]["dense AT"]), aa[2], "#7f7f7f", "dot", "diamond-open"))
if dense_cln:
    dense_points.append(("dense AT, natural", reports.as_percent(dense_cln["value"]), reports.n_from_split(dense_cln["split"]),
                         "#1f77b4", "dash", "diamond"))
for name, level, n, color, dash, symbol in dense_points:
    fig.add_scatter(x=x_span, y=[level] * 2, mode="lines", line=dict(color=color, dash=dash, width=1), opacity=0.6,
                    showlegend=False, hoverinfo="skip")
    fig.add_scatter(x=[1.0], y=[level], mode="markers", name=name + (f" ({n:,} images)" if n else ""),
                    marker=dict(color=color, symbol=symbol, size=10), error_y=_errors([level], [n]))
ticks = list(df["keep_ratio"]) + ([1.0] if dense_points else [])
fig.update_layout(title=f"Ours = {cs.spec.dataset.replace('_', '-')} · {cs.spec.arch} ×{cs.spec.width:g}",
                  xaxis_title="keep ratio (fraction of weights kept per layer; 1 = dense)", yaxis_title="accuracy (%)",
                  height=460, margin=dict(t=50, b=10), legend=dict(orientation="h", y=-0.2))
fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{k:g}" if k < 1 else "dense" for k in ticks])

c_main, c_side = st.columns([3, 2])
with c_main:
    ui.plot(fig, key="sparsity_curve")
    st.caption(f"Numbers: {where}. Robust = {attack_label}. "
               + (f"Dotted: {aa[1]}. " if aa is not None else "")
               + ("Dashed: the dense network with all weights adversarially trained (points at keep ratio 1). "
                  if dense_rob else "No dense adversarially trained baseline in this set. ")
               + "Error bars: ± one standard error on the images each number was measured on — compare "
                 "levels within one attack and one image count. A ticket's weights are never trained.")
with c_side:
    m1, m2, m3 = st.columns(3)
    m1.metric("Keep ratio", f"{row['keep_ratio']:g}")
    n_row = None if pd.isna(row["n_images"]) else int(row["n_images"])
    m2.metric("Robust", ui.pct_se(row["robust"] / 100, n_row) if pd.notna(row["robust"]) else "—")
    m3.metric("Natural", ui.pct_se(row["clean"] / 100, n_row) if pd.notna(row["clean"]) else "—")
    if row["ticket"] >= 0:
        stats = pd.DataFrame(compute.ticket_layer_stats(act.key, cs, int(row["ticket"])))
        name = cs.tickets[int(row["ticket"])].name
        keep = cs.tickets[int(row["ticket"])].keep_ratio     # every layer within one weight of its share?
        uniform = bool(((stats["kept"] - keep * stats["weights"]).abs() <= 1).all())
        if uniform:   # per-layer masks: every layer keeps the same share, so show what differs: the counts
            bar = go.Figure()
            bar.add_bar(x=stats["layer"], y=stats["weights"], name="weights", marker_color="#c7ccd1")
            bar.add_bar(x=stats["layer"], y=stats["kept"], name="kept", marker_color="#2ca02c",
                        text=[f"{k:,}" for k in stats["kept"]], textposition="outside")
            bar.update_layout(title=f"Kept weights per layer · {name}", barmode="overlay",
                              yaxis_title="weights (log scale)", yaxis_type="log", height=330, margin=dict(t=50, b=10),
                              xaxis_title="masked layer")
        else:
            bar = go.Figure(go.Bar(x=stats["layer"], y=100 * stats["density"], marker_color="#2ca02c",
                                   text=[f"{100 * d:.0f}%" for d in stats["density"]], textposition="outside",
                                   customdata=stats[["kept", "weights"]],
                                   hovertemplate="%{x}: %{customdata[0]} of %{customdata[1]} weights kept<extra></extra>"))
            bar.update_layout(title=f"Per-layer density · {name}", xaxis_title="masked layer",
                              yaxis_title="kept weights (%)", yaxis_range=[0, 110], height=330, margin=dict(t=50, b=10))
        ui.plot(bar, key="sparsity_density")
        if uniform:
            st.caption(f"Every layer keeps {100 * keep:g} % of its weights, to the nearest weight (the masks are "
                       "per layer): the bars show how many that is.")
    else:
        st.info("This row of the stored report has no ticket in the active set.")

with st.expander("Table"):
    table = df.drop(columns=["ticket"]).rename(columns={"clean": "natural (%)", "robust": "robust (%)",
                                                        "keep_ratio": "keep ratio", "n_images": "test images"})
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in ("natural (%)", "robust (%)")})

# ------------------------------------------------------------------ the paper (CIFAR-10), for reference
st.subheader("Reference: the paper (CIFAR-10)")
paper = store.paper_reference()
curves = paper["sparsity_curves"]
pfig = go.Figure()
for key, name, color, dash in (("resnet18_cifar10_robust", "ResNet-18 robust", "#d62728", None),
                               ("resnet18_cifar10_natural", "ResNet-18 natural", "#1f77b4", None),
                               ("wrn34_10_cifar10_robust", "WRN-34-10 robust", "#ff7f0e", None)):
    pfig.add_scatter(x=curves["keep_ratio"], y=curves[key], mode="lines+markers", name=name,
                     line=dict(color=color, dash=dash))
dat = paper["dense_adversarial_training"]["resnet18_cifar10"]
pfig.add_hline(y=dat["pgd20"], line_dash="dash", line_color="#d62728", annotation_text="ResNet-18 dense AT, robust")
pfig.add_hline(y=dat["natural"], line_dash="dash", line_color="#1f77b4",
               annotation_text="ResNet-18 dense AT, natural")
pfig.update_layout(title="Paper = CIFAR-10 (Fu et al. 2021; values read off plots, ±0.5 points)",
                   xaxis_title="keep ratio", yaxis_title="accuracy (%)", height=380, margin=dict(t=50, b=10),
                   legend=dict(orientation="h", y=-0.25))
pfig.update_xaxes(type="log", tickvals=[0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.9],
                  ticktext=["0.01", "0.03", "0.05", "0.1", "0.2", "0.3", "0.5", "0.9"])
ui.plot(pfig, key="paper_curve")
st.caption(f"Attack: {paper['attack']}. A different data set, networks and ε from ours: compare shapes, not levels.")
