"""Cached wrappers and small glue between the Streamlit pages and ``rst``.

Pages render; ``rst`` computes. This module only (1) finds things on disk (the zoo, the shipped
test subset), (2) caches what ``rst`` returns — ``st.cache_resource`` for candidate sets and
networks keyed by hashable ids (file path + mtime, SHA-256 of uploaded bytes, the network spec as
JSON), ``st.cache_data`` for computed tables — and (3) holds the session's candidate sets.

Cached objects are shared by every session and are never changed in place: a candidate set that
gains a ticket is a *new* ``CandidateSet`` with a new list.

Environment:
    RST_ZOO_DIR       the zoo folder (default ``<repo>/pretrained_masks``; holds ``index.json``)
    RST_TEST_SUBSET   the test subset file (default ``<repo>/assets/fashion_mnist_test_subset.safetensors``)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
ZOO_ENV, SUBSET_ENV = "RST_ZOO_DIR", "RST_TEST_SUBSET"
DEFAULT_ZOO = REPO_ROOT / "pretrained_masks"
DEFAULT_SUBSET = REPO_ROOT / "assets" / "fashion_mnist_test_subset.safetensors"
PAPER_JSON = REPO_ROOT / "assets" / "paper_cifar10.json"
ZOO_BUILD_CMD = "python -m rst zoo build fmnist"
INDEX_FORMAT, INDEX_VERSION = "rst-zoo-index", 1
CLASSES = {
    "fashion_mnist": ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"),
    "cifar10": ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

# session-state keys (one place, so pages and tests agree)
K_SETS = "session_sets"        # {key: {"label", "source", "cs"}}: uploads and search results
K_ACTIVE = "active_key"        # key of the active candidate set ("zoo:<id>" or a session key)
K_DEVICE = "device"            # "cpu", "cuda:0", ...
K_JOB = "search_job"           # the running / last SearchJob


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------


def zoo_dir() -> Path:
    return Path(os.environ.get(ZOO_ENV) or DEFAULT_ZOO)


def subset_path() -> Path:
    return Path(os.environ.get(SUBSET_ENV) or DEFAULT_SUBSET)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _guidance_text() -> str:
    return (f"**No tickets loaded yet.** Three ways to get some:\n\n"
            f"1. build the zoo of pre-searched tickets: `{ZOO_BUILD_CMD}` (writes `{zoo_dir()}`), then reload;\n"
            f"2. upload a mask file (`*.rst.safetensors`) on the **Masks** page;\n"
            f"3. search a ticket live on the **Search** page (seconds on a CPU with the `tiny` preset).")


def show_guidance() -> None:
    st.info(_guidance_text())


# --------------------------------------------------------------------------------------------
# The zoo
# --------------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=8)
def _read_index(path: str, mtime: float) -> tuple[dict | None, str | None]:
    try:
        index = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path} cannot be read: {e}"
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        return None, f"{path} is not an RST zoo index (format {index.get('format') if isinstance(index, dict) else None!r})"
    if index.get("version") != INDEX_VERSION:
        return None, f"{path} has zoo index version {index.get('version')!r}; this app reads version {INDEX_VERSION}"
    zoos = index.get("zoos")
    if not isinstance(zoos, list) or not all(isinstance(z, dict) and "id" in z and "candidate_set" in z for z in zoos):
        return None, f"{path}: 'zoos' must be a list of entries with 'id' and 'candidate_set'"
    return index, None


def zoo_index() -> tuple[dict | None, str | None]:
    """``(index, problem)``: the parsed ``index.json`` or None, and why not (None when simply absent)."""
    path = zoo_dir() / "index.json"
    mtime = _mtime(path)
    if mtime is None:
        return None, None
    return _read_index(str(path), mtime)


def zoo_entries() -> list[dict]:
    index, _ = zoo_index()
    return list(index["zoos"]) if index else []


def zoo_entry(zoo_id: str) -> dict | None:
    return next((z for z in zoo_entries() if z["id"] == zoo_id), None)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_cs_file(path: str, mtime: float):
    from rst.masks import load_tickets
    return load_tickets(path)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_cs_bytes(digest: str, _data: bytes):
    from rst.masks import load_tickets
    return load_tickets(_data)


def load_zoo_set(zoo_id: str):
    """The zoo entry's candidate set (cached by path + mtime); raises MaskFileError / FileNotFoundError."""
    from rst.masks import MaskFileError
    entry = zoo_entry(zoo_id)
    if entry is None:
        raise MaskFileError(f"no zoo entry {zoo_id!r} in {zoo_dir() / 'index.json'}")
    path = zoo_dir() / entry["candidate_set"]
    mtime = _mtime(path)
    if mtime is None:
        raise MaskFileError(f"the zoo index names {path}, which does not exist; rebuild with `{ZOO_BUILD_CMD}`")
    return _load_cs_file(str(path), mtime)


def zoo_report(zoo_id: str, kind: str) -> dict | list | None:
    """A stored report of a zoo entry (``curve``, ``transfer``, ``r2s``, ``autoattack``), or None."""
    entry = zoo_entry(zoo_id)
    rel = ((entry or {}).get("reports") or {}).get(kind)
    if not rel:
        return None
    path = zoo_dir() / rel
    mtime = _mtime(path)
    if mtime is None:
        return None
    return _read_json(str(path), mtime)


@st.cache_data(show_spinner=False, max_entries=32)
def _read_json(path: str, mtime: float):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def dense_baseline_path(zoo_id: str) -> Path | None:
    entry = zoo_entry(zoo_id) or {}
    rel = entry.get("dense_baseline")
    if not rel:
        return None
    path = zoo_dir() / rel
    return path if path.is_file() else None


@st.cache_data(show_spinner=False)
def paper_reference() -> dict:
    return json.loads(PAPER_JSON.read_text())


# --------------------------------------------------------------------------------------------
# Uploads
# --------------------------------------------------------------------------------------------


def parse_upload(data: bytes):
    """Validate and load an uploaded mask file (never unpickled); raises MaskFileError with the reason."""
    from rst.masks import MAX_FILE_BYTES, MaskFileError
    if len(data) > MAX_FILE_BYTES:
        raise MaskFileError(f"the file is {len(data) / 2**20:.1f} MiB, over the {MAX_FILE_BYTES / 2**20:.0f} MiB "
                            "limit for mask files")
    return _load_cs_bytes(hashlib.sha256(data).hexdigest(), data)


def upload_metadata(data: bytes) -> dict:
    from rst.masks import read_metadata
    return read_metadata(data)


# --------------------------------------------------------------------------------------------
# The session's candidate sets and the active one
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveSet:
    key: str                 # cache key of every computation on this set
    label: str
    source: str              # "zoo" | "upload" | "search"
    cs: Any                  # rst.masks.CandidateSet (never mutated)
    zoo_id: str | None = None


def init_state() -> None:
    ss = st.session_state
    ss.setdefault(K_SETS, {})
    if K_DEVICE not in ss:
        ss[K_DEVICE] = default_device()
    keys = set_options()
    if ss.get(K_ACTIVE) not in keys:
        ss[K_ACTIVE] = next(iter(keys), None)


def set_options() -> dict[str, str]:
    """``{key: label}`` of every candidate set this session can use: the zoo's, then its own."""
    out = {f"zoo:{z['id']}": f"zoo · {z.get('title') or z['id']}" for z in zoo_entries()}
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
    from rst.masks import MaskFileError
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
    from rst.masks import CandidateSet
    meta = {k: v for k, v in cs.meta.items() if k in ("provenance", "extra")}
    return CandidateSet(cs.spec, [*cs.tickets, ticket], cs.weight_checksum, meta)


def single_ticket_set(cs, index: int):
    from rst.masks import CandidateSet
    meta = {k: v for k, v in cs.meta.items() if k in ("provenance", "extra")}
    return CandidateSet(cs.spec, [cs.tickets[index]], cs.weight_checksum, meta)


@st.cache_data(show_spinner=False, max_entries=32)
def set_bytes(set_key: str, _cs, indices: tuple[int, ...] | None = None) -> bytes:
    """The mask file of the set (or of the tickets ``indices``), from ``rst.masks.to_bytes``."""
    from rst.masks import CandidateSet, to_bytes
    cs = _cs
    if indices is not None:
        meta = {k: v for k, v in cs.meta.items() if k in ("provenance", "extra")}
        cs = CandidateSet(cs.spec, [cs.tickets[i] for i in indices], cs.weight_checksum, meta)
    return to_bytes(cs)


def ticket_labels(cs) -> list[str]:
    return [f"{t.name or f'ticket {i}'} (keep {t.keep_ratio:g})" for i, t in enumerate(cs.tickets)]


def plot(fig, key: str) -> None:
    """``st.plotly_chart`` with the app's layout: the tool bar stands vertically at the right, so it
    never covers a title; titles start at the left."""
    fig.update_layout(modebar=dict(orientation="v"), title=dict(x=0.0, xanchor="left"))
    fig.update_layout(margin=dict(r=max(48, (fig.layout.margin.r or 0))))   # room for the vertical tool bar
    if fig.layout.legend.orientation is None:          # a legend left alone: above the plot, not under the tools
        has_title = bool(fig.layout.title.text)
        fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0),
                          margin=dict(t=max(fig.layout.margin.t or 0, 90 if has_title else 50)))
        if has_title:
            fig.update_layout(title=dict(y=0.99, yanchor="top"))
    st.plotly_chart(fig, width="stretch", key=key)


# --------------------------------------------------------------------------------------------
# Device
# --------------------------------------------------------------------------------------------


def devices() -> list[str]:
    from rst.device import available_devices
    return available_devices()


def default_device() -> str:
    """GPU when there is one, else CPU (the first of ``available_devices()``)."""
    return devices()[0]


def device() -> str:
    return st.session_state.get(K_DEVICE) or default_device()


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def network_summary(spec_json: str) -> dict:
    """Layers, weight counts, init and checksum of the seeded random network of ``spec_json``."""
    from rst.masked import masked_layers
    from rst.models import NetworkSpec, build_network
    from rst.weights import weight_checksum
    spec = NetworkSpec.from_dict(json.loads(spec_json))
    net = build_network(spec)
    rows = [{"layer": name, "type": type(layer).__name__, "shape": "×".join(map(str, layer.weight.shape)),
             "weights": layer.weight.numel(), "scores": layer.scores.numel()} for name, layer in masked_layers(net)]
    return {"rows": rows, "total": sum(r["weights"] for r in rows), "checksum": weight_checksum(net),
            "bn_layers": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())}


def spec_json(spec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


@st.cache_data(show_spinner=False, max_entries=64)
def ticket_layer_stats(set_key: str, _cs, index: int) -> list[dict]:
    """``rst.layer_stats`` of ticket ``index``: per layer weights, kept weights, density."""
    from rst.masked import layer_stats
    return [{**r, "shape": "×".join(map(str, r["shape"]))} for r in layer_stats(_cs.model(index))]


# --------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalData:
    x: torch.Tensor          # (N, C, H, W) in [0, 1]
    y: torch.Tensor          # (N,)
    description: str


@st.cache_data(show_spinner=False, max_entries=4)
def _subset(path: str, mtime: float):
    from rst.data import load_subset
    return load_subset(path)


@st.cache_data(show_spinner=False, max_entries=4)
def _test_split(dataset: str):
    from rst.data import load_dataset
    return load_dataset(dataset, train=False, download=False)


def subset_available() -> bool:
    return _mtime(subset_path()) is not None


def subset_dataset() -> str | None:
    """The data set the shipped test subset is of (None when absent or unreadable)."""
    path = subset_path()
    mtime = _mtime(path)
    if mtime is None:
        return None
    try:
        return _subset(str(path), mtime)[2].get("dataset")
    except ValueError:
        return None


def eval_data(dataset: str, n: int | None = None) -> EvalData:
    """The first ``n`` test images of ``dataset``: the shipped subset when it is of that data set,
    else the local test split (``download=False``). Raises ``DataUnavailableError`` with guidance."""
    from rst.data import DataUnavailableError
    path = subset_path()
    mtime = _mtime(path)
    if mtime is not None:
        try:
            x, y, meta = _subset(str(path), mtime)
        except ValueError as e:       # a corrupt or foreign file: say so, never a traceback
            raise DataUnavailableError(f"The test subset {path} cannot be read: {e}. Rebuild it with "
                                       f"`{ZOO_BUILD_CMD}` or point {SUBSET_ENV} at another file.") from None
        if meta.get("dataset") == dataset:
            n = len(x) if n is None else min(n, len(x))
            return EvalData(x[:n], y[:n], f"{n} images of the shipped test subset ({meta.get('source') or path.name})")
    try:
        x, y = _test_split(dataset)
    except DataUnavailableError as e:
        raise DataUnavailableError(
            f"No {dataset} test images here: the test subset {path} is "
            f"{'absent' if mtime is None else 'of another data set'} and the test split is not on disk ({e}). "
            f"Build the zoo (`{ZOO_BUILD_CMD}` also writes the subset), or set {SUBSET_ENV}.") from None
    n = len(x) if n is None else min(n, len(x))
    what = "synthetic test split (seeded)" if dataset == "synthetic" else f"{dataset} test split on disk"
    return EvalData(x[:n], y[:n], f"first {n} images of the {what}")


def max_eval_images(dataset: str) -> int:
    """How many test images of ``dataset`` there are (0: none; ``eval_data`` then says why)."""
    from rst.data import DataUnavailableError
    try:
        return len(eval_data(dataset).y)
    except (DataUnavailableError, ValueError):
        return 0


def require_eval_images(dataset: str) -> int:
    """The number of test images of ``dataset``; when there are none, say why and stop the page."""
    from rst.data import DataUnavailableError
    n = max_eval_images(dataset)
    if n == 0:
        try:
            eval_data(dataset, 1)
        except (DataUnavailableError, ValueError) as e:
            st.warning(str(e))
        st.stop()
    return n


def default_eps(act: "ActiveSet") -> float:
    """The ε the active set was searched (or its zoo built) with; 0.1 when neither says."""
    entry = zoo_entry(act.zoo_id) if act.zoo_id else None
    return float((entry or {}).get("eps") or act.cs.tickets[0].search_config.get("eps") or 0.1)


# --------------------------------------------------------------------------------------------
# Attacks, metrics
# --------------------------------------------------------------------------------------------


ATTACK_LABELS = {"pgd": "PGD", "fgsm": "FGSM", "cw": "CW-L∞ (PGD on the margin loss)"}


def attack_config(name: str, eps: float, steps: int, alpha: float | None = None, early_stop: bool = False):
    """An ``AttackConfig``; step size ``eps/4`` unless given (the paper: 2/255 for 8/255)."""
    from rst.attacks import AttackConfig
    return AttackConfig(name=name, eps=float(eps), alpha=float(alpha if alpha is not None else eps / 4),
                        steps=int(steps), early_stop=early_stop)


def pick_metric(metrics: dict | None, kind: str) -> dict | None:
    """The metric of ``kind`` ("robust" or "clean") in a ``{name: {value, split, attack}}`` dict,
    preferring the test split; returns ``{"name", "value", "split", "attack"}`` or None."""
    if not metrics:
        return None
    words = ("robust", "pgd", "adv") if kind == "robust" else ("clean", "natural", "nat")
    found = []
    for name, m in metrics.items():
        value = m.get("value") if isinstance(m, dict) else m
        if not isinstance(value, (int, float)) or not any(w in name.lower() for w in words):
            continue
        if kind == "clean" and any(w in name.lower() for w in ("robust", "pgd", "adv")):
            continue
        split = m.get("split", "") if isinstance(m, dict) else ""
        attack = m.get("attack", "") if isinstance(m, dict) else ""
        found.append((not str(split).startswith("test"), "autoattack" in name.lower(), name,
                      {"name": name, "value": float(value), "split": split, "attack": attack}))
    return sorted(found, key=lambda t: t[:3])[0][3] if found else None


def as_percent(v: float | None) -> float | None:
    """Accuracies are stored as fractions in [0, 1]; the app shows percent."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return 100.0 * v if v <= 1.0 else float(v)


@contextlib.contextmanager
def _progress_bar(text: str, quiet: bool = False):
    """A progress bar for the body of a ``st.cache_data`` function, as ``callback(done, total)``.

    Its block is created *inside* the cached function (a cached function may only write to blocks
    it created: Streamlit replays those messages on a cache hit) and is emptied at the end, so a
    replay shows nothing. ``quiet=True`` (the benchmark, outside a Streamlit run) draws nothing.
    """
    if quiet:
        yield None
        return
    holder = st.empty()
    bar = holder.progress(0.0, text=text)

    def update(done, total=None, *_):
        if total:
            bar.progress(min(1.0, float(done) / float(total)), text=f"{text} {done}/{total}")

    try:
        yield update
    finally:
        holder.empty()


# --------------------------------------------------------------------------------------------
# Sparsity curve
# --------------------------------------------------------------------------------------------


def stored_curve(zoo_id: str | None, cs) -> tuple[list[dict], str] | None:
    """Curve rows {name, keep_ratio, clean, robust, attack} from the zoo's report or the tickets'
    recorded metrics, and where they come from; None when neither has them."""
    if zoo_id is not None:
        rep = zoo_report(zoo_id, "curve")
        rows = rep.get("rows") if isinstance(rep, dict) else rep
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and "keep_ratio" in r for r in rows):
            extra = f", {rep.get('n_images')} test images" if isinstance(rep, dict) and rep.get("n_images") else ""
            return [dict(r) for r in rows], f"stored zoo report{extra}"
    rows = []
    metas = {t["name"]: t for t in (zoo_entry(zoo_id) or {}).get("tickets", [])} if zoo_id else {}
    for t in cs.tickets:
        metrics = (metas.get(t.name) or {}).get("metrics") or t.metrics
        rob, cln = pick_metric(metrics, "robust"), pick_metric(metrics, "clean")
        if rob is None or cln is None:
            return None
        rows.append({"name": t.name, "keep_ratio": t.keep_ratio, "clean": cln["value"], "robust": rob["value"],
                     "attack": rob["attack"], "split": rob["split"]})
    splits = sorted({r["split"] for r in rows if r.get("split")})
    return rows, f"metrics recorded with the tickets ({', '.join(splits) or 'split not recorded'})"


def stored_autoattack(zoo_id: str | None) -> tuple[dict[str, float], str] | None:
    """``({ticket name: AutoAttack robust accuracy}, description)`` from the zoo's report, or None."""
    rep = zoo_report(zoo_id, "autoattack") if zoo_id else None
    rows = rep.get("rows") if isinstance(rep, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    acc = {str(r["name"]): float(r["robust"]) for r in rows if isinstance(r, dict) and "name" in r and "robust" in r}
    r0 = rows[0]
    return acc, (f"AutoAttack {r0.get('version', '')} ({', '.join(r0.get('attacks') or [])}), "
                 f"eps={r0.get('eps')}, {r0.get('n_images')} test images")


@st.cache_data(show_spinner=False, max_entries=16)
def sparsity_rows(set_key: str, _cs, n_images: int, attack_json: str, dev: str) -> list[dict]:
    """``rst.evaluate.sparsity_curve`` of every ticket on the first ``n_images`` test images."""
    from rst.attacks import AttackConfig
    from rst.evaluate import sparsity_curve
    data = eval_data(_cs.spec.dataset, n_images)
    attack = AttackConfig.from_dict(json.loads(attack_json))
    with _progress_bar("attacking every ticket:") as progress:
        rows = sparsity_curve(_cs, data.x, data.y, attack, device=dev, progress=progress)
    return [dict(r) for r in rows]


# --------------------------------------------------------------------------------------------
# Transfer matrix
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferView:
    """What the Transfer page draws: robust accuracy (fractions) of inference ticket (column)
    on adversarial examples of attack ticket (row)."""
    names: list[str]
    keep_ratios: list[float]
    matrix: list[list[float]]        # (K, K): rows attack ticket, columns inference ticket
    label: str
    attack: str
    early_stop: bool | None
    n_images: int | None
    source: str


def transfer_from_result(res, source: str) -> TransferView:
    m = res.matrix
    matrix = m.tolist() if hasattr(m, "tolist") else [list(r) for r in m]
    attack = res.attack.describe() if hasattr(res.attack, "describe") else str(res.attack)
    return TransferView(list(res.names), [float(k) for k in res.keep_ratios], matrix, str(res.label), attack,
                        bool(res.early_stop), int(res.n_images), source)


def _transfer_view(rep: dict, source: str) -> TransferView | None:
    if not isinstance(rep, dict) or "matrix" not in rep:
        return None
    matrix = [[float(v) for v in row] for row in rep["matrix"]]
    k = len(matrix)
    ratios = [float(r) for r in rep.get("keep_ratios") or [math.nan] * k]
    names = rep.get("names") or [f"keep {r:g}" for r in ratios]
    attack = rep.get("attack")
    if isinstance(attack, dict):
        from rst.attacks import AttackConfig
        attack = AttackConfig.from_dict(attack).describe()
    early = rep.get("early_stop")
    label = rep.get("label") or f"transfer ({attack})"
    return TransferView(list(names), ratios, matrix, str(label), str(attack or ""),
                        None if early is None else bool(early), rep.get("n_images"), source)


def stored_transfer(zoo_id: str | None) -> dict[bool | None, TransferView]:
    """The zoo's stored transfer matrices by early-stop flag: the report holds
    ``{"without_early_stop": TransferResult.to_dict(), "with_early_stop": ...}`` (or one matrix)."""
    rep = zoo_report(zoo_id, "transfer") if zoo_id else None
    if not isinstance(rep, dict):
        return {}
    parts = [(v, k) for k, v in rep.items() if k in ("without_early_stop", "with_early_stop")] or [(rep, None)]
    out = {}
    for part, key in parts:
        try:
            view = _transfer_view(part, "stored zoo report")
        except (ValueError, TypeError, KeyError):
            view = None
        if view is not None:
            early = view.early_stop if view.early_stop is not None else (key == "with_early_stop" if key else None)
            out[early] = view
    return out


@st.cache_data(show_spinner=False, max_entries=16)
def transfer_live(set_key: str, _cs, n_images: int, attack_json: str, early_stop: bool, dev: str) -> TransferView:
    """``rst.evaluate.transfer_matrix`` on the first ``n_images`` test images."""
    from rst.attacks import AttackConfig
    from rst.evaluate import transfer_matrix
    data = eval_data(_cs.spec.dataset, n_images)
    attack = AttackConfig.from_dict(json.loads(attack_json))
    with _progress_bar("attacked images:") as progress:
        res = transfer_matrix(_cs, data.x, data.y, attack, early_stop=early_stop, device=dev, progress=progress)
    return transfer_from_result(res, f"computed live on {data.description}")


# --------------------------------------------------------------------------------------------
# R2S live
# --------------------------------------------------------------------------------------------

# attack choice -> (label, how it is computed). "protocol:*" go to rst.r2s.evaluate_r2s;
# "deployed:*" attack the switching model as served (a gradient query sees whichever member the
# switch draws); "member" attacks one member and transfers (glue below).
R2S_ATTACKS = {
    "protocol:expectation": "Expectation PGD: mean loss over all members (adaptive)",
    "protocol:ensemble": "Ensemble PGD: mean logits of all members (adaptive)",
    "protocol:eot": "EOT-PGD: gradients averaged over sampled switches (adaptive)",
    "protocol:autoattack_rand": "AutoAttack, version='rand' (adaptive, EOT)",
    "protocol:paper": "Paper's protocol: PGD on one random member, inferred by another (non-adaptive)",
    "deployed:pgd": "PGD on the deployed switching model (naive)",
    "deployed:fgsm": "FGSM on the deployed switching model (naive)",
    "deployed:cw": "CW-L∞ on the deployed switching model (naive)",
    "member": "Transfer from one member: PGD on member i, inferred by R2S (non-adaptive)",
}


def stored_r2s(zoo_id: str | None) -> tuple[list[dict], dict] | None:
    """Rows (accuracies as fractions) and config of the zoo's stored R2S report
    (``rst.r2s.R2SReport.to_dict()``), or None."""
    rep = zoo_report(zoo_id, "r2s") if zoo_id else None
    if not isinstance(rep, dict) or not isinstance(rep.get("results"), list):
        return None
    rows = [{"what": "R2S · clean", "adaptive": False, "attack": "none", "expected": rep.get("clean_expected_acc"),
             "worst member": min(rep.get("clean_per_member_acc") or [math.nan])}]
    for r in rep["results"]:
        rows.append({"what": f"R2S · {r.get('protocol')}", "adaptive": bool(r.get("adaptive")),
                     "attack": r.get("attack", ""), "expected": r.get("expected_acc"),
                     "worst member": r.get("worst_member_acc")})
    if rep.get("worst_case_per_member_acc"):
        rows.append({"what": "R2S · worst case over adaptive attacks", "adaptive": True, "attack": "all adaptive",
                     "expected": rep.get("worst_case_adaptive_acc"),
                     "worst member": min(rep["worst_case_per_member_acc"])})
    return rows, dict(rep.get("config") or {})


@dataclass
class R2SLive:
    table: list[dict]                # one row per attack / single ticket, accuracies as fractions
    per_member: list[dict]           # one row per (attack, member)
    sanity: list[dict]
    report_frame: Any                # rst's R2SReport.to_frame() of the library protocols
    gallery: dict                    # x, x_adv (G, C, H, W) numpy, y, preds clean/adv (K, G), attack label
    members: list[str]
    n_images: int
    data: str
    seconds: float


def _member_accs(r2s, x_adv: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> list[float]:
    """Accuracy of every member on ``x_adv``, as a list of K fractions (exact expectation)."""
    from rst.r2s import member_correct
    dev = next(r2s.parameters()).device
    ok = torch.cat([member_correct(r2s, x_adv[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)).cpu()
                    for i in range(0, len(y), batch_size)], dim=1)                # (K, N)
    return ok.float().mean(1).tolist()


def _member_preds(r2s, x: torch.Tensor) -> list[list[int]]:
    dev = next(r2s.parameters()).device
    with torch.no_grad():
        return r2s.member_logits(x.to(dev)).argmax(-1).cpu().tolist()          # (K, G)


def _glue_attack(kind: str, r2s, x, y, eps: float, steps: int, seed: int, source_k: int):
    """x_adv for the attacks the library's protocols do not cover (returns x_adv on CPU, description):
    ``deployed:<name>`` attacks the switching model as served (each gradient query sees the member the
    switch draws), ``member`` attacks member ``source_k`` alone (transfer), ``expectation`` is the
    library's exact-EOT loss (used for the gallery of the protocol attacks)."""
    from rst.attacks import run_attack
    from rst.r2s import expectation_loss
    dev = next(r2s.parameters()).device
    name = kind.split(":", 1)[1] if kind.startswith("deployed:") else "pgd"
    cfg = attack_config(name, eps, steps)
    g = torch.Generator(device=dev).manual_seed(seed)
    xd, yd = x.to(dev), y.to(dev)
    if kind == "member":
        with r2s.use_member(source_k):
            x_adv = run_attack(cfg, r2s, xd, yd, generator=g)
        return x_adv.cpu(), f"{cfg.describe()} on member {r2s.names[source_k]} alone, transferred"
    if kind == "expectation":
        x_adv = run_attack(cfg, r2s, xd, yd, generator=g, loss=expectation_loss)
        return x_adv.cpu(), f"{cfg.describe()} on the mean loss over all members (exact expectation)"
    r2s.reseed(seed)
    x_adv = run_attack(cfg, r2s, xd, yd, generator=g)
    return x_adv.cpu(), f"{cfg.describe()} on the deployed switching model (switch='{r2s.switch}')"


def r2s_live(set_key: str, cs, members: tuple[int, ...], switch: str, attack: str, eps: float, steps: int,
             n_images: int, seed: int, dev: str, source_member: int = 0, compare: bool = True,
             gallery_size: int = 8, quiet: bool = False) -> R2SLive:
    """The R2S live evaluation the page shows (cached per session-independent arguments).

    ``compare=True`` also runs the paper's protocol on the same images and settings — K more
    single-member PGD attacks, whose transfer matrix's diagonal is each ticket's white-box accuracy
    (about twice the time of the chosen attack alone)."""
    return _r2s_live(set_key, cs, tuple(members), switch, attack, float(eps), int(steps), int(n_images), int(seed),
                     dev, int(source_member), bool(compare), int(gallery_size), quiet)


@st.cache_data(show_spinner=False, max_entries=16)
def _r2s_live(set_key: str, _cs, members: tuple[int, ...], switch: str, attack: str, eps: float, steps: int,
              n_images: int, seed: int, dev: str, source_member: int, compare: bool, gallery_size: int,
              quiet: bool = False) -> R2SLive:
    from rst.r2s import R2S, evaluate_r2s
    t0 = time.perf_counter()
    data = eval_data(_cs.spec.dataset, n_images)
    x, y = data.x, data.y
    r2s = R2S(_cs, members=list(members), switch=switch, seed=seed, device=dev)
    names = list(r2s.names)
    # the paper's protocol always (its transfer matrix's diagonal is every member's white-box accuracy)
    protocols = ["paper"] if compare or attack == "protocol:paper" else []
    if attack.startswith("protocol:") and attack != "protocol:paper":
        protocols.append(attack.split(":", 1)[1])
    with _progress_bar("attack batches:", quiet) as progress:
        report = evaluate_r2s(r2s, x, y, eps=eps, steps=steps, protocols=tuple(protocols), seed=seed,
                              progress=progress)
    rows = {}
    per_member = []
    for res in report.results:
        label = f"R2S · {res.protocol}"
        rows[res.protocol] = {"what": label, "threat model": res.threat_model, "adaptive": bool(res.adaptive),
                              "attack": res.attack, "expected": res.expected_acc,
                              "worst member": res.worst_member_acc, "clean": report.clean_expected_acc}
        per_member += [{"attack": label, "member": n, "accuracy": a} for n, a in zip(names, res.per_member_acc)]
    chosen = attack.split(":", 1)[1] if attack.startswith("protocol:") else None
    table = [rows[chosen]] if chosen else []
    if chosen is None:
        k_src = list(members).index(source_member) if attack == "member" else 0
        x_adv, desc = _glue_attack(attack, r2s, x, y, eps, steps, seed, k_src)
        accs = _member_accs(r2s, x_adv, y)
        label = (f"R2S · transfer from {names[k_src]}" if attack == "member"
                 else f"R2S · {attack.split(':', 1)[1]} on the deployed model")
        table.append({"what": label, "threat model": R2S_ATTACKS[attack], "adaptive": False, "attack": desc,
                      "expected": sum(accs) / len(accs), "worst member": min(accs),
                      "clean": report.clean_expected_acc})
        per_member = [{"attack": label, "member": n, "accuracy": a} for n, a in zip(names, accs)] + per_member
    if chosen != "paper" and "paper" in rows:
        table.append(rows["paper"])
    table.append({"what": "R2S · clean", "threat model": "no attack", "adaptive": False, "attack": "none",
                  "expected": report.clean_expected_acc, "worst member": min(report.clean_per_member_acc),
                  "clean": report.clean_expected_acc})
    # every member alone, attacked white-box: the diagonal of the paper protocol's transfer matrix
    if "paper" in rows:
        paper = report.result("paper")
        diag = [row[k] for k, row in enumerate(paper.extra["transfer_matrix"])]
        for k, name in enumerate(names):
            table.append({"what": f"ticket {name} alone", "threat model": "white-box, single network",
                          "adaptive": True, "attack": paper.attack, "expected": diag[k], "worst member": diag[k],
                          "clean": report.clean_per_member_acc[k]})
    # gallery: the chosen attack's images (the exact expectation attack for the library protocols)
    g_n = min(gallery_size, len(x))
    xg, yg = x[:g_n], y[:g_n]
    if chosen is None:
        xg_adv, g_desc = _glue_attack(attack, r2s, xg, yg, eps, steps, seed,
                                      list(members).index(source_member) if attack == "member" else 0)
    else:
        xg_adv, g_desc = _glue_attack("expectation", r2s, xg, yg, eps, steps, seed, 0)
    gallery = {"x": xg.numpy(), "x_adv": xg_adv.numpy(), "y": yg.tolist(), "clean_preds": _member_preds(r2s, xg),
               "adv_preds": _member_preds(r2s, xg_adv), "attack": g_desc}
    sanity = [{"check": c.name, "passed": bool(c.passed), "detail": c.detail} for c in report.sanity]
    return R2SLive(table, per_member, sanity, report.to_frame(), gallery, names, len(y), data.description,
                   time.perf_counter() - t0)


@st.cache_data(show_spinner=False, max_entries=32)
def attributions(set_key: str, _cs, members: tuple[int, ...], image_index: int, method: str,
                 n_images: int, dev: str) -> dict:
    """Captum attributions of test image ``image_index`` for every member (w.r.t. the true class)."""
    from captum.attr import IntegratedGradients, Saliency
    data = eval_data(_cs.spec.dataset, n_images)
    x = data.x[image_index:image_index + 1]
    y = int(data.y[image_index])
    maps, preds = [], []
    for i in members:
        model = _cs.model(i, device=dev)
        xi = x.to(dev).clone().requires_grad_(True)          # never flag the cached tensor
        if method == "IntegratedGradients":
            attr = IntegratedGradients(model).attribute(xi, baselines=torch.zeros_like(xi), target=y, n_steps=32)
        else:
            attr = Saliency(model).attribute(xi, target=y, abs=True)
        maps.append(attr.detach().cpu()[0].sum(0).numpy())                 # (H, W), channels summed
        with torch.no_grad():
            preds.append(int(model(x.to(dev)).argmax(1)))
    return {"image": x[0].numpy(), "label": y, "maps": maps, "preds": preds,
            "names": [_cs.tickets[i].name or f"ticket {i}" for i in members]}


# --------------------------------------------------------------------------------------------
# Live search in a background thread
# --------------------------------------------------------------------------------------------


@dataclass
class SearchJob:
    """``rst.search.run_search`` in a daemon thread; the page polls it (``st.fragment(run_every=)``).

    ``stop()`` sets an event that ``run_search``'s ``should_stop`` reads after every optimiser step:
    the search ends its epoch at once (validation of the partial epoch, best state restored) and
    returns a ticket with ``stopped=True``.
    """
    cfg: Any
    data: Any
    device: str
    data_label: str = ""
    steps: list = field(default_factory=list)          # step events
    epochs: list = field(default_factory=list)         # epoch events
    result: Any = None
    error: str | None = None
    error_trace: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rst-search-{self.id}", daemon=True)

    def start(self) -> "SearchJob":
        self._thread.start()
        return self

    def _run(self) -> None:
        from rst.search import run_search
        try:
            self.result = run_search(self.cfg, device=self.device, data=self.data, progress=self._on_event,
                                     should_stop=self._stop.is_set)
        except Exception as e:   # noqa: BLE001 - reported to the user on the page, with the traceback
            self.error = f"{type(e).__name__}: {e}"
            self.error_trace = traceback.format_exc()
        finally:
            self.finished = time.time()

    def _on_event(self, event: dict) -> None:
        (self.steps if event["event"] == "step" else self.epochs).append(dict(event))

    def stop(self) -> None:
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def fraction_done(self) -> float:
        if self.finished is not None and self.error is None:
            return 1.0
        if not self.steps:
            return 0.0
        e = self.steps[-1]
        return min(1.0, (e["epoch"] * e["steps"] + e["step"]) / max(1, e["epochs"] * e["steps"]))


def search_data(source: str, cfg, n_train: int):
    """``SearchData`` for a live search: ``"synthetic"``, ``"subset"`` (the shipped *test* subset, a
    demo only) or ``"train"`` (the data set's training split on disk). Returns (data, label)."""
    from rst.data import split_train_val, synthetic_dataset
    from rst.search import SearchData
    spec = cfg.network_spec()
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    if source == "synthetic":
        x, y = synthetic_dataset(n_train + cfg.val_size, shape=shape, num_classes=spec.num_classes, seed=cfg.seed)
        label = f"synthetic data ({n_train} train + {cfg.val_size} validation images)"
    elif source == "subset":
        path = subset_path()
        mtime = _mtime(path)
        if mtime is None:
            raise FileNotFoundError(f"no test subset at {path}")
        try:
            x, y, meta = _subset(str(path), mtime)
        except ValueError as e:
            raise FileNotFoundError(f"the test subset {path} cannot be read: {e}") from None
        x, y = x[:n_train + cfg.val_size], y[:n_train + cfg.val_size]
        label = (f"the shipped test subset ({meta.get('dataset')}, {len(y)} images) — a demo: the other pages "
                 "evaluate on these same images")
    else:
        x, y = _train_split(cfg.dataset)
        x, y = x[:n_train + cfg.val_size], y[:n_train + cfg.val_size]
        label = f"{cfg.dataset} training split ({len(y)} images)"
    if tuple(x.shape[1:]) != shape:
        raise ValueError(f"the data's images are {tuple(x.shape[1:])}, the network expects {shape}: "
                         "pick a network of this data set's geometry")
    val = min(cfg.val_size, max(1, len(y) // 5))
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, val, seed=cfg.seed)
    return SearchData(x_tr, y_tr, x_val, y_val), label


@st.cache_data(show_spinner=False, max_entries=2)
def _train_split(dataset: str):
    from rst.data import load_dataset
    return load_dataset(dataset, train=True, download=False)


def train_split_available(dataset: str) -> bool:
    from rst.data import DataUnavailableError
    if dataset == "synthetic":
        return True
    try:
        _train_split(dataset)
        return True
    except (DataUnavailableError, ValueError):
        return False
