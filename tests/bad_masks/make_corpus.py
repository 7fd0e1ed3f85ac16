"""Write the corpus of bad mask files that ``tests/test_masks.py`` feeds to ``rst.load_tickets``.

Run once from the repository root (the outputs are committed; each file is well under 100 KB):

    .venv/bin/python tests/bad_masks/make_corpus.py

``good.rst.safetensors`` is the control every other file is derived from: two tickets (keep ratio
0.5 and 0.1) of ``NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0)``.
It also pins the format and the weight generator: if it stops loading, either the format or the
seeded weights changed (bump ``FORMAT_VERSION`` / regenerate on purpose, never silently).

Every other file must make ``load_tickets`` raise ``MaskFileError``; the test holds, for each file,
a keyword its message must contain. Regenerating overwrites the files in place.
"""
from __future__ import annotations

import io
import json
import pickle
import struct
from pathlib import Path

import torch
from safetensors.torch import load, save

from rst.masked import set_keep_ratio
from rst.masks import CandidateSet, _payload_digest, extract_ticket, to_bytes
from rst.models import NetworkSpec, build_network
from rst.weights import weight_checksum

HERE = Path(__file__).resolve().parent
PICKLE_MARKER = "RST-BAD-MASKS-PICKLE-WAS-EXECUTED"


class _PrintsWhenUnpickled:
    """Unpickling this calls ``print(PICKLE_MARKER)``: a harmless stand-in for a malicious pickle."""

    def __reduce__(self):
        return (print, (PICKLE_MARKER,))


def good_file() -> bytes:
    torch.manual_seed(0)
    spec = NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0)
    model = build_network(spec)
    tickets = []
    for keep_ratio in (0.5, 0.1):
        set_keep_ratio(model, keep_ratio)
        model.train()
        with torch.no_grad():          # non-trivial BN running statistics
            for _ in range(3):
                model(torch.rand(8, 1, 28, 28))
        tickets.append(extract_ticket(model, name=f"kr{keep_ratio:g}",
                                      metrics={"clean_acc": {"value": 0.5, "attack": None}},
                                      search_config={"keep_ratio": keep_ratio, "epochs": 0}))
    prov = {"versions": {"rst": "0.1.0"}, "git_revision": "corpus", "created": "2021-10-27T00:00:00+00:00"}
    return to_bytes(CandidateSet(spec, tickets, meta={"provenance": prov}))


def split(data: bytes) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(safetensors header, rst metadata, tensors) of a well-formed file."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, json.loads(header["__metadata__"]["rst"]), load(data)


def remake(meta: dict, tensors: dict[str, torch.Tensor], rehash: bool = True) -> bytes:
    """A well-formed safetensors file with ``meta`` as its rst metadata (payload hash recomputed)."""
    if rehash:
        meta = {**meta, "payload_sha256": _payload_digest(tensors)}
    return save({k: v.clone() for k, v in tensors.items()}, metadata={"rst": json.dumps(meta)})


def with_header(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def corpus() -> dict[str, bytes]:
    good = good_file()
    header, meta, tensors = split(good)
    (n,) = struct.unpack("<Q", good[:8])
    payload = good[8 + n:]
    spec = meta["network"]
    files: dict[str, bytes] = {"good.rst.safetensors": good}

    # --- not a complete file -------------------------------------------------------------
    files["empty.rst.safetensors"] = b""
    files["truncated_header.rst.safetensors"] = good[:200]
    files["truncated_half.rst.safetensors"] = good[:len(good) // 2]
    files["truncated_last_byte.rst.safetensors"] = good[:-1]
    files["padded.rst.safetensors"] = good + b"\0" * 16
    files["header_length_huge.rst.safetensors"] = struct.pack("<Q", 2**40) + good[8:]
    files["header_length_past_end.rst.safetensors"] = struct.pack("<Q", len(good)) + good[8:]

    # --- corrupted bytes -----------------------------------------------------------------
    flipped = bytearray(good)
    mid = 8 + n + len(payload) // 2
    for i in range(mid, mid + 16):
        flipped[i] ^= 0xFF
    files["flipped_payload.rst.safetensors"] = bytes(flipped)
    broken = bytearray(good)
    at = good.index(b'"dtype"', 8)
    broken[at] = 0x00                                   # a NUL where a quote was: header is not JSON
    files["broken_header_json.rst.safetensors"] = bytes(broken)
    files["header_not_object.rst.safetensors"] = struct.pack("<Q", 2) + b"[]"
    files["header_metadata_not_object.rst.safetensors"] = with_header({**header, "__metadata__": "rst"}, payload)
    first = sorted(k for k in header if k != "__metadata__")[0]
    files["header_entry_without_offsets.rst.safetensors"] = with_header(
        {**header, first: {"dtype": "U8", "shape": header[first]["shape"]}}, payload)
    bad_json = header["__metadata__"]["rst"].replace('"tickets": [', '"tickets": [[', 1)
    files["broken_metadata_json.rst.safetensors"] = with_header(
        {**header, "__metadata__": {"rst": bad_json}}, payload)

    flipped_meta = header["__metadata__"]["rst"].replace('"value": 0.5', '"value": 0.9', 1)
    assert flipped_meta != header["__metadata__"]["rst"]
    files["metadata_digit_flipped.rst.safetensors"] = with_header(
        {**header, "__metadata__": {**header["__metadata__"], "rst": flipped_meta}}, payload)

    # --- metadata that parses but is wrong -----------------------------------------------
    files["format_version_99.rst.safetensors"] = remake({**meta, "format_version": 99}, tensors)
    files["format_rst_weights.rst.safetensors"] = remake({**meta, "format": "rst-weights"}, tensors)
    files["missing_weight_checksum.rst.safetensors"] = remake(
        {k: v for k, v in meta.items() if k != "weight_checksum"}, tensors)
    files["no_tickets.rst.safetensors"] = remake({**meta, "tickets": []}, tensors)
    t0 = {k: v for k, v in meta["tickets"][0].items() if k != "keep_ratio"}
    files["ticket_without_keep_ratio.rst.safetensors"] = remake(
        {**meta, "tickets": [t0, meta["tickets"][1]]}, tensors)
    files["keep_ratio_out_of_range.rst.safetensors"] = remake(
        {**meta, "tickets": [{**meta["tickets"][0], "keep_ratio": 7}, meta["tickets"][1]]}, tensors)
    files["unknown_architecture.rst.safetensors"] = remake(
        {**meta, "network": {**spec, "arch": "alexnet_9000"}}, tensors)
    files["unknown_dataset.rst.safetensors"] = remake(
        {**meta, "network": {**spec, "dataset": "imagenet21k"}}, tensors)
    files["unknown_spec_field.rst.safetensors"] = remake(
        {**meta, "network": {**spec, "prune_rate": 0.5}}, tensors)

    # --- architecture / shapes that do not fit (checksums consistent, so the shapes are reached)
    other_arch = NetworkSpec(**{**spec, "arch": "fmnist_resnet"})
    files["masks_of_another_arch.rst.safetensors"] = remake(
        {**meta, "network": other_arch.to_dict(), "weight_checksum": weight_checksum(build_network(other_arch))},
        tensors)
    other_width = NetworkSpec(**{**spec, "width": 0.5})
    files["masks_of_another_width.rst.safetensors"] = remake(
        {**meta, "network": other_width.to_dict(),
         "weight_checksum": weight_checksum(build_network(other_width))}, tensors)
    files["extra_mask_layer.rst.safetensors"] = remake(
        meta, {**tensors, "t0/mask/1.head.99": torch.zeros(2, dtype=torch.uint8)})
    mask0 = sorted(k for k in tensors if k.startswith("t0/mask/"))[0]
    files["missing_mask_layer.rst.safetensors"] = remake(
        meta, {k: v for k, v in tensors.items() if k != mask0})
    bn0 = sorted(k for k in tensors if k.startswith("t0/bn/") and k.endswith("running_mean"))[0]
    files["bn_stat_wrong_shape.rst.safetensors"] = remake(meta, {**tensors, bn0: torch.zeros(3)})
    files["bn_stat_missing.rst.safetensors"] = remake(meta, {k: v for k, v in tensors.items() if k != bn0})
    files["stray_tensor.rst.safetensors"] = remake(meta, {**tensors, "t2" + mask0[2:]: tensors[mask0]})

    # --- a different random network than the one recorded --------------------------------
    files["checksum_wrong_seed.rst.safetensors"] = remake({**meta, "network": {**spec, "seed": 1}}, tensors)
    files["checksum_wrong_init.rst.safetensors"] = remake(
        {**meta, "network": {**spec, "init": "kaiming_normal"}}, tensors)
    files["checksum_tampered.rst.safetensors"] = remake(
        {**meta, "weight_checksum": "0" * 64}, tensors)

    # --- not safetensors at all ----------------------------------------------------------
    buf = io.BytesIO()
    torch.save({"state_dict": {"conv.weight": torch.zeros(4, 1, 3, 3), "conv.scores": torch.zeros(4, 1, 3, 3)},
                "prune_rate": 0.5}, buf)
    files["reference_checkpoint.pth"] = buf.getvalue()
    files["pickle_payload.pkl"] = pickle.dumps(_PrintsWhenUnpickled(), protocol=2)
    files["png_header.png"] = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
                               + struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0) + b"\0" * 20)
    files["random_bytes.bin"] = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                              dtype=torch.uint8).numpy().tobytes()
    files["json_text.json"] = json.dumps({"format": "rst-mask", "format_version": 1}).encode()
    files["plain_safetensors.safetensors"] = save({"weight": torch.zeros(4, 4)})
    files["foreign_metadata.safetensors"] = save({"weight": torch.zeros(4, 4)}, metadata={"format": "pt"})
    return files


def main() -> None:
    for name, data in corpus().items():
        assert len(data) < 100_000, name
        (HERE / name).write_bytes(data)
        print(f"{len(data):7d}  {name}")


if __name__ == "__main__":
    main()
