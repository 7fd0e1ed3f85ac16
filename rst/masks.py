"""The mask file format: the only code in the project that reads or writes ticket files.

A file holds one ticket or a whole candidate set drawn from the same seeded random network:

* safetensors tensors (never pickle):
    ``t{i}/mask/{layer}``   uint8, the layer's boolean mask (score shape) bit-packed, MSB first
    ``t{i}/bn/{module}.{buffer}``  float32 BatchNorm running statistics of ticket ``i``
* one safetensors metadata entry ``rst`` holding JSON: format name and version, the network spec
  (architecture, dataset, width, init, seed, granularity), the SHA-256 of the regenerated weights,
  per ticket its keep ratio, name, metrics (each with the attack that measured it) and search
  config, the provenance (package versions, git revision, time) and a SHA-256 of the tensor payload;
* a second metadata entry ``rst_sha256``: the SHA-256 of that JSON text (checked when present; files
  written before it existed load without it).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn as nn

from .masked import masked_layers
from .models import NetworkSpec, build_network
from .provenance import provenance
from .weights import weight_checksum

FORMAT_NAME = "rst-mask"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024          # files above this are refused before any parsing
SUFFIX = ".rst.safetensors"

PathOrBytes = Union[str, os.PathLike, bytes]


class MaskFileError(ValueError):
    """A mask file that cannot be used; the message names the problem."""


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
    """Tickets over the same seeded random network (``spec``), plus the file's metadata."""
    spec: NetworkSpec
    tickets: list[Ticket]
    weight_checksum: str = ""
    meta: dict = field(default_factory=dict)

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
    return model


def clear_ticket(model: nn.Module) -> None:
    """Go back to masks computed from the scores."""
    for _, layer in masked_layers(model):
        layer.fixed_mask = None


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.flatten().numpy().astype(np.uint8)))


def _unpack(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    if packed.dtype != torch.uint8 or packed.ndim != 1 or packed.numel() != (n + 7) // 8:
        raise MaskFileError(f"packed mask has {packed.numel()} bytes of {packed.dtype}, "
                            f"expected {(n + 7) // 8} bytes of uint8 for shape {shape}")
    bits = np.unpackbits(packed.numpy(), count=n)
    return torch.from_numpy(bits.astype(bool)).view(shape)


def _payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


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
        for key, v in t.bn_stats.items():
            tensors[f"t{i}/bn/{key}"] = v.detach().cpu().to(torch.float32).contiguous()
        tickets_meta.append({
            "name": t.name or f"keep{t.keep_ratio:g}", "keep_ratio": t.keep_ratio,
            "kept_fraction": t.kept_fraction(), "metrics": t.metrics, "search_config": t.search_config,
            "shapes": {lname: list(m.shape) for lname, m in t.masks.items()},
        })
    meta = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "network": cs.spec.to_dict(),
        "weight_checksum": checksum, "tickets": tickets_meta,
        "provenance": cs.meta.get("provenance") or provenance(),
        "extra": cs.meta.get("extra", {}),
        "payload_sha256": _payload_digest(tensors),
    }
    return save(tensors, metadata=_metadata_block(meta))


def save_tickets(path: str | os.PathLike, cs: CandidateSet) -> Path:
    """Write ``cs`` atomically (temporary file, then rename); returns the path."""
    path = Path(path)
    data = to_bytes(cs)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def read_metadata(source: PathOrBytes, max_bytes: int = MAX_FILE_BYTES) -> dict:
    """The JSON metadata of a mask file, validated; the tensors are not decoded."""
    data = _read(source, max_bytes)
    return _parse_header(data)[1]


def _read(source: PathOrBytes, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "uploaded data"
    else:
        p = Path(source)
        if not p.is_file():
            raise MaskFileError(f"no mask file at {p}")
        size = p.stat().st_size
        if size > max_bytes:
            raise MaskFileError(f"{p.name} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                                "limit for mask files")
        data = p.read_bytes()
        label = p.name
    if len(data) > max_bytes:
        raise MaskFileError(f"{label} is {len(data) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                            "limit for mask files")
    return data


def _parse_header(data: bytes, fmt: str = FORMAT_NAME) -> tuple[int, dict]:
    if len(data) < 8:
        raise MaskFileError(f"not a mask file: {len(data)} bytes is too short for a safetensors header (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    if n == 0 or n > 100 * 2**20:
        raise MaskFileError("not a safetensors file: its first 8 bytes do not give a plausible header length")
    if 8 + n > len(data):
        raise MaskFileError(f"truncated file: the header says {n} bytes, only {len(data) - 8} follow")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MaskFileError("not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise MaskFileError("not a safetensors file: its header is not a JSON object")
    block = header.get("__metadata__") or {}
    if not isinstance(block, dict):
        raise MaskFileError("not a safetensors file: its '__metadata__' is not a JSON object")
    raw = block.get("rst")
    if raw is None:
        raise MaskFileError("a safetensors file, but not an RST mask file (no 'rst' metadata)")
    digest = block.get("rst_sha256")           # absent in files written before it was added
    if digest is not None and digest != hashlib.sha256(str(raw).encode()).hexdigest():
        raise MaskFileError("corrupted mask file: its 'rst' metadata does not match its recorded SHA-256")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        raise MaskFileError("corrupted mask file: its 'rst' metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise MaskFileError(f"not an {fmt!r} file: its metadata 'format' is {found!r}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise MaskFileError(f"unsupported mask file format version {version!r}; this rst reads version "
                            f"{FORMAT_VERSION} (upgrade rst, or re-export the file)")
    required = ("network", "weight_checksum", "tickets", "payload_sha256") if fmt == FORMAT_NAME else ("network", "payload_sha256")
    for key in required:
        if key not in meta:
            raise MaskFileError(f"corrupted mask file: metadata has no {key!r}")
    # offsets must cover exactly the data that follows the header
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, IndexError, TypeError, ValueError):
        raise MaskFileError("corrupted file: a tensor entry of its safetensors header has no valid "
                            "'data_offsets'") from None
    if 8 + n + end != len(data):
        raise MaskFileError(f"truncated or padded file: tensors end at byte {8 + n + end}, the file has {len(data)}")
    return n, meta


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
    _, meta = _parse_header(data)
    try:
        spec = NetworkSpec.from_dict(meta["network"])
    except (KeyError, ValueError, TypeError) as e:
        raise MaskFileError(f"mask file for a network this rst cannot build: {e}") from None
    tickets_meta = meta["tickets"]
    if not (isinstance(tickets_meta, list) and tickets_meta and all(isinstance(t, dict) for t in tickets_meta)):
        raise MaskFileError("corrupted mask file: metadata 'tickets' is not a non-empty list of objects")
    for i, tm in enumerate(tickets_meta):
        kr = tm.get("keep_ratio")
        if isinstance(kr, bool) or not isinstance(kr, (int, float)) or not 0.0 < kr <= 1.0:
            raise MaskFileError(f"corrupted mask file: ticket {i} has keep_ratio {kr!r}, not a number in (0, 1]")
        if not (isinstance(tm.get("name", ""), str) and isinstance(tm.get("metrics", {}), dict)
                and isinstance(tm.get("search_config", {}), dict)):
            raise MaskFileError(f"corrupted mask file: ticket {i} has a malformed name, metrics or search_config")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise MaskFileError(f"corrupted mask file: {e}") from None
    if _payload_digest(tensors) != meta["payload_sha256"]:
        raise MaskFileError("corrupted mask file: the tensor data does not match its recorded SHA-256")
    known = tuple(f"t{i}/{kind}/" for i in range(len(tickets_meta)) for kind in ("mask", "bn"))
    stray = sorted(k for k in tensors if not k.startswith(known))
    if stray:
        raise MaskFileError(f"corrupted mask file: tensors that belong to no ticket: {stray[:3]}")

    net = build_network(spec)
    shapes = {name: tuple(layer.scores.shape) for name, layer in masked_layers(net)}
    bn_shapes = {key: tuple(getattr(m, b).shape) for key, m, b in _bn_buffers(net)}
    if verify_weights:
        checksum = weight_checksum(net)
        if checksum != meta["weight_checksum"]:
            raise MaskFileError(
                f"the weights regenerated from seed {spec.seed} ({spec.arch}, {spec.init}) have checksum "
                f"{checksum[:12]}…, the file records {meta['weight_checksum'][:12]}…: this file was made "
                "with a different random network (or a different rst version's generator)")
    tickets = []
    for i, tm in enumerate(tickets_meta):
        masks = {}
        for lname, shape in shapes.items():
            key = f"t{i}/mask/{lname}"
            if key not in tensors:
                raise MaskFileError(f"ticket {i} has no mask for layer {lname!r} of {spec.arch}")
            masks[lname] = _unpack(tensors[key], shape)
        extra = [k for k in tensors if k.startswith(f"t{i}/mask/") and k[len(f't{i}/mask/'):] not in shapes]
        if extra:
            raise MaskFileError(f"ticket {i} has masks for layers {spec.arch} does not have: {extra[:3]}")
        bn = {k[len(f"t{i}/bn/"):]: v for k, v in tensors.items() if k.startswith(f"t{i}/bn/")}
        unfit = sorted(set(bn) ^ set(bn_shapes)) or sorted(k for k, v in bn.items() if tuple(v.shape) != bn_shapes[k])
        if unfit:
            raise MaskFileError(f"ticket {i} has BatchNorm statistics that do not fit {spec.arch}: {unfit[:3]}")
        tickets.append(Ticket(keep_ratio=float(tm["keep_ratio"]), masks=masks, bn_stats=bn,
                              name=tm.get("name", ""), metrics=tm.get("metrics", {}),
                              search_config=tm.get("search_config", {})))
    cs = CandidateSet(spec, tickets, meta["weight_checksum"], meta)
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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=_metadata_block(header)))
    os.replace(tmp, path)
    return path


def load_weights(source: PathOrBytes, device: torch.device | str | None = None,
                 max_bytes: int = 4 * MAX_FILE_BYTES) -> tuple[nn.Module, dict]:
    """Load a file of :func:`save_weights` into a dense network (eval mode); returns (model, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from .masked import set_dense
    data = _read(source, max_bytes)
    _, meta = _parse_header(data, fmt=WEIGHTS_FORMAT)
    try:
        spec = NetworkSpec.from_dict(meta["network"])
        tensors = load(data)
    except (KeyError, ValueError, TypeError, SafetensorError, RuntimeError) as e:
        raise MaskFileError(f"corrupted weights file: {e}") from None
    if _payload_digest(tensors) != meta["payload_sha256"]:
        raise MaskFileError("corrupted weights file: the tensor data does not match its recorded SHA-256")
    model = build_network(spec)
    set_dense(model, True)
    expected = {k for k in model.state_dict() if not k.endswith(".scores")}
    if set(tensors) != expected:
        raise MaskFileError(f"weights file does not fit {spec.arch}: differing keys "
                            f"{sorted(set(tensors) ^ expected)[:3]}")
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for k, v in tensors.items():
            targets[k].copy_(v)
    return (model.to(device) if device is not None else model).eval(), meta
