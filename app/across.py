"""The Sparsity page's "across networks" view: one recipe on several random networks (rst.zoo.across_networks).

The error bars are the standard deviation over networks (the random draw), not the binomial
standard error of one network's test images, which each network's own row keeps beside it.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import store
import ui
from rst.zoo.across_networks import across_networks, sibling_zoos

COLORS = {"robust": "#d62728", "clean": "#1f77b4"}


def _figure(rows: list[dict]) -> go.Figure:
    tickets = [r for r in rows if r["name"] != "dense AT"]
    dense = next((r for r in rows if r["name"] == "dense AT"), None)
    fig = go.Figure()
    for what, label in (("robust", "PGD-20"), ("clean", "clean")):
        ks = [r["keep_ratio"] for r in tickets]
        for i, p in enumerate(zip(*[r["per_network"] for r in tickets]) if tickets else []):
            fig.add_trace(go.Scatter(x=ks, y=[100 * q[what] for q in p], mode="markers", opacity=0.35,
                                     marker=dict(color=COLORS[what], size=6), showlegend=False,
                                     name=f"{label}, seed {p[0]['seed']}", legendgroup=what))
        fig.add_trace(go.Scatter(
            x=ks, y=[100 * r[f"{what}_mean"] for r in tickets], mode="lines+markers", legendgroup=what,
            name=f"{label}: mean ± std over networks", line=dict(color=COLORS[what]),
            error_y=dict(type="data", array=[100 * (r[f"{what}_std"] if r["n_networks"] > 1 else 0) for r in tickets])))
        if dense is not None:
            fig.add_hline(y=100 * dense[f"{what}_mean"], line_dash="dot", line_color=COLORS[what],
                          annotation_text=f"dense AT {label} (mean)", annotation_position="bottom right")
    fig.update_layout(xaxis_title="keep ratio", yaxis_title="test accuracy (%)", xaxis_type="log",
                      height=420, margin=dict(t=30), legend=dict(orientation="h", y=-0.2))
    return fig


def _spread(mean, std, n) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if n > 1 else f"{100 * mean:.2f} (one network)"


def _tables(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    across = pd.DataFrame([{"model": r["name"], "networks": r["n_networks"],
                            "clean % (mean ± std)": _spread(r["clean_mean"], r["clean_std"], r["n_networks"]),
                            "PGD-20 % (mean ± std)": _spread(r["robust_mean"], r["robust_std"], r["n_networks"]),
                            "ticket − dense, points (mean ± std)": _spread(r["gap_mean"], r["gap_std"], r["n_networks"])}
                           for r in rows])
    per = pd.DataFrame([{"seed": p["seed"], "zoo": p["zoo"], "model": r["name"], "test images": p["n_images"],
                         "clean % ± SE": f"{100 * p['clean']:.2f} ± {100 * p['clean_se']:.2f}",
                         "PGD-20 % ± SE": f"{100 * p['robust']:.2f} ± {100 * p['robust_se']:.2f}",
                         "ticket − dense (points)": "—" if p["gap"] is None else f"{100 * p['gap']:+.2f}"}
                        for r in rows for p in r["per_network"]])
    return across, per


def render(zoo_id: str | None) -> None:
    """The mean curve over the active zoo's sibling networks, with their spread, and the tables."""
    index, _ = store.zoo_index()
    if not zoo_id or not index:
        st.info("Across networks needs a zoo from the index: choose one in the sidebar.")
        return
    sibs = sibling_zoos(index, zoo_id)
    rows = across_networks(sibs)
    seeds = ", ".join(str(z["seed"]) for z in sibs)
    if len(sibs) < 2:
        st.info(f"Only one random network (seed {seeds}) has this zoo's recipe in the index: no spread "
                "across networks to show.")
    else:
        st.caption(f"{len(sibs)} random networks of one recipe (seeds {seeds}): "
                   + ", ".join(f"`{z['id']}`" for z in sibs) + ". Error bars: **standard deviation over "
                   "networks** (the random draw), not the binomial error of one network's test images; "
                   "faint points are the single networks. Keep ratios that every network has.")
    ui.plot(_figure(rows), key="across_networks_plot")
    across, per = _tables(rows)
    st.dataframe(across, hide_index=True, width="stretch")
    with st.expander("Each network on its own (± = binomial standard error on its test images)"):
        st.dataframe(per, hide_index=True, width="stretch")
