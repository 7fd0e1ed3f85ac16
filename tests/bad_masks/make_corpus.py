"""Write the corpus of bad mask files that ``tests/test_masks.py`` feeds to ``rst.load_tickets``.

Run once from the repository root (the outputs are committed; each file is well under 100 KB):

    .venv/bin/python tests/bad_masks/make_corpus.py

``good.rst.safetensors`` is the control every other file is derived from: two tickets (keep ratio
0.5 and 0.1) of ``NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0)``.
It also pins the format and the weight generator: if it stops loading, either the format or the
seeded weights changed (bump ``FORMAT_VERSION`` / regenerate on purpose, never silently).

``good_global.rst.safetensors`` is a second control: one network-wide ("global" scope) ticket, which
records its per-layer kept counts.

Every other file must make ``load_tickets`` (then ``.model(0)``) raise ``MaskFileError`` whose message
contains a keyword, or load with a ``MaskFileWarning`` naming a keyword (the files whose metadata
digest was removed). ``expected.json`` holds, for each file, ``{"expect": "error" | "warning",
"keyword": ..., "class": ...}``; ``tests/test_masks.py`` and ``tests/test_hostile_files.py`` read it.
Every class of hostile input has at least three files. Regenerating overwrites the files in place.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import struct
from pathlib import Path

import torch
from safetensors.torch import load, save

from rst.network.masked import set_global_keep, set_keep_ratio
from rst.network.masks import CandidateSet, _payload_digest, extract_ticket, to_bytes
from rst.network.models import NetworkSpec, build_network
from rst.network.weights import weight_checksum

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


def remake(meta: dict, tensors: dict[str, torch.Tensor], rehash: bool = True, digest: bool = True) -> bytes:
    """A well-formed safetensors file with ``meta`` as its rst metadata (payload hash recomputed).

    ``digest``: also write the metadata's ``rst_sha256``, as a careful forger would (the file is then
    refused for what it says, not for a missing digest).
    """
    if rehash:
        meta = {**meta, "payload_sha256": _payload_digest(tensors)}
    return remake_raw(json.dumps(meta), tensors, digest)


def remake_raw(raw: str, tensors: dict[str, torch.Tensor], digest: bool = True) -> bytes:
    """Like :func:`remake` with the metadata JSON given as text (for numbers ``json.dumps`` cannot write)."""
    block = {"rst": raw, **({"rst_sha256": hashlib.sha256(raw.encode()).hexdigest()} if digest else {})}
    return save({k: v.clone() for k, v in tensors.items()}, metadata=block)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def global_file() -> bytes:
    """One network-wide top-k ticket (keep 0.2) over the control network."""
    spec = NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0)
    model = build_network(spec, keep_ratio=0.2)
    set_global_keep(model, 0.2)
    ticket = extract_ticket(model, name="global0.2", search_config={"keep_ratio": 0.2, "scope": "global"})
    prov = {"versions": {"rst": "0.1.0"}, "git_revision": "corpus", "created": "2021-10-27T00:00:00+00:00"}
    return to_bytes(CandidateSet(spec, [ticket], meta={"provenance": prov}))


def with_header(header: dict, payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


# file -> (class, a word the error message must contain) for the files of the first corpus
KEYWORDS = {
    "empty.rst.safetensors": "too short",
    "truncated_header.rst.safetensors": "truncated",
    "truncated_half.rst.safetensors": "truncated",
    "truncated_last_byte.rst.safetensors": "truncated",
    "padded.rst.safetensors": "padded",
    "header_length_huge.rst.safetensors": "header length",
    "header_length_past_end.rst.safetensors": "truncated",
    "flipped_payload.rst.safetensors": "SHA-256",
    "metadata_digit_flipped.rst.safetensors": "metadata does not match",
    "broken_header_json.rst.safetensors": "not JSON",
    "header_not_object.rst.safetensors": "not a JSON object",
    "header_metadata_not_object.rst.safetensors": "__metadata__",
    "header_entry_without_offsets.rst.safetensors": "data_offsets",
    "broken_metadata_json.rst.safetensors": "not valid JSON",
    "format_version_99.rst.safetensors": "version",
    "format_rst_weights.rst.safetensors": "format",
    "missing_weight_checksum.rst.safetensors": "weight_checksum",
    "no_tickets.rst.safetensors": "tickets",
    "ticket_without_keep_ratio.rst.safetensors": "keep_ratio",
    "keep_ratio_out_of_range.rst.safetensors": "keep_ratio",
    "unknown_architecture.rst.safetensors": "unknown architecture",
    "unknown_dataset.rst.safetensors": "unknown dataset",
    "unknown_spec_field.rst.safetensors": "prune_rate",
    "masks_of_another_arch.rst.safetensors": "no mask for layer",
    "masks_of_another_width.rst.safetensors": "packed mask",
    "extra_mask_layer.rst.safetensors": "does not have",
    "missing_mask_layer.rst.safetensors": "no mask for layer",
    "bn_stat_wrong_shape.rst.safetensors": "BatchNorm",
    "bn_stat_missing.rst.safetensors": "BatchNorm",
    "stray_tensor.rst.safetensors": "no ticket",
    "checksum_wrong_seed.rst.safetensors": "checksum",
    "checksum_wrong_init.rst.safetensors": "checksum",
    "checksum_tampered.rst.safetensors": "checksum",
    "reference_checkpoint.pth": "not a safetensors file",
    "pickle_payload.pkl": "not a safetensors file",
    "png_header.png": "not a safetensors file",
    "random_bytes.bin": "not a safetensors file",
    "json_text.json": "not a safetensors file",
    "plain_safetensors.safetensors": "no 'rst' metadata",
    "foreign_metadata.safetensors": "no 'rst' metadata",
}

GOOD = ("good.rst.safetensors", "good_global.rst.safetensors")


def corpus() -> tuple[dict[str, bytes], dict[str, dict]]:
    """(file name -> bytes, file name -> expectation) of every corpus file."""
    files = basic_corpus()
    expected = {name: {"expect": "error", "keyword": kw, "class": "basic"} for name, kw in KEYWORDS.items()}
    for name, (cls, expect, keyword, data) in hostile_corpus(files["good.rst.safetensors"]).items():
        files[name] = data
        expected[name] = {"expect": expect, "keyword": keyword, "class": cls}
    files["good_global.rst.safetensors"] = global_file()
    return files, expected


def hostile_corpus(good: bytes) -> dict[str, tuple[str, str, str, bytes]]:
    """The classes of issue 13, at least three files each: name -> (class, expect, keyword, bytes)."""
    header, meta, tensors = split(good)
    (n,) = struct.unpack("<Q", good[:8])
    payload = good[8 + n:]
    raw = header["__metadata__"]["rst"]
    spec = meta["network"]
    t0, t1 = meta["tickets"]
    out: dict[str, tuple[str, str, str, bytes]] = {}

    def add(cls, name, keyword, data, expect="error"):
        assert name not in out, name
        out[name + ".rst.safetensors"] = (cls, expect, keyword, data)

    def with_meta(m: dict) -> dict:
        return {**meta, **m}

    first = sorted(k for k in header if k != "__metadata__")[0]
    masks = sorted(k for k in tensors if "/mask/" in k)
    bn_var = sorted(k for k in tensors if k.startswith("t0/bn/") and k.endswith("running_var"))[0]
    bn_mean = sorted(k for k in tensors if k.startswith("t0/bn/") and k.endswith("running_mean"))[0]

    # --- deeply nested JSON (json.loads raised RecursionError) ---------------------------
    deep = 20_000
    text = json.dumps(header)
    add("nested", "nested_header_key", "nested", with_header_text(text[:-1] + f', "x": {nested(deep)}}}', payload))
    entry = json.dumps(header[first])
    add("nested", "nested_tensor_entry", "nested",
        with_header_text(text.replace(entry, entry[:-1] + f', "x": {nested(deep)}}}', 1), payload))
    add("nested", "nested_rst_string", "nested", remake_raw(raw[:-1] + f', "x": {nested(deep)}}}', tensors))
    add("nested", "nested_rst_moderate", "nested",
        remake(with_meta({"extra": json.loads(nested(200))}), tensors))
    add("nested", "nested_metric", "nested",
        remake(with_meta({"tickets": [{**t0, "metrics": {"clean_acc": json.loads(nested(100))}}, t1]}), tensors))

    # --- numbers out of range (OverflowError) --------------------------------------------
    offs = json.dumps(header[first]["data_offsets"])
    add("range", "offset_1e400", "data_offsets",
        with_header_text(text.replace(offs, f"[{header[first]['data_offsets'][0]}, 1e400]", 1), payload))
    add("range", "seed_inf", "seed", remake_raw(raw.replace('"seed": 0', '"seed": Infinity', 1), tensors))
    add("range", "seed_1e400", "seed", remake_raw(raw.replace('"seed": 0', '"seed": 1e400', 1), tensors))
    add("range", "width_inf", "width", remake_raw(raw.replace('"width": 0.25', '"width": 1e400', 1), tensors))
    add("range", "keep_ratio_nan", "keep_ratio",
        remake_raw(raw.replace('"keep_ratio": 0.5', '"keep_ratio": NaN', 1), tensors))
    shape = json.dumps(header[first]["shape"])
    add("range", "shape_1e400", "shape", with_header_text(text.replace(shape, "[1e400]", 1), payload))

    # --- unexpected dtypes (TypeError in the payload digest) -----------------------------
    add("dtype", "bn_bf16", "dtype", remake(meta, {**tensors, bn_mean: tensors[bn_mean].to(torch.bfloat16)}))
    add("dtype", "bn_f64", "dtype", remake(meta, {**tensors, bn_mean: tensors[bn_mean].to(torch.float64)}))
    add("dtype", "mask_f16", "dtype", remake(meta, {**tensors, masks[0]: tensors[masks[0]].to(torch.float16)}))
    add("dtype", "mask_bool", "dtype", remake(meta, {**tensors, masks[0]: tensors[masks[0]] > 0}))

    # --- type confusion in the metadata --------------------------------------------------
    add("types", "weight_checksum_int", "weight_checksum", remake(with_meta({"weight_checksum": 1234}), tensors))
    add("types", "payload_sha256_int", "payload_sha256", remake(with_meta({"payload_sha256": 5}), tensors, rehash=False))
    add("types", "seed_string", "seed", remake(with_meta({"network": {**spec, "seed": "zero"}}), tensors))
    add("types", "seed_float", "seed", remake(with_meta({"network": {**spec, "seed": 0.0}}), tensors))
    add("types", "seed_2_70", "seed", remake(with_meta({"network": {**spec, "seed": 2**70}}), tensors))
    add("types", "width_string", "width", remake(with_meta({"network": {**spec, "width": "0.25"}}), tensors))
    add("types", "arch_list", "arch", remake(with_meta({"network": {**spec, "arch": ["fmnist_conv4"]}}), tensors))
    add("types", "network_list", "network", remake(with_meta({"network": list(spec.values())}), tensors))
    add("types", "keep_ratio_string", "keep_ratio",
        remake(with_meta({"tickets": [{**t0, "keep_ratio": "0.5"}, t1]}), tensors))
    add("types", "metrics_list", "metrics", remake(with_meta({"tickets": [{**t0, "metrics": [1, 2]}, t1]}), tensors))
    add("types", "metric_value_string", "metric",
        remake(with_meta({"tickets": [{**t0, "metrics": {"clean_acc": {"value": "high"}}}, t1]}), tensors))
    add("types", "search_eps_string", "eps",
        remake(with_meta({"tickets": [{**t0, "search_config": {"eps": "8/255"}}, t1]}), tensors))
    add("types", "format_version_true", "version", remake(with_meta({"format_version": True}), tensors))
    add("types", "rst_not_string", "not a JSON string",
        with_header({**header, "__metadata__": {"rst": meta}}, payload))

    # --- a network too large to build (width from the metadata drives the allocation) ----
    add("size", "width_1e6", "width", remake(with_meta({"network": {**spec, "width": 1e6}}), tensors))
    add("size", "width_24", "limit", remake(with_meta({"network": {**spec, "width": 24}}), tensors))
    add("size", "wrn34_width_2", "limit",
        remake(with_meta({"network": {**spec, "arch": "wrn34_10", "width": 2.0}}), tensors))
    add("size", "vgg16_width_3", "limit",
        remake(with_meta({"network": {**spec, "arch": "vgg16_bn", "width": 3.0}}), tensors))

    # --- too many tickets / tensors (validation was quadratic) ---------------------------
    add("count", "tickets_3000", "limit",
        remake(with_meta({"tickets": [{"keep_ratio": 0.5}] * 3000}), tensors))
    add("count", "tickets_257", "limit",
        remake(with_meta({"tickets": [t0, t1] + [{"keep_ratio": 0.1, "name": f"k{i}"} for i in range(255)]}), tensors))
    stray = {f"s{i}": torch.zeros(1, dtype=torch.uint8) for i in range(1000)}
    add("count", "stray_1000", "no ticket", remake(meta, {**tensors, **stray}))
    add("count", "stray_ticket_index_huge", "no ticket",
        remake(meta, {**tensors, "t999999/mask/" + masks[0].split("/", 2)[2]: tensors[masks[0]]}))

    # --- BatchNorm statistics that make the network output NaN or constants --------------
    def bn_edit(key, fill):
        v = tensors[key].clone()
        v[0] = fill
        return remake(meta, {**tensors, key: v})
    add("bn", "bn_nan_mean", "NaN", bn_edit(bn_mean, float("nan")))
    add("bn", "bn_inf_var", "infinite", bn_edit(bn_var, float("inf")))
    add("bn", "bn_negative_var", "negative", bn_edit(bn_var, -1.0))
    add("bn", "bn_neg_inf_mean", "infinite", bn_edit(bn_mean, float("-inf")))

    # --- masks whose kept counts contradict the keep ratio and granularity ---------------
    t1_masks = [k for k in masks if k.startswith("t1/")]
    legacy = with_meta({"tickets": [{k: v for k, v in t.items() if k != "kept"} for t in meta["tickets"]]})
    ones = {k: torch.full_like(tensors[k], 255) for k in t1_masks}        # every weight kept under "keep 0.1"
    add("kept", "mask_all_ones", "contradict", remake(legacy, {**tensors, **ones}))
    zeros = {k: torch.zeros_like(tensors[k]) for k in t1_masks}
    lying = with_meta({"tickets": [t0, {**t1, "kept": {k.split("/", 2)[2]: 0 for k in t1_masks}}]})
    add("kept", "mask_all_zeros_kept_recorded", "contradict", remake(lying, {**tensors, **zeros}))
    one_off = tensors[t1_masks[0]].clone()
    one_off[0] = one_off[0] ^ 0x80
    add("kept", "mask_one_bit_flipped", "contradict", remake(meta, {**tensors, t1_masks[0]: one_off}))
    g_header, g_meta, g_tensors = split(global_file())
    g_masks = sorted(k for k in g_tensors if "/mask/" in k)
    (gt,) = g_meta["tickets"]
    g_one_off = g_tensors[g_masks[0]].clone()
    g_one_off[0] = g_one_off[0] ^ 0x01
    add("kept", "global_kept_record_contradicted", "contradict",
        remake(g_meta, {**g_tensors, g_masks[0]: g_one_off}))
    g_ones = {k: torch.full_like(g_tensors[k], 255) for k in g_masks}
    g_kept = {layer: math.prod(shape) for layer, shape in gt["shapes"].items()}
    add("kept", "global_all_ones_consistent_record", "contradict",
        remake({**g_meta, "tickets": [{**gt, "kept": g_kept}]}, {**g_tensors, **g_ones}))

    # --- metadata edited and its digest removed: loads, with a warning -------------------
    add("digest", "no_digest", "rst_sha256", remake_raw(raw, tensors, digest=False), expect="warning")
    add("digest", "no_digest_metric_edited", "rst_sha256",
        remake_raw(raw.replace('"value": 0.5', '"value": 0.99', 1), tensors, digest=False), expect="warning")
    add("digest", "no_digest_name_edited", "rst_sha256",
        remake_raw(raw.replace('"name": "kr0.5"', '"name": "best-ever"', 1), tensors, digest=False), expect="warning")
    return out


def with_header_text(text: str, payload: bytes) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def basic_corpus() -> dict[str, bytes]:
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
    files, expected = corpus()
    assert set(expected) | set(GOOD) == set(files)
    for name, data in files.items():
        assert len(data) < 100_000, name
        (HERE / name).write_bytes(data)
        print(f"{len(data):7d}  {name}")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
