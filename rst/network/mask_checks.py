"""What an untrusted mask or weights file is checked against before anything is built from it.

A file's metadata drives what gets allocated (the network's size, the number of tickets), so every
field is checked for type and range first, and every check is linear in the file's size. Each
failure raises :class:`MaskFileError` with a one-line message naming the field; nothing here
unpickles, recurses on file content or builds a network of real tensors.

Limits (a file over any of them is refused before the network is built):

=========================  ==============  ==================================================
``MAX_TICKETS``            256             tickets in one candidate set
``MAX_WIDTH``              64              width multiplier of the recorded architecture
``MAX_NETWORK_WEIGHTS``    64 M            masked weights of the recorded network (WRN-34-10
                                           at width 1 has 46.1 M; the network then needs about
                                           0.5 GB: weights and scores in float32)
``MAX_JSON_DEPTH``         32              nesting of the header and the metadata JSON
|seed|                     < 2**62         the seed of the random network (an integer)
=========================  ==============  ==================================================

The size of a file is bounded separately (``rst.network.masks.MAX_FILE_BYTES``), which bounds the unpacked
masks too (8 bits per packed byte); a path is read only if it is a regular file
(:mod:`rst.network.regular_files`, whose ``read_regular_file`` and ``regular_file_stat`` this module
re-exports with the error types of :mod:`rst.network.mask_errors`).

Contents checked against the metadata: every tensor's dtype (masks ``U8``, BatchNorm statistics
``F32``), its shape against its byte range, BatchNorm statistics finite with non-negative
variances, and each mask's number of kept elements against the ticket's keep ratio and
granularity (``round(keep_ratio * groups)`` per layer; network-wide "global" tickets against the
per-layer counts they record and their network-wide total).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Iterable

import torch

from .mask_errors import MaskFileError, MaskFileWarning  # noqa: F401  (re-exported)
from .regular_files import read_regular_file, regular_file_stat  # noqa: F401  (re-exported)

MAX_TICKETS = 256
MAX_WIDTH = 64.0
MAX_NETWORK_WEIGHTS = 64_000_000
MAX_JSON_DEPTH = 32
SEED_BOUND = 2**62

DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}

_TENSOR_KEY = re.compile(r"t(0|[1-9][0-9]{0,5})/(mask|bn)/(.+)", re.DOTALL)


def show(value, n: int = 60) -> str:
    """``repr(value)`` cut to ``n`` characters: file content in a one-line message."""
    text = repr(value)
    return text if len(text) <= n else text[:n - 1] + "…"


def cut(text, n: int = 200) -> str:
    """``str(text)`` on one line, cut to ``n`` characters: an exception's message that quotes file content."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def check_depth(obj, what: str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse parsed JSON nested deeper than ``limit``: one pass per level over the containers, no recursion.

    (``json.loads`` itself raises RecursionError past ~1000 levels; the callers turn that into a
    MaskFileError.) Linear in the number of containers and their elements.
    """
    level, depth = [obj] if isinstance(obj, (dict, list)) else [], 1
    while level:
        if depth > limit:
            raise MaskFileError(f"{what} is nested more than {limit} levels deep")
        nxt = []
        for item in level:
            nxt += [v for v in (item.values() if type(item) is dict else item) if isinstance(v, (dict, list))]
        level, depth = nxt, depth + 1


def real(value, what: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> float:
    """A finite JSON number (not a bool) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MaskFileError(f"{what} is {show(value)}, not a number")
    if isinstance(value, int) and abs(value) > 2**53:
        raise MaskFileError(f"{what} is {show(value)}, out of range")
    if not math.isfinite(value):
        raise MaskFileError(f"{what} is {value!r}, not a finite number")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise MaskFileError(f"{what} is {value!r}, below {'or at ' if lo_open else ''}{lo:g}")
    if hi is not None and value > hi:
        raise MaskFileError(f"{what} is {value!r}, over {hi:g}")
    return float(value)


def integer(value, what: str, lo: int, hi: int) -> int:
    """A JSON integer (not a bool, not a float) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MaskFileError(f"{what} is {show(value)}, not an integer")
    if not lo <= value <= hi:
        raise MaskFileError(f"{what} is {show(value)}, outside [{lo}, {hi}]")
    return value


def sha256_hex(value, what: str) -> str:
    if not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)):
        raise MaskFileError(f"corrupted mask file: {what} is {show(value)}, not a SHA-256 hex digest")
    return value


# --------------------------------------------------------------------------------------------
# safetensors header
# --------------------------------------------------------------------------------------------


def tensor_entries(header: dict, expected_dtype: Callable[[str], Iterable[str]], data_bytes: int) -> int:
    """Check every tensor entry of a safetensors header; returns the end of the tensor data (bytes).

    ``expected_dtype(name)`` gives the dtypes allowed for tensor ``name``; ``data_bytes`` is the
    length of the data after the header. Offsets must be integers that tile ``[0, end)`` without
    gaps, each matching its dtype and shape.
    """
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise MaskFileError(f"corrupted file: tensor entry {show(name)} of its safetensors header is not an object")
        off = entry.get("data_offsets")
        if not (isinstance(off, list) and len(off) == 2 and all(type(o) is int for o in off)
                and 0 <= off[0] <= off[1]):
            raise MaskFileError(f"corrupted file: tensor entry {show(name)} of its safetensors header has no valid "
                                f"'data_offsets' (found {show(off, 40)})")
        if off[1] > data_bytes:
            raise MaskFileError(f"truncated file: tensor {show(name)} ends at byte {show(off[1], 30)} of the tensor data, "
                                f"only {data_bytes} bytes follow the header")
        shape = entry.get("shape")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(type(d) is int and 0 <= d <= 2**48
                                                                    for d in shape)):
            raise MaskFileError(f"corrupted file: tensor {show(name)} has shape {show(shape, 40)}, "
                                "not a list of sizes")
        dtype = entry.get("dtype")
        allowed = tuple(expected_dtype(name))
        if dtype not in allowed:
            raise MaskFileError(f"tensor {show(name)} has dtype {show(dtype, 20)}, expected "
                                f"{' or '.join(allowed)}")
        if math.prod(shape) * DTYPE_SIZES[dtype] != off[1] - off[0]:
            raise MaskFileError(f"corrupted file: tensor {show(name)} of shape {shape} ({dtype}) does not fill "
                                f"its {off[1] - off[0]} bytes")
        spans.append((off[0], off[1]))
    spans.sort()
    end = 0
    for start, stop in spans:
        if start != end:
            raise MaskFileError(f"corrupted file: tensor data overlaps or has a gap at byte {start}")
        end = stop
    return end


def ticket_tensor_names(names: Iterable[str], n_tickets: int) -> dict[int, dict[str, dict[str, str]]]:
    """Group ``t{i}/mask/{layer}`` and ``t{i}/bn/{key}`` names by ticket (linear); refuse strays."""
    groups: dict[int, dict[str, dict[str, str]]] = {i: {"mask": {}, "bn": {}} for i in range(n_tickets)}
    stray = []
    for name in names:
        m = _TENSOR_KEY.fullmatch(name)
        if m is None or int(m.group(1)) >= n_tickets:
            stray.append(name)
            if len(stray) >= 3:
                break
            continue
        groups[int(m.group(1))][m.group(2)][m.group(3)] = name
    if stray:
        raise MaskFileError(f"corrupted mask file: tensors that belong to no ticket: {show(stray[:3], 120)}")
    return groups


def mask_file_dtype(name: str) -> tuple[str, ...]:
    """Masks are bit-packed ``U8``; BatchNorm statistics ``F32`` (other names are strays, refused later)."""
    kind = _TENSOR_KEY.fullmatch(name)
    if kind is None:
        return tuple(DTYPE_SIZES)
    return ("U8",) if kind.group(2) == "mask" else ("F32",)


# --------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------


def network_spec(d):
    """The recorded network spec, type- and range-checked, then bounded in size (nothing is allocated)."""
    from .models import NetworkSpec
    if not isinstance(d, dict):
        raise MaskFileError(f"corrupted mask file: metadata 'network' is {show(d, 40)}, not an object")
    for key in ("arch", "dataset", "init", "granularity"):
        if key in d and not isinstance(d[key], str):
            raise MaskFileError(f"corrupted mask file: network {key} is {show(d[key], 40)}, not a string")
    if "width" in d:
        real(d["width"], "the network width", 0.0, MAX_WIDTH, lo_open=True)
    if "seed" in d:
        integer(d["seed"], "the network seed", -SEED_BOUND + 1, SEED_BOUND - 1)
    try:
        spec = NetworkSpec.from_dict(d)
    except KeyError as e:
        raise MaskFileError(f"mask file for a network this rst cannot build: {cut(e.args[0] if e.args else e)}") from None
    except (ValueError, TypeError) as e:
        raise MaskFileError(f"mask file for a network this rst cannot build: {cut(e)}") from None
    n = network_weights(spec)
    if n > MAX_NETWORK_WEIGHTS:
        raise MaskFileError(f"the file asks for a {spec.arch} of width {spec.width:g} with {n / 1e6:,.1f} M weights, "
                            f"over the limit of {MAX_NETWORK_WEIGHTS / 1e6:g} M (rst.network.mask_checks.MAX_NETWORK_WEIGHTS)")
    return spec


def network_weights(spec) -> int:
    """Masked weights of ``spec``'s network, counted on the ``meta`` device (no memory, no init)."""
    from .masked import masked_layers
    from .models import DATASET_STATS, create_model
    n_cls, c_in, _, mean, std = DATASET_STATS[spec.dataset]
    with torch.device("meta"):
        model = create_model(spec.arch, num_classes=n_cls, in_channels=c_in, mean=mean, std=std,
                             width=spec.width, granularity=spec.granularity)
    return sum(layer.weight.numel() for _, layer in masked_layers(model))


_SEARCH_NUMBERS = ("keep_ratio", "eps", "alpha", "lr", "momentum", "weight_decay")
_SEARCH_INTEGERS = ("seed", "epochs", "steps", "batch_size", "best_epoch")


def tickets_meta(tickets) -> None:
    """The ``tickets`` list: count within ``MAX_TICKETS``; each keep ratio, name, metrics, config checked."""
    if not (isinstance(tickets, list) and tickets):
        raise MaskFileError("corrupted mask file: metadata 'tickets' is not a non-empty list of objects")
    if len(tickets) > MAX_TICKETS:
        raise MaskFileError(f"the file lists {len(tickets):,} tickets, over the limit of {MAX_TICKETS} "
                            "(rst.network.mask_checks.MAX_TICKETS)")
    for i, tm in enumerate(tickets):
        if not isinstance(tm, dict):
            raise MaskFileError("corrupted mask file: metadata 'tickets' is not a non-empty list of objects")
        kr = tm.get("keep_ratio")
        if isinstance(kr, bool) or not isinstance(kr, (int, float)) or not 0.0 < kr <= 1.0:
            raise MaskFileError(f"corrupted mask file: ticket {i} has keep_ratio {show(kr, 30)}, not a number in (0, 1]")
        name, metrics, cfg = tm.get("name", ""), tm.get("metrics", {}), tm.get("search_config", {})
        if not (isinstance(name, str) and len(name) <= 200 and isinstance(metrics, dict) and isinstance(cfg, dict)):
            raise MaskFileError(f"corrupted mask file: ticket {i} has a malformed name, metrics or search_config")
        for key, m in metrics.items():
            if not isinstance(m, dict):
                raise MaskFileError(f"corrupted mask file: ticket {i}'s metric {show(key, 30)} is not an object")
            if m.get("value") is not None:
                real(m["value"], f"ticket {i}'s metric {show(key, 30)}")
        for key in _SEARCH_NUMBERS:
            if cfg.get(key) is not None:
                real(cfg[key], f"ticket {i}'s search_config {key}")
        for key in _SEARCH_INTEGERS:
            if cfg.get(key) is not None:
                integer(cfg[key], f"ticket {i}'s search_config {key}", -SEED_BOUND + 1, SEED_BOUND - 1)
        if cfg.get("scope") not in (None, "layer", "global"):
            raise MaskFileError(f"corrupted mask file: ticket {i}'s search_config scope is {show(cfg['scope'], 30)}")
        kept = tm.get("kept")
        if kept is not None and not (isinstance(kept, dict) and all(type(v) is int and v >= 0 for v in kept.values())):
            raise MaskFileError(f"corrupted mask file: ticket {i}'s 'kept' is not a map of layer to count")


# --------------------------------------------------------------------------------------------
# contents
# --------------------------------------------------------------------------------------------


def _label(i: int, tm: dict) -> str:
    return f"ticket {i} ({show(tm.get('name', ''), 40)})"


def kept_counts(i: int, tm: dict, masks: dict[str, torch.Tensor], granularity: str) -> None:
    """Each mask's kept elements against the ticket's recorded counts, keep ratio and granularity."""
    from .masked import n_keep
    kr = float(tm["keep_ratio"])
    counts = {name: int(m.sum()) for name, m in masks.items()}
    sizes = {name: m.numel() for name, m in masks.items()}
    recorded = tm.get("kept")
    if recorded is not None:
        if set(recorded) != set(counts):
            raise MaskFileError(f"{_label(i, tm)} records kept counts for other layers than its masks")
        for name, c in counts.items():
            if recorded[name] != c:
                raise MaskFileError(f"{_label(i, tm)}: layer {show(name, 40)} keeps {c} of {sizes[name]} mask "
                                    f"elements, its metadata records {recorded[name]}: the masks contradict the metadata")
    scope = (tm.get("search_config") or {}).get("scope", "layer")
    if scope == "global":
        total, n = sum(counts.values()), sum(sizes.values())
        k = n_keep(n, kr)
        slack = len(counts) + n // 1000          # one group per layer at least, and ties at the threshold
        if not k <= total <= k + slack or min(counts.values(), default=1) < 1:
            raise MaskFileError(f"{_label(i, tm)} keeps {total} of {n} mask elements network-wide, its keep ratio "
                                f"{kr:g} (global top-k) gives {k}: the masks contradict the metadata")
        return
    for name, c in counts.items():
        k = n_keep(sizes[name], kr)
        if c != k:
            raise MaskFileError(f"{_label(i, tm)}: layer {show(name, 40)} keeps {c} of {sizes[name]} mask elements, "
                                f"its keep ratio {kr:g} at {granularity} granularity gives {k}: "
                                "the masks contradict the metadata")


def bn_statistics(what: str, stats: dict[str, torch.Tensor]) -> None:
    """BatchNorm running statistics finite, variances and batch counts non-negative."""
    for key, v in stats.items():
        if not v.is_floating_point():
            continue
        if not bool(torch.isfinite(v).all()):
            bad = "NaN" if bool(torch.isnan(v).any()) else "infinite"
            raise MaskFileError(f"{what}: BatchNorm statistic {show(key, 50)} has {bad} values "
                                "(the network would output NaN or constants)")
        if key.endswith(("running_var", "num_batches_tracked")) and bool((v < 0).any()):
            raise MaskFileError(f"{what}: BatchNorm statistic {show(key, 50)} has negative values")


def switch_probabilities(p, n_tickets: int) -> list[float]:
    """The file's R2S switch probabilities: one finite, non-negative number per ticket, summing to 1."""
    from .probabilities import check_probabilities
    try:
        return check_probabilities(p, n_tickets, "its 'switch_probabilities'")
    except ValueError as e:
        raise MaskFileError(f"corrupted mask file: {e}") from None
