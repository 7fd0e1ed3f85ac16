"""What the app reads from disk: the zoo (index, candidate sets, stored reports), the shipped test
subset and the test / training splits, uploaded mask files, the paper's reference numbers.

Cached by hashable ids (file path + mtime, SHA-256 of uploaded bytes): ``st.cache_resource`` for
candidate sets, ``st.cache_data`` for parsed JSON and tensors. Cached objects are shared by every
session and never changed in place.

Environment:
    RST_ZOO_DIR       the zoo folder (default ``<repo>/pretrained_masks``; holds ``index.json``)
    RST_TEST_SUBSET   the test subset file (default ``<repo>/assets/fashion_mnist_test_subset.safetensors``)
    RST_TRAIN_SUBSET  the training subset the live search trains on (default
                      ``<repo>/assets/fashion_mnist_train_subset.safetensors``)
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import streamlit as st

if TYPE_CHECKING:                # torch loads with the first page that computes, not with Home
    import torch


REPO_ROOT = Path(__file__).resolve().parent.parent
ZOO_ENV, SUBSET_ENV, TRAIN_SUBSET_ENV = "RST_ZOO_DIR", "RST_TEST_SUBSET", "RST_TRAIN_SUBSET"
DEFAULT_ZOO = REPO_ROOT / "pretrained_masks"
DEFAULT_SUBSET = REPO_ROOT / "assets" / "fashion_mnist_test_subset.safetensors"
DEFAULT_TRAIN_SUBSET = REPO_ROOT / "assets" / "fashion_mnist_train_subset.safetensors"
PAPER_JSON = REPO_ROOT / "assets" / "paper_cifar10.json"
ZOO_BUILD_CMD = "python -m rst zoo build fmnist"
INDEX_FORMAT, INDEX_VERSION = "rst-zoo-index", 1

def zoo_dir() -> Path:
    return Path(os.environ.get(ZOO_ENV) or DEFAULT_ZOO)


def subset_path() -> Path:
    return Path(os.environ.get(SUBSET_ENV) or DEFAULT_SUBSET)


def train_subset_path() -> Path:
    return Path(os.environ.get(TRAIN_SUBSET_ENV) or DEFAULT_TRAIN_SUBSET)


def file_mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def guidance_text() -> str:
    return (f"**No tickets loaded yet.** Three ways to get some:\n\n"
            f"1. build the zoo of pre-searched tickets: `{ZOO_BUILD_CMD}` (writes `{zoo_dir()}`), then reload;\n"
            f"2. upload a mask file (`*.rst.safetensors`) on the **Masks** page;\n"
            f"3. search a ticket live on the **Search** page (seconds on a CPU with the `tiny` preset).")

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
    mtime = file_mtime(path)
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
    from rst.network.masks import load_tickets
    return load_tickets(path)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_cs_bytes(digest: str, _data: bytes):
    from rst.network.masks import load_tickets
    return load_tickets(_data)


def load_zoo_set(zoo_id: str):
    """The zoo entry's candidate set (cached by path + mtime); raises MaskFileError / FileNotFoundError."""
    from rst.network.masks import MaskFileError
    entry = zoo_entry(zoo_id)
    if entry is None:
        raise MaskFileError(f"no zoo entry {zoo_id!r} in {zoo_dir() / 'index.json'}")
    path = zoo_dir() / entry["candidate_set"]
    mtime = file_mtime(path)
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
    mtime = file_mtime(path)
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

# An upload may ask for at most this network (ResNet-18 has 11.2 M weights): with the file checks'
# linear, capped validation this bounds the time one upload takes. Larger networks: use the CLI.
UPLOAD_MAX_WEIGHTS = 12_000_000


# ... and at most this long: a parse that takes longer ends with a message, the session unchanged.
UPLOAD_MAX_SECONDS = 30.0


def parse_upload(data: bytes):
    """Validate and load an uploaded mask file (never unpickled); raises MaskFileError with the reason.

    Every failure is a one-line MaskFileError (an unexpected exception too); the metadata is checked
    first, and a network over ``UPLOAD_MAX_WEIGHTS`` is refused before anything is built. Bounded by
    size (``MAX_FILE_BYTES``) and by time (``UPLOAD_MAX_SECONDS``).
    The loaded set's ``warnings`` say what could not be verified (the page shows them).
    """
    from rst.network.masks import MAX_FILE_BYTES, MaskFileError
    if len(data) > MAX_FILE_BYTES:
        raise MaskFileError(f"the file is {len(data) / 2**20:.1f} MiB, over the {MAX_FILE_BYTES / 2**20:.0f} MiB "
                            "limit for mask files")
    return _within_seconds(lambda: _parse_upload(data), UPLOAD_MAX_SECONDS)


def _within_seconds(fn, seconds: float):
    """``fn()`` in a worker thread; MaskFileError when it has not returned after ``seconds`` (the thread is
    left to finish on its own: nothing it returns late is used)."""
    import threading

    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

    from rst.network.masks import MaskFileError
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:      # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e
    worker = threading.Thread(target=run, name="rst-upload-parse", daemon=True)
    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is not None:
        add_script_run_ctx(worker, ctx)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise MaskFileError(f"reading the file took more than {seconds:g} s, so the app stopped; "
                            "check it with `python -m rst inspect FILE`")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _parse_upload(data: bytes):
    from rst.network.mask_checks import network_weights
    from rst.network.masks import MaskFileError
    try:
        from rst.network.models import NetworkSpec
        spec = NetworkSpec.from_dict(upload_metadata(data)["network"])   # read_metadata checked it
        n = network_weights(spec)
        if n > UPLOAD_MAX_WEIGHTS:
            raise MaskFileError(f"the file's network ({spec.arch} ×{spec.width:g}) has {n / 1e6:.1f} M weights, over "
                                f"the {UPLOAD_MAX_WEIGHTS / 1e6:g} M the app loads; use the CLI "
                                "(python -m rst eval accuracy FILE)")
        return _load_cs_bytes(hashlib.sha256(data).hexdigest(), data)
    except MaskFileError:
        raise
    except Exception as e:        # noqa: BLE001 - never a raw exception box for a user's file
        raise MaskFileError(f"the file could not be read ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None


def upload_metadata(data: bytes) -> dict:
    """The checked metadata of an uploaded file (its warnings are on the loaded set: not repeated here)."""
    import warnings

    from rst.network.masks import MaskFileWarning, read_metadata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskFileWarning)
        return read_metadata(data)

@dataclass(frozen=True)
class EvalData:
    x: torch.Tensor          # (N, C, H, W) in [0, 1]
    y: torch.Tensor          # (N,)
    description: str


@st.cache_data(show_spinner=False, max_entries=4)
def cached_subset(path: str, mtime: float):
    from rst.data.datasets import load_subset
    return load_subset(path)


@st.cache_data(show_spinner=False, max_entries=4)
def _test_split(dataset: str):
    from rst.data.datasets import load_dataset
    return load_dataset(dataset, train=False, download=False)


def subset_available() -> bool:
    return file_mtime(subset_path()) is not None


def subset_dataset() -> str | None:
    """The data set the shipped test subset is of (None when absent or unreadable)."""
    path = subset_path()
    mtime = file_mtime(path)
    if mtime is None:
        return None
    try:
        return cached_subset(str(path), mtime)[2].get("dataset")
    except ValueError:
        return None


def eval_data(dataset: str, n: int | None = None) -> EvalData:
    """The first ``n`` test images of ``dataset``: the shipped subset when it is of that data set,
    else the local test split (``download=False``). Raises ``DataUnavailableError`` with guidance."""
    from rst.data.datasets import DataUnavailableError
    path = subset_path()
    mtime = file_mtime(path)
    if mtime is not None:
        try:
            x, y, meta = cached_subset(str(path), mtime)
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
    from rst.data.datasets import DataUnavailableError
    try:
        return len(eval_data(dataset).y)
    except (DataUnavailableError, ValueError):
        return 0


def require_eval_images(dataset: str) -> int:
    """The number of test images of ``dataset``; when there are none, say why and stop the page."""
    from rst.data.datasets import DataUnavailableError
    n = max_eval_images(dataset)
    if n == 0:
        try:
            eval_data(dataset, 1)
        except (DataUnavailableError, ValueError) as e:
            st.warning(str(e))
        st.stop()
    return n

@st.cache_data(show_spinner=False, max_entries=2)
def train_split(dataset: str):
    from rst.data.datasets import load_dataset
    return load_dataset(dataset, train=True, download=False)


def train_split_available(dataset: str) -> bool:
    from rst.data.datasets import DataUnavailableError
    if dataset == "synthetic":
        return True
    try:
        train_split(dataset)
        return True
    except (DataUnavailableError, ValueError):
        return False


# ---------------------------------------------------------------- the training subset (live search)


@st.cache_data(show_spinner=False, max_entries=2)
def _cached_train_subset(path: str, mtime: float):
    from rst.data.datasets import load_subset
    return load_subset(path, split="train")        # refuses a file that is not of training images


def train_subset(dataset: str | None = None):
    """``(x, y, meta)`` of the shipped training subset; FileNotFoundError (one line) when it is absent,
    unreadable, not of training images or (``dataset`` given) of another data set."""
    path = train_subset_path()
    mtime = file_mtime(path)
    if mtime is None:
        raise FileNotFoundError(f"no training subset at {path} (set {TRAIN_SUBSET_ENV})")
    try:
        x, y, meta = _cached_train_subset(str(path), mtime)
    except ValueError as e:
        raise FileNotFoundError(f"the training subset cannot be used: {e}") from None
    if dataset is not None and meta.get("dataset") != dataset:
        raise FileNotFoundError(f"the training subset {path.name} is of {meta.get('dataset')}, not {dataset}")
    return x, y, meta


def train_subset_dataset() -> str | None:
    """The data set of the shipped training subset (None when it is absent or unusable)."""
    try:
        return train_subset()[2].get("dataset")
    except FileNotFoundError:
        return None


def train_subset_search_data(cfg, n_train: int):
    """``(SearchData, label)`` from the training subset: ``n_train`` training images and
    ``cfg.val_size`` validation images, both training-split images (seeded split by ``cfg.seed``)."""
    from rst.data.datasets import split_train_val
    from rst.search.loop import SearchData
    spec = cfg.network_spec()
    x, y, meta = train_subset(cfg.dataset)
    if tuple(x.shape[1:]) != (spec.in_channels, spec.image_size, spec.image_size):
        raise ValueError(f"the training subset's images are {tuple(x.shape[1:])}; this network expects "
                         f"{(spec.in_channels, spec.image_size, spec.image_size)}")
    if not 1 <= n_train <= len(y) - cfg.val_size:
        raise ValueError(f"the training subset has {len(y)} images: {cfg.val_size} validate, so 1 to "
                         f"{len(y) - cfg.val_size} can train, not {n_train}")
    x, y = x[:n_train + cfg.val_size], y[:n_train + cfg.val_size]
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, cfg.val_size, seed=cfg.seed)
    label = (f"the shipped training subset ({meta.get('dataset')} {meta.get('split')}: {len(y_tr)} training + "
             f"{len(y_val)} validation images)")
    return SearchData(x_tr, y_tr, x_val, y_val), label
