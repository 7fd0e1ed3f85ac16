"""The mask file format: the only code in the project that reads or writes ticket files.

A file holds one ticket or a whole candidate set drawn from the same seeded random network:

* safetensors tensors (never pickle):
    ``t{i}/mask/{layer}``   uint8, the layer's boolean mask (score shape) bit-packed, MSB first
    ``t{i}/bn/{module}.{buffer}``  float32 BatchNorm running statistics of ticket ``i``
* one safetensors metadata entry ``rst`` holding JSON: format name and version, the network spec
  (architecture, dataset, width, init, seed, granularity), the SHA-256 of the regenerated weights,
  per ticket its keep ratio, name, metrics (each with the attack that measured it) and search
  config, the provenance (package versions, git revision, time) and a SHA-256 of the tensor payload;
* a second metadata entry ``rst_sha256``: the SHA-256 of that JSON text (checked when present; a
  file without it loads with a :class:`MaskFileWarning`, recorded in ``CandidateSet.warnings``).

Every field read from a file is checked (type, range, limits: :mod:`rst.network.mask_checks`) before anything
is built, and a bad file raises :class:`MaskFileError` with one line naming the problem. The digests
detect accidental corruption, not forgery: anyone can edit a file and recompute them.

The weights are not stored: loading rebuilds them from the seed and refuses the file when their
checksum differs. A ResNet-18 ticket is ~1.4 MB (1 bit per weight), against ~100 MB for the
reference code's float checkpoints.

    >>> cs = rst.CandidateSet(spec, [rst.extract_ticket(model, name="kr0.1")])
    >>> rst.save_tickets("ticket.rst.safetensors", cs)
    >>> cs = rst.load_tickets("ticket.rst.safetensors")
    >>> model = cs.model(0, device="cpu")    # eval mode, ticket applied

Beside the format, this module re-exports what it is built on: the tickets in memory and their
transfer to and from a model (:mod:`rst.network.tickets`), the bit packing of masks
(:mod:`rst.network.bit_packing`) and the plain PyTorch export (:mod:`rst.network.dense_export`).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn as nn

from . import mask_checks as checks
from rst.runtime.atomic import atomic_write
from rst.runtime.provenance import provenance
from .bit_packing import bit_shift_table, pack_bits, unpack_bits  # noqa: F401  (re-exported)
from .dense_export import dense_state_dict, to_dense  # noqa: F401  (to_dense re-exported)
from .mask_errors import MaskFileError, MaskFileWarning
from .masked import masked_layers
from .models import NetworkSpec, build_network
from .tickets import (CandidateSet, Ticket, _bn_buffers, apply_ticket, clear_ticket,  # noqa: F401  (re-exported)
                      extract_ticket)
from .weights import weight_checksum

FORMAT_NAME = "rst-mask"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024          # files above this are refused before any parsing
SUFFIX = ".rst.safetensors"

PathOrBytes = Union[str, os.PathLike, bytes]


def _unpack(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A file's packed mask of ``shape`` unpacked, refused unless it has exactly the bytes that shape needs."""
    n = int(np.prod(shape))
    if packed.dtype != torch.uint8 or packed.ndim != 1 or packed.numel() != (n + 7) // 8:
        raise MaskFileError(f"packed mask has {packed.numel()} bytes of {packed.dtype}, "
                            f"expected {(n + 7) // 8} bytes of uint8 for shape {shape}")
    return unpack_bits(packed, shape)


def _payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes and raw bytes, in name order (a file's ``payload_sha256``)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())   # raw bytes: any dtype (bf16 too)
    return h.hexdigest()


def ticket_digest(ticket: Ticket) -> str:
    """SHA-256 of a ticket's masks and BN statistics: two tickets with equal digests are the same
    subnetwork, whatever their names and metrics say (the zoo uses it to know its reports are stale)."""
    # BN statistics as the file stores them (float32: a fresh ticket's num_batches_tracked is int64)
    return _payload_digest({**{f"mask.{k}": v.to(torch.uint8) for k, v in ticket.masks.items()},
                            **{f"bn.{k}": v.to(torch.float32) for k, v in ticket.bn_stats.items()}})


def _metadata_block(meta: dict) -> dict[str, str]:
    """The safetensors ``__metadata__``: the JSON, and its SHA-256 (a flipped digit in a metric shows)."""
    raw = json.dumps(meta)
    return {"rst": raw, "rst_sha256": hashlib.sha256(raw.encode()).hexdigest()}


def to_bytes(cs: CandidateSet) -> bytes:
    """Serialise a candidate set (see the module docstring for the layout)."""
    from safetensors.torch import save
    if not cs.tickets:
        raise ValueError("a mask file needs at least one ticket")
    checksum = cs.weight_checksum or weight_checksum(build_network(cs.spec))
    tensors, tickets_meta = {}, []
    for i, t in enumerate(cs.tickets):
        for lname, m in t.masks.items():
            tensors[f"t{i}/mask/{lname}"] = pack_bits(m.cpu().bool())
        for key, v in t.bn_stats.items():     # a copy: one ticket twice in a set must not share memory
            tensors[f"t{i}/bn/{key}"] = v.detach().cpu().to(torch.float32).contiguous().clone()
        tickets_meta.append({
            "name": t.name or f"keep{t.keep_ratio:g}", "keep_ratio": t.keep_ratio,
            "kept_fraction": t.kept_fraction(), "metrics": t.metrics, "search_config": t.search_config,
            "shapes": {lname: list(m.shape) for lname, m in t.masks.items()},
            "kept": {lname: int(m.sum()) for lname, m in t.masks.items()},
        })
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "network": cs.spec.to_dict(),
        "weight_checksum": checksum, "tickets": tickets_meta,
        "provenance": cs.meta.get("provenance") or provenance(),
        "extra": cs.meta.get("extra", {}),
        "payload_sha256": _payload_digest(tensors),
    }
    if cs.probabilities is not None:
        meta["switch_probabilities"] = checks.switch_probabilities(list(cs.probabilities), len(cs.tickets))
    return save(tensors, metadata=_metadata_block(meta))


def save_tickets(path: str | os.PathLike, cs: CandidateSet) -> Path:
    """Write ``cs`` atomically (:func:`rst.runtime.atomic.atomic_write`); returns the path."""
    return atomic_write(path, to_bytes(cs))


def read_metadata(source: PathOrBytes, max_bytes: int = MAX_FILE_BYTES) -> dict:
    """The JSON metadata of a mask file, validated; the tensors are not decoded.

    The header, the network spec (and its size), the tickets' metadata and the tensors' names,
    dtypes and byte ranges are checked as :func:`load_tickets` checks them; a missing metadata
    digest gives a :class:`MaskFileWarning`.
    """
    data = _read(source, max_bytes)
    header, meta, notes = _parse_header(data)
    _check_mask_metadata(header, meta)
    for note in notes:
        warnings.warn(note, MaskFileWarning, stacklevel=2)
    return meta


def _read(source: PathOrBytes, max_bytes: int) -> bytes:
    """The bytes of a file (a regular file only) or of uploaded data, within ``max_bytes``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "uploaded data"
    else:
        p = Path(source)      # a regular file only, read up to its stat size (rst.network.mask_checks)
        data = checks.read_regular_file(p, max_bytes)
        label = p.name
    if len(data) > max_bytes:
        raise MaskFileError(f"{label} is {len(data) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                            "limit for mask files")
    return data


def _parse_header(data: bytes, fmt: str = FORMAT_NAME) -> tuple[dict, dict, list[str]]:
    """(safetensors header, rst metadata, warnings) of a file, checked up to the tensor data."""
    header, n = _safetensors_header(data)
    raw, notes = _rst_json(header)
    meta = _rst_metadata(raw, fmt)
    # offsets must be integers that cover exactly the data that follows the header
    dtypes = checks.mask_file_dtype if fmt == FORMAT_NAME else (lambda name: ("F32", "I64"))
    end = checks.tensor_entries(header, dtypes, len(data) - 8 - n)
    if 8 + n + end != len(data):
        raise MaskFileError(f"truncated or padded file: tensors end at byte {8 + n + end}, the file has {len(data)}")
    return header, meta, notes


def _safetensors_header(data: bytes) -> tuple[dict, int]:
    """The safetensors header of a file (a JSON object, bounded in depth) and its length in bytes."""
    if len(data) < 8:
        raise MaskFileError(f"not a mask file: {len(data)} bytes is too short for a safetensors header (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    if n == 0 or n > 100 * 2**20:
        raise MaskFileError("not a safetensors file: its first 8 bytes do not give a plausible header length")
    if 8 + n > len(data):
        raise MaskFileError(f"truncated file: the header says {n} bytes, only {len(data) - 8} follow")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except RecursionError:
        raise MaskFileError("corrupted file: its safetensors header is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise MaskFileError("not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise MaskFileError("not a safetensors file: its header is not a JSON object")
    checks.check_depth(header, "the safetensors header")
    return header, n


def _rst_json(header: dict) -> tuple[str, list[str]]:
    """The ``rst`` metadata text of a safetensors header, checked against its ``rst_sha256`` digest;
    and the warning when the digest is missing."""
    block = header.get("__metadata__") or {}
    if not isinstance(block, dict):
        raise MaskFileError("not a safetensors file: its '__metadata__' is not a JSON object")
    raw = block.get("rst")
    if raw is None:
        raise MaskFileError("a safetensors file, but not an RST mask file (no 'rst' metadata)")
    if not isinstance(raw, str):
        raise MaskFileError("corrupted mask file: its 'rst' metadata is not a JSON string")
    digest = block.get("rst_sha256")
    notes = []
    if digest is None:
        notes.append("unverified metadata: the file has no 'rst_sha256' digest (written before rst recorded "
                     "one, or edited and the digest removed): its names, metrics and recipe are not checked")
    elif digest != hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest():
        raise MaskFileError("corrupted mask file: its 'rst' metadata does not match its recorded SHA-256")
    return raw, notes


def _rst_metadata(raw: str, fmt: str) -> dict:
    """The ``rst`` metadata parsed: format ``fmt`` at this version, the keys it needs, bounded in depth."""
    try:
        meta = json.loads(raw)
    except RecursionError:
        raise MaskFileError("corrupted mask file: its 'rst' metadata is nested too deeply") from None
    except ValueError:
        raise MaskFileError("corrupted mask file: its 'rst' metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise MaskFileError(f"not an {fmt!r} file: its metadata 'format' is {checks.show(found, 40)}")
    if isinstance(meta.get("tickets"), list) and len(meta["tickets"]) > checks.MAX_TICKETS:
        checks.tickets_meta(meta["tickets"])      # the count is refused before anything walks the list
    checks.check_depth(meta, "the 'rst' metadata")
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise MaskFileError(f"unsupported mask file format version {checks.show(version, 20)}; this rst reads "
                            f"version {FORMAT_VERSION} (upgrade rst, or re-export the file)")
    required = ("network", "weight_checksum", "tickets", "payload_sha256") if fmt == FORMAT_NAME else ("network", "payload_sha256")
    for key in required:
        if key not in meta:
            raise MaskFileError(f"corrupted mask file: metadata has no {key!r}")
    checks.sha256_hex(meta["payload_sha256"], "its 'payload_sha256'")
    if fmt == FORMAT_NAME:
        checks.sha256_hex(meta["weight_checksum"], "its 'weight_checksum'")
    return meta


def _check_mask_metadata(header: dict, meta: dict) -> tuple[NetworkSpec, dict]:
    """The network spec (bounded in size), the tickets' metadata and the tensor names; nothing is built."""
    spec = checks.network_spec(meta["network"])
    checks.tickets_meta(meta["tickets"])
    groups = checks.ticket_tensor_names((k for k in header if k != "__metadata__"), len(meta["tickets"]))
    return spec, groups


def _decode_tensors(data: bytes, meta: dict, kind: str) -> dict[str, torch.Tensor]:
    """The tensors of a checked ``kind`` ("mask" or "weights") file, matching its recorded payload SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as e:
        raise MaskFileError(f"corrupted {kind} file: {checks.show(str(e), 200)}") from None
    if _payload_digest(tensors) != meta["payload_sha256"]:
        raise MaskFileError(f"corrupted {kind} file: the tensor data does not match its recorded SHA-256")
    return tensors


def _network_layout(spec: NetworkSpec, meta: dict, verify_weights: bool) -> tuple[dict, dict]:
    """Mask and BatchNorm shapes of ``spec``'s network, whose regenerated weights must have the
    file's checksum (unless not ``verify_weights``)."""
    net = build_network(spec)                  # bounded: checks.network_spec refused oversized networks
    shapes = {name: tuple(layer.scores.shape) for name, layer in masked_layers(net)}
    bn_shapes = {key: tuple(getattr(m, b).shape) for key, m, b in _bn_buffers(net)}
    if verify_weights:
        checksum = weight_checksum(net)
        if checksum != meta["weight_checksum"]:
            raise MaskFileError(
                f"the weights regenerated from seed {spec.seed} ({spec.arch}, {spec.init}) have checksum "
                f"{checksum[:12]}…, the file records {meta['weight_checksum'][:12]}…: this file was made "
                "with a different random network (or a different rst version's generator)")
    return shapes, bn_shapes


def _ticket_from_file(i: int, tm: dict, names: dict, tensors: dict, shapes: dict, bn_shapes: dict,
                      spec: NetworkSpec) -> Ticket:
    """Ticket ``i`` of a file: its masks unpacked and its BatchNorm statistics, checked against the network."""
    masks = {}
    for lname, shape in shapes.items():
        if lname not in names["mask"]:
            raise MaskFileError(f"ticket {i} has no mask for layer {lname!r} of {spec.arch}")
        masks[lname] = _unpack(tensors[names["mask"][lname]], shape)
    extra = [names["mask"][k] for k in names["mask"] if k not in shapes]
    if extra:
        raise MaskFileError(f"ticket {i} has masks for layers {spec.arch} does not have: "
                            f"{checks.show(extra[:3], 120)}")
    bn = {k: tensors[name] for k, name in names["bn"].items()}
    unfit = sorted(set(bn) ^ set(bn_shapes)) or sorted(k for k, v in bn.items() if tuple(v.shape) != bn_shapes[k])
    if unfit:
        raise MaskFileError(f"ticket {i} has BatchNorm statistics that do not fit {spec.arch}: "
                            f"{checks.show(unfit[:3], 120)}")
    checks.bn_statistics(f"ticket {i} ({checks.show(tm.get('name', ''), 40)})", bn)
    checks.kept_counts(i, tm, masks, spec.granularity)
    return Ticket(keep_ratio=float(tm["keep_ratio"]), masks=masks, bn_stats=bn, name=tm.get("name", ""),
                  metrics=tm.get("metrics", {}), search_config=tm.get("search_config", {}))


def load_tickets(source: PathOrBytes, device: torch.device | str | None = None,
                 max_bytes: int = MAX_FILE_BYTES, verify_weights: bool = True) -> CandidateSet:
    """Read a mask file (path or bytes) into a :class:`CandidateSet`. Never unpickles.

    Rebuilds the network from the recorded seed and raises :class:`MaskFileError` when the
    weights' checksum differs from the recorded one (``verify_weights=False`` skips that rebuild).
    Every other problem (too large, truncated, not safetensors, wrong version, unknown
    architecture, shapes that do not fit, corrupted payload) raises :class:`MaskFileError` too.
    """
    data = _read(source, max_bytes)
    header, meta, notes = _parse_header(data)
    spec, groups = _check_mask_metadata(header, meta)
    tensors = _decode_tensors(data, meta, "mask")
    shapes, bn_shapes = _network_layout(spec, meta, verify_weights)
    tickets = [_ticket_from_file(i, tm, groups[i], tensors, shapes, bn_shapes, spec)
               for i, tm in enumerate(meta["tickets"])]
    probs = meta.get("switch_probabilities")
    probs = None if probs is None else checks.switch_probabilities(probs, len(tickets))
    cs = CandidateSet(spec, tickets, meta["weight_checksum"], meta, list(notes), probs)
    for note in notes:
        warnings.warn(note, MaskFileWarning, stacklevel=2)
    if device is not None:
        for t in cs.tickets:
            t.masks = {k: v.to(device) for k, v in t.masks.items()}
    return cs


# --------------------------------------------------------------------------------------------
# trained weights (dense adversarial-training baseline, fine-tuned tickets)
# --------------------------------------------------------------------------------------------

WEIGHTS_FORMAT = "rst-weights"


def save_weights(path: str | os.PathLike, model: nn.Module, spec: NetworkSpec, meta: dict | None = None) -> Path:
    """Save a network whose weights were *trained* (masks folded in) as safetensors + JSON metadata."""
    from safetensors.torch import save
    tensors = {k: v.detach().cpu().contiguous() for k, v in dense_state_dict(model).items()}
    header = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION, "network": spec.to_dict(),
              "provenance": provenance(), **(meta or {}), "payload_sha256": _payload_digest(tensors)}
    return atomic_write(path, save(tensors, metadata=_metadata_block(header)))


def load_weights(source: PathOrBytes, device: torch.device | str | None = None,
                 max_bytes: int = 4 * MAX_FILE_BYTES) -> tuple[nn.Module, dict]:
    """Load a file of :func:`save_weights` into a dense network (eval mode); returns (model, metadata)."""
    from .masked import set_dense
    data = _read(source, max_bytes)
    _, meta, notes = _parse_header(data, fmt=WEIGHTS_FORMAT)
    spec = checks.network_spec(meta["network"])
    tensors = _decode_tensors(data, meta, "weights")
    checks.bn_statistics("weights file", {k: v for k, v in tensors.items() if "running_" in k or "num_batches" in k})
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise MaskFileError(f"weights file: tensor {checks.show(bad, 50)} has NaN or infinite values")
    for note in notes:
        warnings.warn(note, MaskFileWarning, stacklevel=2)
    model = build_network(spec)
    set_dense(model, True)
    expected = {k for k in model.state_dict() if not k.endswith(".scores")}
    if set(tensors) != expected:
        raise MaskFileError(f"weights file does not fit {spec.arch}: differing keys "
                            f"{sorted(set(tensors) ^ expected)[:3]}")
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    unfit = next((k for k, v in tensors.items() if tuple(v.shape) != tuple(targets[k].shape)
                  or v.dtype != targets[k].dtype), None)
    if unfit is not None:                 # copy_ would broadcast a (1,) tensor or cast an F16 one without a word
        v, t = tensors[unfit], targets[unfit]
        raise MaskFileError(f"weights file does not fit {spec.arch}: tensor {checks.show(unfit, 50)} has shape "
                            f"{tuple(v.shape)} ({v.dtype}), the network expects {tuple(t.shape)} ({t.dtype})")
    with torch.no_grad():
        for k, v in tensors.items():
            targets[k].copy_(v)
    return (model.to(device) if device is not None else model).eval(), meta
