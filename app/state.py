"""The session: its candidate sets (uploads, search results), the active one, the device.

A candidate set that gains a ticket is a *new* ``CandidateSet`` with a new key: computations cached
per set key never mix two sets.
"""
from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any

import streamlit as st

from store import guidance_text, load_zoo_set, zoo_entries, zoo_entry


# session-state keys (one place, so pages and tests agree)

K_SETS = "session_sets"        # {key: {"label", "source", "cs"}}: uploads and search results
K_ACTIVE = "active_key"        # key of the active candidate set ("zoo:<id>" or a session key)
K_DEVICE = "device"            # "cpu", "cuda:0", ...
K_JOB = "search_job"           # the running / last SearchJob

def show_guidance() -> None:
    st.info(guidance_text())

@dataclass(frozen=True)
class ActiveSet:
    key: str                 # cache key of every computation on this set
    label: str
    source: str              # "zoo" | "upload" | "search"
    cs: Any                  # rst.network.masks.CandidateSet (never mutated)
    zoo_id: str | None = None


_IMPORTED = threading.Event()    # set by the warm-up once torch and rst are imported (or failed to)


def torch_loaded() -> bool:
    """Whether the warm-up has imported torch and ``rst`` in this process (Home renders without them).
    Not ``"torch" in sys.modules``, which holds from the first line of torch's import: a page that
    then imported ``rst`` beside the warm-up thread could deadlock on the two imports' locks."""
    return _IMPORTED.is_set()


def wait_imported() -> None:
    """Before a page imports ``rst``: wait until the warm-up (started if need be) has imported it."""
    warm_up()
    _IMPORTED.wait()


def init_state() -> None:
    ss = st.session_state
    ss.setdefault(K_SETS, {})
    if K_DEVICE not in ss and torch_loaded():       # the device list needs torch: chosen once it is loaded
        ss[K_DEVICE] = default_device()
    keys = set_options()
    if ss.get(K_ACTIVE) not in keys:
        ss[K_ACTIVE] = next(iter(keys), None)


def set_options() -> dict[str, str]:
    """``{key: label}`` of every candidate set this session can use: the zoo's, then its own."""
    # the id first: two zoos may share a title (same architecture, width and data, another recipe)
    out = {f"zoo:{z['id']}": f"zoo · {z['id']}" + (f" · {z['title']}" if z.get("title") else "") for z in zoo_entries()}
    for key, item in st.session_state.get(K_SETS, {}).items():
        out[key] = f"{item['source']} · {item['label']}"
    return out


def set_active(key: str) -> None:
    """Make ``key`` the active set (safe in a widget callback)."""
    st.session_state[K_ACTIVE] = key


def add_session_set(cs, label: str, source: str, activate: bool = True) -> str:
    """Keep ``cs`` in this session (a new key every time: computations never mix two sets)."""
    key = f"{source}:{uuid.uuid4().hex[:12]}"
    sets = dict(st.session_state.get(K_SETS, {}))
    sets[key] = {"label": label, "source": source, "cs": cs}
    st.session_state[K_SETS] = sets
    if activate:
        st.session_state[K_ACTIVE] = key
    return key


def get_set(key: str | None) -> ActiveSet | None:
    """The candidate set behind ``key``; raises MaskFileError when a zoo file cannot be loaded."""
    if not key:
        return None
    if key.startswith("zoo:"):
        zoo_id = key[4:]
        entry = zoo_entry(zoo_id)
        if entry is None:
            return None
        return ActiveSet(key, entry.get("title") or zoo_id, "zoo", load_zoo_set(zoo_id), zoo_id)
    item = st.session_state.get(K_SETS, {}).get(key)
    if item is None:
        return None
    return ActiveSet(key, item["label"], item["source"], item["cs"])


def active_set() -> ActiveSet | None:
    return get_set(st.session_state.get(K_ACTIVE))


def require_active() -> ActiveSet | None:
    """The active set, or None after rendering guidance (or the load error) for the page."""
    from rst.network.masks import MaskFileError
    try:
        act = active_set()
    except MaskFileError as e:
        st.error(f"The active candidate set cannot be loaded: {e}")
        return None
    if act is None:
        show_guidance()
    return act


def with_ticket(cs, ticket):
    """A new candidate set: ``cs``'s tickets plus ``ticket`` (``cs`` is left unchanged)."""
    import dataclasses

    from rst.network.masks import CandidateSet
    meta = {k: v for k, v in cs.meta.items() if k in ("provenance", "extra")}
    name = unique_name(ticket.name or f"keep{ticket.keep_ratio:g}", [t.name for t in cs.tickets])
    if name != ticket.name:              # a copy under its new name: the search's result stays as it was
        ticket = dataclasses.replace(ticket, name=name)
    return CandidateSet(cs.spec, [*cs.tickets, ticket], cs.weight_checksum, meta)


def unique_name(name: str, taken: list[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, … : the first that no ticket of the set has."""
    if name not in taken:
        return name
    return next(f"{name}-{k}" for k in range(2, len(taken) + 3) if f"{name}-{k}" not in taken)


def single_ticket_set(cs, index: int):
    from rst.network.masks import CandidateSet
    meta = {k: v for k, v in cs.meta.items() if k in ("provenance", "extra")}
    return CandidateSet(cs.spec, [cs.tickets[index]], cs.weight_checksum, meta)


@st.cache_data(show_spinner=False, max_entries=32)
def set_bytes(set_key: str, _cs, indices: tuple[int, ...] | None = None) -> bytes:
    """The mask file of the set (or of the tickets ``indices``), from ``rst.network.masks.to_bytes``."""
    from rst.network.masks import CandidateSet, to_bytes
    cs = _cs
    if indices is not None:
        meta = {k: v for k, v in cs.meta.items() if k in ("provenance", "extra")}
        cs = CandidateSet(cs.spec, [cs.tickets[i] for i in indices], cs.weight_checksum, meta)
    return to_bytes(cs)


def ticket_labels(cs) -> list[str]:
    """``name (keep r)``, with the member's switch probability when the set records them."""
    alpha = cs.probabilities or [None] * len(cs.tickets)
    return [f"{t.name or f'ticket {i}'} (keep {t.keep_ratio:g}" + ("" if a is None else f", α {a:.3f}") + ")"
            for i, (t, a) in enumerate(zip(cs.tickets, alpha))]

def devices() -> list[str]:
    from rst.runtime.device import available_devices
    return available_devices()


def default_device() -> str:
    """GPU when there is one, else CPU (the first of ``available_devices()``)."""
    return devices()[0]


def device() -> str:
    return st.session_state.get(K_DEVICE) or default_device()

def default_eps(act: "ActiveSet") -> float:
    """The ε the active set was searched (or its zoo built) with; 0.1 when neither says."""
    entry = zoo_entry(act.zoo_id) if act.zoo_id else None
    return float((entry or {}).get("eps") or act.cs.tickets[0].search_config.get("eps") or 0.1)


# ---------------------------------------------------------------- which images a ticket was searched on

SEARCH_SPLITS = {"train_subset": "train", "train": "train", "subset": "test", "synthetic": "synthetic"}
TEST_MARK = "searched on TEST images"


def search_data_record(source: str, data) -> dict:
    """What a live search trains and validates on, as its ticket records it (``search_config["data"]``)."""
    return {"source": source, "split": SEARCH_SPLITS[source], "train_images": len(data.y_train),
            "val_images": len(data.y_val)}


def mark_search_data(ticket, record: dict):
    """A copy of ``ticket`` whose ``search_config["data"]`` says which images it was searched on; when
    those were test images, its validation metrics' ``split`` says so too (the file carries both)."""
    import dataclasses
    metrics = ticket.metrics
    if record.get("split") == "test":
        metrics = {k: ({**v, "split": f"{v.get('split', 'validation')} (test images)"} if k.startswith("val_") else v)
                   for k, v in metrics.items()}
    return dataclasses.replace(ticket, metrics=metrics, search_config={**ticket.search_config, "data": dict(record)})


def searched_split(ticket) -> str | None:
    """``"train"``, ``"test"`` or ``"synthetic"``: the images the ticket was searched on, when it says."""
    data = ticket.search_config.get("data")
    return data.get("split") if isinstance(data, dict) else None


def searched_on_test(cs) -> list[str]:
    """The names of ``cs``'s tickets that were searched on test images."""
    return [t.name or f"ticket {i}" for i, t in enumerate(cs.tickets) if searched_split(t) == "test"]


def show_test_mark(cs) -> None:
    """A warning naming the tickets of ``cs`` searched on test images (nothing when there are none)."""
    names = searched_on_test(cs)
    if names:
        st.warning(f"{', '.join(names)}: {TEST_MARK} — this set's numbers on the test subset are not held out.",
                   icon=":material/warning:")


# ---------------------------------------------------------------- the first page without torch

def zoo_summary(key: str | None) -> dict | None:
    """The zoo index's entry behind ``key`` when its set is not loaded yet (torch not imported), so that
    Home can describe it without loading; None for a session set or once torch is loaded."""
    if torch_loaded() or not key or not key.startswith("zoo:"):
        return None
    return zoo_entry(key[4:])


_WARM_UP: list[threading.Thread] = []     # the process's one warm-up thread
_WARM_UP_LOCK = threading.Lock()


def warm_up() -> threading.Thread:
    """Once per process, from the server's start (``streamlit_app.py``) or its first script run: import torch, ``rst`` and the modules the pages
    share, set the allocator, load the default zoo set and compute what the Network page shows of it,
    in a background thread, so that the page a user opens next finds them ready (docs/app-speed.md)."""
    with _WARM_UP_LOCK:
        if not _WARM_UP:
            _WARM_UP.append(threading.Thread(target=_warm_up_work, name="rst-warm-up", daemon=True))
            _WARM_UP[0].start()
    return _WARM_UP[0]


def _warm_up_work() -> None:
    try:
        from rst.runtime.allocator import keep_freed_memory
        keep_freed_memory()                        # the app's process owns the allocator setting
        import rst.network.masks  # noqa: F401
        import compute                             # torch, pandas, the reports
        import plotly.graph_objects  # noqa: F401
    finally:
        _IMPORTED.set()                            # a failed import is the page's to report
    entries = zoo_entries()
    if entries:
        try:
            act = get_set(f"zoo:{entries[0]['id']}")
            compute.network_summary(compute.spec_json(act.cs.spec))
            for i in range(len(act.cs)):
                compute.ticket_layer_stats(act.key, act.cs, i)
        except Exception:                          # the page that needs it says why, in one line
            pass

