"""Masks: download tickets or the whole candidate set; upload a mask file and use it everywhere."""
import hashlib
import json
import re

import pandas as pd
import streamlit as st

import reports
import state
import store
import ui
from rst.network.masks import MAX_FILE_BYTES, SUFFIX, MaskFileError



def _use_upload(data: bytes, name: str, digest: str) -> None:
    """Button callback (runs before the rerun, so it may change the sidebar's active set)."""
    key = state.add_session_set(store.parse_upload(data), name, "upload")
    st.session_state["uploaded_digests"] = {**st.session_state.get("uploaded_digests", {}), digest: key}


def metric_images(m: dict, ticket) -> int | None:
    """How many images a recorded metric was measured on: ``test[:N]``, ``(N test images)``, or for the
    validation split the count a live search recorded (``search_config["data"]``); None when unknown."""
    split = str(m.get("split", ""))
    found = re.search(r"\[:(\d+)\]", split) or re.search(r"\((\d+) [a-z ]*images\)", split)
    if found:
        return int(found.group(1))
    data = ticket.search_config.get("data")
    if split.startswith("validation") and isinstance(data, dict) and isinstance(data.get("val_images"), int):
        return data["val_images"]
    return None


def metric_text(m: dict | None, ticket) -> str | None:
    """``"52.6 % ± 0.5"``: the metric with its standard error (None when the ticket has no such metric)."""
    return None if m is None else ui.pct_se(reports.as_percent(m["value"]) / 100, metric_images(m, ticket))


st.title("Mask files")
st.caption("A mask file holds 1 bit per weight plus BatchNorm statistics; the weights are regenerated from the "
           "recorded seed and checked against the recorded checksum. safetensors + JSON: never pickle.")

st.subheader("Download")
act = state.require_active()
if act is not None:
    cs = act.cs
    rows = []
    for i, t in enumerate(cs.tickets):
        rob, cln = reports.pick_metric(t.metrics, "robust"), reports.pick_metric(t.metrics, "clean")
        rows.append({"#": i, "name": t.name, "keep ratio": t.keep_ratio, "kept weights (%)": 100 * t.kept_fraction(),
                     "clean": metric_text(cln, t), "robust": metric_text(rob, t),
                     "robust measured with": f"{rob['attack']} ({rob['split']})" if rob else ""})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={"kept weights (%)": st.column_config.NumberColumn(format="%.1f")})
    st.caption("Accuracies ± one binomial standard error on the images of their split (n? where the file "
               "does not say how many).")
    stem = (act.zoo_id or act.label).replace(" ", "_").replace("/", "_")
    st.download_button(f"Whole candidate set ({len(cs)} tickets)", state.set_bytes(act.key, cs), icon=":material/download:",
                       file_name=f"{stem}{SUFFIX}", mime="application/octet-stream", key="dl_set")
    cols = st.columns(min(4, len(cs)))
    for i, t in enumerate(cs.tickets):
        cols[i % len(cols)].download_button(f"{t.name or f'ticket {i}'}", state.set_bytes(act.key, cs, (i,)),
                                            icon=":material/download:",
                                            file_name=f"{stem}_{t.name or i}{SUFFIX}",
                                            mime="application/octet-stream", key=f"dl_ticket_{i}")

st.subheader("Upload")
st.caption(f"`*{SUFFIX}` files up to {MAX_FILE_BYTES // 2**20} MiB. The file is validated (format, version, "
           "checksum of the regenerated weights, shapes, payload hash) before anything changes; a bad file "
           "leaves the session as it was.")
up = st.file_uploader("Mask file", key="mask_upload", accept_multiple_files=False,
                      max_upload_size=MAX_FILE_BYTES // 2**20)
if up is not None:
    data = up.getvalue()
    try:
        cs_up = store.parse_upload(data)
    except MaskFileError as e:
        st.error(f"**{up.name}** cannot be used: {e}")
    else:
        st.success(f"**{up.name}**: {len(cs_up)} ticket(s) over {cs_up.spec.arch} ({cs_up.spec.dataset}, "
                   f"width {cs_up.spec.width:g}, seed {cs_up.spec.seed}); weights checksum verified"
                   + ("; metadata not verified (see below)." if cs_up.warnings else "."))
        for warning in cs_up.warnings:           # e.g. the metadata digest was removed: names and metrics unchecked
            st.warning(f"**{up.name}**: {warning}")
        meta = store.upload_metadata(data)
        with st.expander("File metadata"):
            st.json(json.loads(json.dumps(meta, default=str)), expanded=False)
        done = st.session_state.get("uploaded_digests", {})
        digest = hashlib.sha256(data).hexdigest()
        if digest in done:
            label = state.set_options().get(done[digest], "?")
            if st.session_state.get(state.K_ACTIVE) == done[digest]:
                st.caption(f":material/check_circle: “{label}” is the active candidate set now: every page uses it.")
            else:
                st.caption(f"In this session's candidate sets as “{label}”; choose it in the sidebar to use it.")
        else:
            st.button("Use this candidate set", type="primary", key="use_upload", on_click=_use_upload,
                      args=(data, up.name, digest))

sets = st.session_state.get(state.K_SETS, {})
if sets:
    st.subheader("This session's candidate sets")
    st.dataframe(pd.DataFrame([{"key": k, "source": v["source"], "label": v["label"], "tickets": len(v["cs"]),
                                "network": f"{v['cs'].spec.arch} ×{v['cs'].spec.width:g} ({v['cs'].spec.dataset})"}
                               for k, v in sets.items()]), hide_index=True, width="stretch")
