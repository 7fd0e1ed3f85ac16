"""RST Explorer, the Streamlit app's script: ``streamlit run app`` from the repository root serves it
(``app/streamlit_app.py``, Streamlit's folder entry, launches it); ``streamlit run app/main.py`` runs it too.

A thin shell over ``rst``: the pages in ``app/views/`` render, ``rst`` computes, and the modules
beside this script hold one concern each: ``store`` (files: zoo, reports, subset, uploads), ``state``
(the session's candidate sets and device), ``reports`` (stored reports as tables), ``compute`` and
``r2s_eval`` (cached live evaluations), ``jobs`` (the background search), ``ui`` (rendering helpers).
The sidebar holds what every page shares: the active candidate set and the device.

The page folder is ``views/``, not ``pages/``: a folder named ``pages`` beside the main script turns on
Streamlit's legacy multipage mode for the first run of a process (and for every run under ``AppTest``),
which runs a page's file *instead of* this script, so the sidebar and the session defaults would be missing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

APP_DIR = Path(__file__).resolve().parent
if str(APP_DIR) not in sys.path:          # `import state` etc. from every page, however the app is started
    sys.path.insert(0, str(APP_DIR))

import state  # noqa: E402      (Home needs neither torch nor rst: state.warm_up loads them after it)

FAVICON = APP_DIR.parent / "assets" / "favicon.png"      # shipped: no font CDN is asked for the page icon
st.set_page_config(page_title="RST Explorer", page_icon=str(FAVICON) if FAVICON.is_file() else None, layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/network.py", title="Network", icon=":material/hub:", url_path="network"),
    st.Page("views/search.py", title="Search", icon=":material/search:", url_path="search"),
    st.Page("views/sparsity.py", title="Sparsity", icon=":material/show_chart:", url_path="sparsity"),
    st.Page("views/transfer.py", title="Transfer", icon=":material/swap_horiz:", url_path="transfer"),
    st.Page("views/r2s_live.py", title="R2S live", icon=":material/casino:", url_path="r2s"),
    st.Page("views/masks.py", title="Masks", icon=":material/save:", url_path="masks"),
]
page = st.navigation(PAGES)


DEVICE_HELP = "GPU when there is one, else CPU (rst.runtime.device.available_devices)."


def _device_picker(on_change=None) -> None:
    """The sidebar's device choice (torch loaded): the session's device, the GPU when there is one by default."""
    st.session_state.setdefault(state.K_DEVICE, state.default_device())
    st.selectbox("Device", state.devices(), key=state.K_DEVICE, help=DEVICE_HELP, on_change=on_change)


def _device_changed() -> None:
    st.session_state["_device_changed"] = True


@st.fragment(run_every=1.0)
def _device_pending() -> None:
    """The device list needs torch, which the warm-up loads while the first page renders: this fragment
    shows the picker once it has, without rerunning the page; a change of device reruns the app."""
    if st.session_state.pop("_device_changed", False):
        st.rerun()
    if not state.torch_loaded():
        st.caption("Device: detecting (GPU when there is one, else CPU)…")
        return
    _device_picker(on_change=_device_changed)


state.init_state()
with st.sidebar:
    options = state.set_options()
    if options:
        st.selectbox("Active candidate set", list(options), format_func=options.get, key=state.K_ACTIVE,
                     help="Tickets over one seeded random network: from the zoo, an upload or a live search. "
                          "Every page uses this set.")
    else:
        st.caption("No candidate set loaded: see Home.")
    item = st.session_state.get(state.K_SETS, {}).get(st.session_state.get(state.K_ACTIVE))
    if item is not None:              # a set of this session (zoo sets are built on training images)
        state.show_test_mark(item["cs"])
    if state.torch_loaded():
        _device_picker()
    else:
        _device_pending()
    job = st.session_state.get(state.K_JOB)
    if job is not None and job.running:
        st.caption(f":material/search: a search is running ({100 * job.fraction_done():.0f} %) — see Search")

state.warm_up()              # once per process: torch, rst, the allocator and the default set, off this run
if getattr(page, "title", "Home") != "Home":    # (a bare run, without Streamlit's runtime, has no title)
    state.wait_imported()    # one thread imports rst: two at once could deadlock on its import locks
page.run()
