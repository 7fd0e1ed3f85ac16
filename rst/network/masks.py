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
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn as nn

from . import mask_checks as checks
from rst.runtime.atomic import atomic_write
from .mask_checks import MaskFileError, MaskFileWarning
from .masked import masked_layers
from .models import NetworkSpec, build_network
from rst.runtime.provenance import provenance
from rst.runtime.speed import flush_subnormal_bn_stats_
from .weights import weight_checksum

FORMAT_NAME = "rst-mask"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024          # files above this are refused before any parsing
SUFFIX = ".rst.safetensors"

PathOrBytes = Union[str, os.PathLike, bytes]


@dataclass
class Ticket:
    """One subnetwork: boolean masks per masked layer (score shape) and its BN running statistics."""
    keep_ratio: float
    masks: dict[str, torch.Tensor]
    bn_stats: dict[str, torch.Tensor]
    name: str = ""
    metrics: dict = field(default_factory=dict)
    search_config: dict = field(default_factory=dict)

    def kept_fraction(self) -> float:
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept / sum(m.numel() for m in self.masks.values())


@dataclass
class CandidateSet:
    """Tickets over the same seeded random network (``spec``), plus the file's metadata.

    ``warnings``: what loading could not verify (one line each, e.g. metadata without its digest);
    the CLI and the app show them. ``probabilities``: the R2S switch probabilities of the tickets
    (one per ticket, summing to 1; :mod:`rst.evaluation.switch_probabilities`), or None: uniform.
    """
    spec: NetworkSpec
    tickets: list[Ticket]
    weight_checksum: str = ""
    meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    probabilities: list[float] | None = None

    def model(self, index: int = 0, device: torch.device | str | None = None) -> nn.Module:
        """A fresh network with ticket ``index`` applied, in eval mode."""
        net = build_network(self.spec, device=device)
        apply_ticket(net, self.tickets[index])
        return net.eval()

    def __len__(self) -> int:
        return len(self.tickets)


# --------------------------------------------------------------------------------------------
# model <-> ticket
# --------------------------------------------------------------------------------------------


def _bn_buffers(model: nn.Module):
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for buf in ("running_mean", "running_var", "num_batches_tracked"):
                t = getattr(module, buf)
                if t is not None:
                    yield f"{name}.{buf}", module, buf


@torch.no_grad()
def extract_ticket(model: nn.Module, name: str = "", metrics: dict | None = None,
                   search_config: dict | None = None) -> Ticket:
    """Snapshot the model's current masks (from its scores or fixed masks) and BN statistics."""
    masks, keep = {}, None
    for lname, layer in masked_layers(model):
        masks[lname] = layer.mask().detach().to("cpu").bool().clone()
        keep = layer.keep_ratio if keep is None else keep
    bn_stats = {k: getattr(m, b).detach().to("cpu").clone() for k, m, b in _bn_buffers(model)}
    return Ticket(keep_ratio=float(keep), masks=masks, bn_stats=bn_stats, name=name,
                  metrics=dict(metrics or {}), search_config=dict(search_config or {}))


@torch.no_grad()
def apply_ticket(model: nn.Module, ticket: Ticket) -> nn.Module:
    """Fix the model's masks and BN statistics to ``ticket`` (on the model's device); returns it."""
    layers = dict(masked_layers(model))
    if set(layers) != set(ticket.masks):
        missing, extra = set(layers) - set(ticket.masks), set(ticket.masks) - set(layers)
        raise MaskFileError(f"ticket does not fit this network: missing masks for {sorted(missing)[:3]}, "
                            f"unknown layers {sorted(extra)[:3]}")
    for lname, layer in layers.items():      # validate everything before changing the model
        m = ticket.masks[lname]
        if tuple(m.shape) != tuple(layer.scores.shape):
            raise MaskFileError(f"mask of layer {lname!r} has shape {tuple(m.shape)}, "
                                f"the network expects {tuple(layer.scores.shape)}")
    for key, module, buf in _bn_buffers(model):
        if key not in ticket.bn_stats:
            raise MaskFileError(f"ticket has no BatchNorm statistic {key!r}")
        if tuple(ticket.bn_stats[key].shape) != tuple(getattr(module, buf).shape):
            raise MaskFileError(f"BatchNorm statistic {key!r} has shape {tuple(ticket.bn_stats[key].shape)}, "
                                f"the network expects {tuple(getattr(module, buf).shape)}")
    for lname, layer in layers.items():
        layer.fixed_mask = ticket.masks[lname].to(layer.weight.device, torch.bool)
        layer.keep_ratio = ticket.keep_ratio
        layer.dense = False
    for key, module, buf in _bn_buffers(model):
        getattr(module, buf).copy_(ticket.bn_stats[key])
    return flush_subnormal_bn_stats_(model)      # a dead channel's decayed statistics slow fp32 convs


def clear_ticket(model: nn.Module) -> None:
    """Go back to masks computed from the scores."""
    for _, layer in masked_layers(model):
        layer.fixed_mask = None


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def bit_shift_table(device: torch.device | str | None = None) -> torch.Tensor:
    """The (8,) uint8 shifts ``7 .. 0`` that :func:`unpack_bits` applies to every byte (MSB first).

    A module that unpacks often (``rst.evaluation.r2s.R2S`` on every member switch) keeps one as a buffer on its
    own device and passes it in, so unpacking never copies a table from the host.
    """
    return torch.arange(7, -1, -1, dtype=torch.uint8, device=device)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor (any shape, any device) -> uint8 ``(ceil(n / 8),)`` on the CPU, MSB first
    (``np.packbits``' layout, the mask file's ``t{i}/mask/{layer}`` tensors)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().flatten().numpy().astype(np.uint8)))


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...],
                shifts: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ``(ceil(n / 8),)`` on any device -> bool tensor of ``shape`` on the same device.

    ``shifts``: a :func:`bit_shift_table` on ``packed``'s device (default: one made there).
    ``unpack_bits(pack_bits(m), m.shape)`` equals ``m``.
    """
    n = int(np.prod(shape))
    if shifts is None:
        shifts = bit_shift_table(packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1                                   # (nbytes, 8)
    return bits.flatten()[:n].view(shape).bool()


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return pack_bits(mask)


def _unpack(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    if packed.dtype != torch.uint8 or packed.ndim != 1 or packed.numel() != (n + 7) // 8:
        raise MaskFileError(f"packed mask has {packed.numel()} bytes of {packed.dtype}, "
                            f"expected {(n + 7) // 8} bytes of uint8 for shape {shape}")
    return unpack_bits(packed, shape)


def _payload_digest(tensors: dict[str, torch.Tensor]) -> str:
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
            tensors[f"t{i}/mask/{lname}"] = _pack(m.cpu().bool())
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
    # offsets must be integers that cover exactly the data that follows the header
    dtypes = checks.mask_file_dtype if fmt == FORMAT_NAME else (lambda name: ("F32", "I64"))
    end = checks.tensor_entries(header, dtypes, len(data) - 8 - n)
    if 8 + n + end != len(data):
        raise MaskFileError(f"truncated or padded file: tensors end at byte {8 + n + end}, the file has {len(data)}")
    return header, meta, notes


def _check_mask_metadata(header: dict, meta: dict) -> tuple[NetworkSpec, dict]:
    """The network spec (bounded in size), the tickets' metadata and the tensor names; nothing is built."""
    spec = checks.network_spec(meta["network"])
    checks.tickets_meta(meta["tickets"])
    groups = checks.ticket_tensor_names((k for k in header if k != "__metadata__"), len(meta["tickets"]))
    return spec, groups


def load_tickets(source: PathOrBytes, device: torch.device | str | None = None,
                 max_bytes: int = MAX_FILE_BYTES, verify_weights: bool = True) -> CandidateSet:
    """Read a mask file (path or bytes) into a :class:`CandidateSet`. Never unpickles.

    Rebuilds the network from the recorded seed and raises :class:`MaskFileError` when the
    weights' checksum differs from the recorded one (``verify_weights=False`` skips that rebuild).
    Every other problem (too large, truncated, not safetensors, wrong version, unknown
    architecture, shapes that do not fit, corrupted payload) raises :class:`MaskFileError` too.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = _read(source, max_bytes)
    header, meta, notes = _parse_header(data)
    spec, groups = _check_mask_metadata(header, meta)
    tickets_meta = meta["tickets"]
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as e:
        raise MaskFileError(f"corrupted mask file: {checks.show(str(e), 200)}") from None
    if _payload_digest(tensors) != meta["payload_sha256"]:
        raise MaskFileError("corrupted mask file: the tensor data does not match its recorded SHA-256")

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
    del net
    tickets = []
    for i, tm in enumerate(tickets_meta):
        names = groups[i]
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
        tickets.append(Ticket(keep_ratio=float(tm["keep_ratio"]), masks=masks, bn_stats=bn,
                              name=tm.get("name", ""), metrics=tm.get("metrics", {}),
                              search_config=tm.get("search_config", {})))
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
# plain PyTorch export
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain ``state_dict``: masked weights folded in (``w * mask``), no scores, no masks.

    It loads into :func:`to_dense` 's module, or any ``torch.nn`` network of the same layout.
    """
    out = {}
    layers = dict(masked_layers(model))
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if owner in layers:
            if leaf == "weight":
                out[key] = layers[owner].effective_weight().detach().clone()
            continue   # scores (and fixed_mask, which is not persistent) are dropped
        out[key] = value.detach().clone()
    return out


def to_dense(model: nn.Module) -> nn.Module:
    """A copy of ``model`` made of plain ``nn.Conv2d`` / ``nn.Linear`` layers holding ``w * mask``."""
    import copy

    dense = copy.deepcopy(model)
    for name, layer in list(masked_layers(dense)):
        parent = dense.get_submodule(name.rpartition(".")[0]) if "." in name else dense
        leaf = name.rpartition(".")[2]
        w = layer.effective_weight().detach().clone()
        if isinstance(layer, nn.Conv2d):
            plain = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                              layer.padding, layer.dilation, layer.groups, bias=False)
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, bias=False)
        plain.weight = nn.Parameter(w, requires_grad=False)
        setattr(parent, leaf, plain)
    return dense


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
    from safetensors import SafetensorError
    from safetensors.torch import load

    from .masked import set_dense
    data = _read(source, max_bytes)
    _, meta, notes = _parse_header(data, fmt=WEIGHTS_FORMAT)
    spec = checks.network_spec(meta["network"])
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as e:
        raise MaskFileError(f"corrupted weights file: {checks.show(str(e), 200)}") from None
    if _payload_digest(tensors) != meta["payload_sha256"]:
        raise MaskFileError("corrupted weights file: the tensor data does not match its recorded SHA-256")
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
