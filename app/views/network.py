"""Network: the seeded random network (layers, weight counts, init, checksum) and the tickets' kept weights."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import compute
import state
import ui
from rst.network.models import DATASET_STATS, NetworkSpec, list_models, model_entry
from rst.network.weights import INITS

st.title("The random network")
st.caption("Its weights are a function of (architecture, width, data set geometry, init, seed): regenerated "
           "from the seed on every load, never stored, and checked against the mask file's checksum.")

from rst.network.masks import MaskFileError  # noqa: E402

try:
    act = state.active_set()
except MaskFileError as e:
    st.error(f"The active candidate set cannot be loaded: {e}")
    act = None
base = act.cs.spec if act is not None else NetworkSpec("fmnist_conv4", dataset="fashion_mnist")

with st.form("network"):
    c1, c2, c3, c4, c5 = st.columns(5)
    datasets = list(DATASET_STATS)
    dataset = c1.selectbox("Data set", datasets, index=datasets.index(base.dataset), key="nw_dataset")
    archs = list_models()
    arch = c2.selectbox("Architecture", archs, index=archs.index(base.arch), key="nw_arch",
                        help="The 28×28 networks (fmnist_*) are the ones that run fast on a CPU.")
    init = c3.selectbox("Init", list(INITS), index=list(INITS).index(base.init), key="nw_init")
    seed = c4.number_input("Seed", min_value=0, max_value=2**31 - 1, value=int(base.seed), step=1, key="nw_seed")
    width = c5.number_input("Width multiplier", min_value=0.05, max_value=4.0, value=float(base.width), step=0.25, key="nw_width")
    st.form_submit_button("Show network", key="nw_show")

try:
    spec = NetworkSpec(arch, dataset=dataset, width=float(width), init=init, seed=int(seed),
                       granularity=base.granularity)
except (ValueError, KeyError) as e:
    st.error(f"Not a valid network: {e}")
    st.stop()

entry = model_entry(arch)
summary = compute.network_summary(compute.spec_json(spec))
c1, c2, c3 = st.columns(3)
c1.metric("Masked layers", len(summary["rows"]))
c2.metric("Weights", f"{summary['total']:,}")
c3.metric("Device", state.device())
st.caption(f"{compute.describe_network(entry.description, spec, summary)}. Init: {spec.init}, seed {spec.seed}. "
           f"One score per weight. Weight checksum (SHA-256 of the regenerated weights): `{summary['checksum']}`. "
           f"{summary['bn_layers']} BatchNorm layers without affine parameters. Available devices: "
           f"{', '.join(state.devices())} (choose in the sidebar).")
if entry.input_size != DATASET_STATS[dataset][2]:
    st.info(f"{arch} was designed for {entry.input_size}×{entry.input_size} images; {dataset} has "
            f"{DATASET_STATS[dataset][2]}×{DATASET_STATS[dataset][2]}.")

table = pd.DataFrame(summary["rows"])
matches = act is not None and act.cs.spec == spec
order = sorted(range(len(act.cs)), key=lambda i: act.cs.tickets[i].keep_ratio) if matches else []
if matches:
    for i in order:
        t = act.cs.tickets[i]
        stats = compute.ticket_layer_stats(act.key, act.cs, i)
        table[f"kept · {t.name or i}"] = [r["kept"] for r in stats]
    st.markdown(f"Kept weights per layer of the **{len(act.cs)} tickets of the active set** "
                f"({act.label}); the checksum matches the file's: "
                f"{':material/check_circle: yes' if act.cs.weight_checksum == summary['checksum'] else ':material/error: NO, it differs'}.")
elif act is not None:
    st.info(f"The active set ({act.label}) is over another network ({act.cs.spec.arch}, {act.cs.spec.dataset}, "
            f"width {act.cs.spec.width:g}, {act.cs.spec.init}, seed {act.cs.spec.seed}): set the fields above to "
            "those values to see its tickets' kept weights per layer.")
else:
    state.show_guidance()
kept_cols = [c for c in table.columns if c.startswith("kept · ")]
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"layer": st.column_config.TextColumn(width="small"),
                            "type": st.column_config.TextColumn(width="small"),
                            **{c: st.column_config.NumberColumn(c.removeprefix("kept · "), width="small",
                                                                help=f"weights {c}")
                               for c in kept_cols}})
if kept_cols:
    st.caption("Columns after *weights*: the weights each ticket keeps, in order of keep ratio.")

fig = go.Figure(go.Bar(x=table["layer"], y=table["weights"], name="all weights", marker_color="#9aa5b1"))
if matches:   # keep ratios in order, coloured along one sequential scale (light: few kept, dark: many)
    from plotly.colors import sample_colorscale
    colors = sample_colorscale("Viridis", [0.9 - 0.8 * k / max(1, len(kept_cols) - 1) for k in range(len(kept_cols))])
    for col, color, i in zip(kept_cols, colors, order):
        fig.add_bar(x=table["layer"], y=table[col], name=f"keep {act.cs.tickets[i].keep_ratio:g}", marker_color=color)
fig.update_layout(barmode="group", height=380, margin=dict(t=40, b=10), yaxis_title="weights (log scale)",
                  xaxis_title="masked layer (input → output)", yaxis_type="log",
                  title="Weights per masked layer" + (" and kept by each ticket" if matches else ""))
ui.plot(fig, key="network_bars")
