"""Home: what RSTs and R2S are, what is loaded, and the honest-evaluation note."""
import streamlit as st

import state
import store
import ui

st.title("RST Explorer")
st.markdown(
    "**Robust Scratch Tickets** (Fu et al., NeurIPS 2021) are subnetworks of a randomly initialised "
    "network that is *never trained*: only a binary mask over its frozen weights is searched, with "
    "adversarial examples in the loop, so that the masked network is robust by itself. "
    "**R2S** (Random RST Switch) keeps several tickets of different keep ratios over the *same* random "
    "weights and answers every query with a randomly drawn one, because adversarial examples transfer "
    "poorly between them."
)
st.warning(
    "R2S is a randomised defence. Attacking one member and inferring with another (the paper's protocol) "
    "is **not** an adaptive attack: an attacker who knows the candidate set attacks the expectation over "
    "members (EOT / expectation PGD). The **R2S live** page reports both, side by side, and labels which "
    "is which.", icon=":material/warning:")

st.subheader("What is loaded")
index, problem = store.zoo_index()
if problem:
    st.error(f"The zoo index cannot be used: {problem}")
entries = store.zoo_entries()
if entries:
    st.markdown(f"**Zoo** `{store.zoo_dir()}`: {len(entries)} candidate set(s).")
    # a Markdown table, not st.dataframe: the first page of a process then needs neither pandas and
    # Arrow here nor the data-grid bundle in the browser (docs/app-speed.md)
    st.markdown(ui.markdown_table([{"id": f"`{z['id']}`", "title": z.get("title", ""), "data set": z.get("dataset", ""),
                                    "architecture": z.get("arch", ""), "ε": z.get("eps"),
                                    "tickets": len(z.get("tickets", [])),
                                    "dense baseline": "yes" if z.get("dense_baseline") else "no"}
                                   for z in entries]))
    with st.expander("How each set was built"):
        st.markdown("\n".join(f"- `{z['id']}`: `{z['built_with']}`" for z in entries if z.get("built_with")))
else:
    st.markdown(f"**Zoo**: no `index.json` in `{store.zoo_dir()}`.")

summary = state.zoo_summary(st.session_state.get(state.K_ACTIVE))
if summary is not None:           # the first page of a process: described from the index, loaded after it
    c1, c2 = st.columns([1, 4])
    c1.metric("Tickets", len(summary.get("tickets", [])))
    cfg = summary.get("config") or {}
    ratios = ", ".join(f"{t.get('keep_ratio'):g}" for t in summary.get("tickets", []))
    c2.markdown(f"**Active set**: {summary.get('title') or summary['id']} (zoo)  \n"
                f"**Network**: `{summary.get('arch')}` ×{summary.get('width', 1):g} for {summary.get('dataset')}, "
                f"init {cfg.get('init', '?')}, seed {summary.get('seed')}, {cfg.get('granularity', '?')}-wise masks  \n"
                f"**Keep ratios**: {ratios} · weight checksum verified when the set loads")
act = None if summary is not None else state.require_active()
if act is not None:
    cs = act.cs
    spec = cs.spec
    c1, c2 = st.columns([1, 4])
    c1.metric("Tickets", len(cs))
    c2.markdown(f"**Active set**: {act.label} ({act.source})  \n"
                f"**Network**: `{spec.arch}` ×{spec.width:g} for {spec.dataset}, init {spec.init}, seed {spec.seed}, "
                f"{spec.granularity}-wise masks  \n"
                f"**Keep ratios**: {', '.join(f'{t.keep_ratio:g}' for t in cs.tickets)} · weight checksum "
                f"`{cs.weight_checksum[:16]}…`")
sub = store.subset_path()
st.markdown("**Test images**: "
            + (f"`{sub.name}` (shipped subset)" if store.subset_available()
               else f"no test subset at `{sub}` (built with the zoo); pages fall back to data found on disk "
                    "or to synthetic data for sets searched on it."))
st.markdown(f"**Device**: `{state.device()}` (choose in the sidebar)." if state.torch_loaded() else
            "**Device**: GPU when there is one, else CPU (detected after this page; choose in the sidebar).")

st.subheader("Pages")
st.markdown(
    "- **Network**: the seeded random network, its layers and weight checksum, the tickets' kept weights.\n"
    "- **Search**: search a ticket live (progress, curves, stop), add it to the session's set, download it.\n"
    "- **Sparsity**: robust and natural accuracy vs keep ratio, per-layer density; the paper's CIFAR-10 curves beside.\n"
    "- **Transfer**: how adversarial examples of one ticket fool another (attack ticket × inference ticket).\n"
    "- **R2S live**: attack the random switch adaptively and non-adaptively; gallery; attributions.\n"
    "- **Masks**: download tickets, upload a mask file.")
st.caption("Ours = Fashion-MNIST (what this app computes and loads); paper = CIFAR-10 (reference numbers, "
           "shown only in labelled reference panels).")

import preload  # noqa: E402

preload.preload_front_end()        # the other pages' chart and table code, while this page is read
