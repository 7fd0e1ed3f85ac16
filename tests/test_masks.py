"""The mask file format: round trips, size, dense export, and a corpus of bad files."""
from __future__ import annotations

import hashlib
import json
import pickle
import random
import struct
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import rst
from rst.network.masked import MASKED_TYPES, masked_layers, n_keep, set_keep_ratio
from rst.network.masks import (CandidateSet, MaskFileError, MaskFileWarning, Ticket, apply_ticket, clear_ticket, dense_state_dict,
                       extract_ticket, load_tickets, read_metadata, save_tickets, to_bytes, to_dense)
from rst.network.models import NetworkSpec, build_network
from rst.runtime.provenance import git_revision, package_versions

BAD_MASKS = Path(__file__).resolve().parent / "bad_masks"


def _warm_bn(model: nn.Module, seed: int, steps: int = 3) -> None:
    """A few train-mode forwards so that the BN running statistics are not the defaults."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand(8, 1, 28, 28, generator=g))
    model.eval()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, fixed masks included (they are not in the state_dict)."""
    out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, layer in masked_layers(model):
        out[f"{name}.fixed_mask"] = None if layer.fixed_mask is None else layer.fixed_mask.clone()
        out[f"{name}.keep_ratio"] = layer.keep_ratio
    return out


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


# --------------------------------------------------------------------------------------------
# 8. save -> load round trips
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["element", "kernel", "channel"])
def test_one_ticket_round_trip_identical_logits(tmp_path, tiny_batch, granularity):
    spec = NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=3, granularity=granularity)
    model = build_network(spec, keep_ratio=0.3)
    _warm_bn(model, seed=0)
    x, _ = tiny_batch
    expected = _logits(model, x)
    path = save_tickets(tmp_path / "one.rst.safetensors", CandidateSet(spec, [extract_ticket(model, name="a")]))
    assert path.exists() and not list(tmp_path.glob("*.tmp"))      # atomic write leaves no temp file

    cs = load_tickets(path)
    assert len(cs) == 1 and cs.spec == spec
    loaded = cs.model(0)
    assert not loaded.training
    assert torch.equal(_logits(loaded, x), expected)
    for (name, a), (_, b) in zip(masked_layers(model), masked_layers(loaded)):
        assert torch.equal(a.mask().bool(), b.mask().bool()), name
        assert int(b.mask().sum()) == n_keep(b.scores.numel(), 0.3), name
    # bytes, bytearray and memoryview load the same
    data = path.read_bytes()
    for source in (data, bytearray(data), memoryview(data), str(path)):
        assert torch.equal(_logits(load_tickets(source).model(0), x), expected)


def test_candidate_set_round_trip_three_keep_ratios(tmp_path, tiny_spec, tiny_batch):
    x, _ = tiny_batch
    model = build_network(tiny_spec)
    keep_ratios = (0.05, 0.2, 0.5)
    tickets, expected = [], []
    for i, kr in enumerate(keep_ratios):
        set_keep_ratio(model, kr)
        _warm_bn(model, seed=i)
        expected.append(_logits(model, x))
        tickets.append(extract_ticket(
            model, name=f"kr{kr}",
            metrics={"clean_acc": {"value": 0.81 - i / 10, "attack": None},
                     "pgd20_acc": {"value": 0.4, "attack": {"name": "pgd", "steps": 20, "eps": 8 / 255,
                                                            "step_size": 2 / 255, "restarts": 1}}},
            search_config={"keep_ratio": kr, "lr": 0.1, "momentum": 0.9, "eps": 8 / 255, "epochs": 160}))
    cs = CandidateSet(tiny_spec, tickets, meta={"extra": {"note": "três tickets"}})
    path = save_tickets(tmp_path / "set.rst.safetensors", cs)
    loaded = load_tickets(path)
    assert len(loaded) == 3
    for i, kr in enumerate(keep_ratios):
        t = loaded.tickets[i]
        assert t.keep_ratio == kr and t.name == f"kr{kr}"
        assert t.metrics == tickets[i].metrics            # floats survive JSON exactly
        assert t.search_config == tickets[i].search_config
        assert t.kept_fraction() == pytest.approx(kr, abs=0.01)
        for key, v in tickets[i].bn_stats.items():
            assert torch.equal(t.bn_stats[key].to(v.dtype), v), key
        assert torch.equal(_logits(loaded.model(i), x), expected[i]), kr
    # different keep ratios give different subnetworks of the same random weights
    assert not torch.equal(expected[0], expected[2])
    assert loaded.weight_checksum == rst.weight_checksum(model)

    # metadata round trip
    meta = loaded.meta
    assert meta == read_metadata(path) == read_metadata(path.read_bytes())
    assert meta["format"] == "rst-mask" and meta["format_version"] == 1
    assert NetworkSpec.from_dict(meta["network"]) == tiny_spec
    assert meta["extra"] == {"note": "três tickets"}
    assert [t["keep_ratio"] for t in meta["tickets"]] == list(keep_ratios)
    prov = meta["provenance"]
    assert prov["versions"]["torch"] == package_versions()["torch"]
    assert prov["versions"]["rst"] == rst.__version__
    assert {"python", "numpy", "safetensors"} <= set(prov["versions"])
    here = git_revision()
    assert prov["git_revision"].split("+")[0] == here.split("+")[0]
    assert "created" in prov


def test_resnet18_ticket_is_about_one_bit_per_weight():
    spec = NetworkSpec("resnet18", dataset="cifar10", seed=0)
    model = build_network(spec, keep_ratio=0.1)
    n_weights = sum(layer.weight.numel() for _, layer in masked_layers(model))
    assert n_weights == 11_164_352
    data = to_bytes(CandidateSet(spec, [extract_ticket(model)], weight_checksum=rst.weight_checksum(model)))
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    mask_bytes = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if "/mask/" in k)
    other_bytes = sum(v["data_offsets"][1] - v["data_offsets"][0]
                      for k, v in header.items() if k != "__metadata__" and "/mask/" not in k)
    assert mask_bytes * 8 <= 1.05 * n_weights, mask_bytes * 8 / n_weights
    assert other_bytes < 100_000                       # BN statistics: a few float32 per channel
    assert len(data) < 1.5 * 2**20                     # vs ~100 MB for a float checkpoint
    cs = load_tickets(data)
    for (name, a), (_, b) in zip(masked_layers(model), masked_layers(cs.model(0))):
        assert torch.equal(a.mask().bool(), b.mask().bool()), name


def test_one_member_candidate_set_is_plain_inference(tiny_model, tiny_batch):
    """Applying a ticket to a fresh network of the same spec reproduces the original model."""
    _warm_bn(tiny_model, seed=0)
    x, _ = tiny_batch
    ticket = extract_ticket(tiny_model)
    fresh = build_network(NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0))
    apply_ticket(fresh, ticket)
    assert torch.equal(_logits(fresh, x), _logits(tiny_model, x))
    # the fixed mask wins over the scores, until cleared
    with torch.no_grad():
        for _, layer in masked_layers(fresh):
            layer.scores.copy_(torch.rand_like(layer.scores))
    assert torch.equal(_logits(fresh, x), _logits(tiny_model, x))
    clear_ticket(fresh)
    assert not torch.equal(_logits(fresh, x), _logits(tiny_model, x))


def test_apply_ticket_that_does_not_fit_leaves_model_unchanged(tiny_model):
    _warm_bn(tiny_model, seed=0)
    ticket = extract_ticket(tiny_model)
    target = build_network(NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0),
                           keep_ratio=0.2)
    before = _state(target)
    last_bn = list(ticket.bn_stats)[-1]
    broken = [
        Ticket(ticket.keep_ratio, ticket.masks, {k: v for k, v in ticket.bn_stats.items() if k != last_bn}),
        Ticket(ticket.keep_ratio, ticket.masks, {**ticket.bn_stats, last_bn: torch.zeros(1)}),
        Ticket(ticket.keep_ratio, {**ticket.masks, list(ticket.masks)[-1]: torch.ones(3, 3, dtype=torch.bool)},
               ticket.bn_stats),
        Ticket(ticket.keep_ratio, {k: v for k, v in list(ticket.masks.items())[:-1]}, ticket.bn_stats),
    ]
    for t in broken:
        with pytest.raises(MaskFileError):
            apply_ticket(target, t)
        _assert_same_state(before, _state(target))


def test_save_rejects_empty_candidate_set(tmp_path, tiny_spec):
    with pytest.raises(ValueError):
        save_tickets(tmp_path / "x.rst.safetensors", CandidateSet(tiny_spec, []))
    assert not list(tmp_path.iterdir())


def test_load_to_device(tmp_path, tiny_model):
    path = save_tickets(tmp_path / "t.rst.safetensors", CandidateSet(
        NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0), [extract_ticket(tiny_model)]))
    cs = load_tickets(path, device="cpu")
    assert all(m.device.type == "cpu" and m.dtype == torch.bool for m in cs.tickets[0].masks.values())
    assert next(cs.model(0, device="cpu").parameters()).device.type == "cpu"


# --------------------------------------------------------------------------------------------
# dense export
# --------------------------------------------------------------------------------------------


def test_to_dense_and_dense_state_dict(tiny_model, tiny_batch):
    _warm_bn(tiny_model, seed=0)
    x, _ = tiny_batch
    expected = _logits(tiny_model, x)
    dense = to_dense(tiny_model)
    assert not any(isinstance(m, MASKED_TYPES) for m in dense.modules())
    assert not any("scores" in n for n, _ in dense.named_parameters())
    assert torch.equal(_logits(dense, x), expected)
    assert torch.equal(_logits(tiny_model, x), expected)          # the original is untouched

    sd = dense_state_dict(tiny_model)
    assert not any("scores" in k or "fixed_mask" in k for k in sd)
    kept = {name: layer.kept_weights() for name, layer in masked_layers(tiny_model)}
    for name, k in kept.items():
        assert int((sd[f"{name}.weight"] != 0).sum()) == k, name
    # the state dict alone turns another network of the same layout into this ticket
    other = to_dense(build_network(NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=5)))
    assert not torch.equal(_logits(other, x), expected)
    other.load_state_dict(sd, strict=True)
    assert torch.equal(_logits(other, x), expected)


# --------------------------------------------------------------------------------------------
# 9. bad inputs: size limit, pickle, the corpus in tests/bad_masks/, fuzzing
# --------------------------------------------------------------------------------------------


def test_max_bytes_refused_before_parsing(tmp_path):
    good = BAD_MASKS / "good.rst.safetensors"
    size = good.stat().st_size
    for source in (good, good.read_bytes()):
        with pytest.raises(MaskFileError, match="limit") as e:
            load_tickets(source, max_bytes=size - 1)
        assert type(e.value) is MaskFileError
        with pytest.raises(MaskFileError, match="limit"):
            read_metadata(source, max_bytes=1000)
    assert len(load_tickets(good, max_bytes=size)) == 2


def test_missing_path(tmp_path):
    with pytest.raises(MaskFileError, match="no mask file"):
        load_tickets(tmp_path / "nothing.rst.safetensors")
    with pytest.raises(MaskFileError, match="not a regular file: .* [(]a directory[)]"):
        load_tickets(tmp_path)                     # a directory: it exists, so not "no mask file"


def test_pickle_is_rejected_and_never_executed(capfd):
    data = (BAD_MASKS / "pickle_payload.pkl").read_bytes()
    with pytest.raises(MaskFileError, match="not a safetensors file") as e:
        load_tickets(data)
    assert type(e.value) is MaskFileError
    assert "PICKLE-WAS-EXECUTED" not in capfd.readouterr().out
    # the detector works: unpickling this file does run code
    pickle.loads(data)
    assert "RST-BAD-MASKS-PICKLE-WAS-EXECUTED" in capfd.readouterr().out


def test_good_corpus_file_still_loads(tiny_batch):
    """The control file pins the format and the seeded weights (regenerate the corpus on purpose only)."""
    cs = load_tickets(BAD_MASKS / "good.rst.safetensors")
    assert cs.spec == NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25, seed=0)
    assert [t.keep_ratio for t in cs.tickets] == [0.5, 0.1]
    assert [t.name for t in cs.tickets] == ["kr0.5", "kr0.1"]
    x, _ = tiny_batch
    assert _logits(cs.model(1), x).shape == (4, 10)


# file -> {"expect": "error" | "warning", "keyword": a word the message must contain, "class": ...},
# written by tests/bad_masks/make_corpus.py beside the files
EXPECTED = json.loads((BAD_MASKS / "expected.json").read_text())
BAD_FILES = {name: e["keyword"] for name, e in EXPECTED.items() if e["expect"] == "error"}
WARNING_FILES = {name: e["keyword"] for name, e in EXPECTED.items() if e["expect"] == "warning"}
GOOD_FILES = ("good.rst.safetensors", "good_global.rst.safetensors")


def test_corpus_is_complete():
    on_disk = {p.name for p in BAD_MASKS.iterdir() if p.is_file()} - {"make_corpus.py", "expected.json", *GOOD_FILES}
    assert on_disk == set(BAD_FILES) | set(WARNING_FILES)
    assert all((BAD_MASKS / name).stat().st_size < 100_000 for name in on_disk)
    # every hostile class of issue 13 has at least three files
    classes: dict[str, int] = {}
    for e in EXPECTED.values():
        classes[e["class"]] = classes.get(e["class"], 0) + 1
    assert set(classes) >= {"nested", "range", "dtype", "types", "size", "count", "bn", "kept", "digest"}
    assert min(classes.values()) >= 3, classes


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_raises_mask_file_error(name, tiny_model):
    path = BAD_MASKS / name
    keyword = BAD_FILES[name]
    listing = sorted(p.name for p in BAD_MASKS.iterdir())
    before_file, before_model = _digest(path), _state(tiny_model)
    for source in (path, path.read_bytes()):
        with pytest.raises(MaskFileError) as e:
            load_tickets(source)
        assert type(e.value) is MaskFileError           # exactly, not a subclass or a wrapped error
        assert keyword.lower() in str(e.value).lower(), str(e.value)
    assert _digest(path) == before_file                 # the file is not modified
    assert sorted(p.name for p in BAD_MASKS.iterdir()) == listing   # nothing written beside it
    _assert_same_state(before_model, _state(tiny_model))


@pytest.mark.parametrize("name", sorted(WARNING_FILES))
def test_file_without_metadata_digest_loads_with_a_named_warning(name, tiny_batch):
    with pytest.warns(MaskFileWarning, match=WARNING_FILES[name]):
        cs = load_tickets(BAD_MASKS / name)
    assert len(cs.warnings) == 1 and WARNING_FILES[name] in cs.warnings[0]
    assert "\n" not in cs.warnings[0]
    assert _logits(cs.model(0), tiny_batch[0]).isfinite().all()
    with pytest.warns(MaskFileWarning, match=WARNING_FILES[name]):
        read_metadata(BAD_MASKS / name)


def test_good_files_load_without_warnings():
    import warnings
    for name in GOOD_FILES:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cs = load_tickets(BAD_MASKS / name)
        assert cs.warnings == []


def test_checksum_check_can_be_skipped():
    cs = load_tickets(BAD_MASKS / "checksum_tampered.rst.safetensors", verify_weights=False)
    assert len(cs) == 2 and cs.weight_checksum == "0" * 64


def test_random_bit_flips_raise_only_mask_file_error():
    """Single-bit flips anywhere: loading either fails with MaskFileError or succeeds, never crashes.

    Flips in the tensor data always fail (payload SHA-256). Flips inside the JSON metadata's string
    and number values can load: the metadata is not covered by a checksum.
    """
    good = (BAD_MASKS / "good.rst.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    rng = random.Random(0)
    outcomes = {"error": 0, "loaded": 0}
    for trial in range(150):
        data = bytearray(good)
        # half the flips in the header, half in the tensor data
        pos = rng.randrange(8 + n) if trial % 2 else rng.randrange(8 + n, len(good))
        data[pos] ^= 1 << rng.randrange(8)
        try:
            load_tickets(bytes(data))
            outcomes["loaded"] += 1
            assert pos < 8 + n, f"flip in the tensor data at byte {pos} went unnoticed"
        except MaskFileError:
            outcomes["error"] += 1
    assert outcomes["error"] >= 75


def test_metadata_digest_is_written_checked_and_optional_for_older_files():

    good = (BAD_MASKS / "good.rst.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + n])
    raw = header["__metadata__"]["rst"]
    assert header["__metadata__"]["rst_sha256"] == hashlib.sha256(raw.encode()).hexdigest()
    # a file written before the digest existed: same metadata, no digest -> loads
    older = dict(header, __metadata__={"rst": raw})
    blob = json.dumps(older).encode()
    with pytest.warns(MaskFileWarning, match="rst_sha256"):
        assert len(load_tickets(struct.pack("<Q", len(blob)) + blob + good[8 + n:])) == 2
    # the same change to a number with the digest kept -> refused
    changed = dict(header, __metadata__={**header["__metadata__"], "rst": raw.replace('"epochs": 0', '"epochs": 9')})
    blob = json.dumps(changed).encode()
    with pytest.raises(MaskFileError, match="metadata does not match"):
        read_metadata(struct.pack("<Q", len(blob)) + blob + good[8 + n:])


def test_a_fresh_ticket_has_the_digest_of_its_file(tmp_path, tiny_spec, tiny_model):
    """The zoo compares digests of tickets fresh from a search with those of the files it wrote (its
    reports' stamp): BN statistics count as the file stores them (float32; num_batches_tracked is
    int64 in a model), or a one-process rebuild took its own reports for stale and redid them."""
    from rst.network.masks import ticket_digest
    ticket = extract_ticket(tiny_model, name="t")
    assert any(v.dtype == torch.int64 for v in ticket.bn_stats.values())
    save_tickets(tmp_path / "t.rst.safetensors", CandidateSet(tiny_spec, [ticket]))
    assert ticket_digest(load_tickets(tmp_path / "t.rst.safetensors").tickets[0]) == ticket_digest(ticket)
