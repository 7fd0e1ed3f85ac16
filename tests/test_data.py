"""rst.data.datasets: synthetic data, splits, augmentation, the device loader, IDX files, subsets."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from rst.data import datasets as data
from rst.data.datasets import (DATASETS, DataUnavailableError, DeviceLoader, augment, default_augment, load_dataset,
                      load_subset, save_subset, split_train_val, synthetic_dataset)
from rst.network.models import DATASET_STATS

SHARED_FMNIST = Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test sees the user's RST_DATA_DIR, Debian's dataset directory or the home cache."""
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data, "_SYSTEM_DIRS", ())
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_in_range():
    x, y = synthetic_dataset(64, seed=3)
    x2, y2 = synthetic_dataset(64, seed=3)
    x3, y3 = synthetic_dataset(64, seed=4)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, x3)
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    counts = torch.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1                                       # balanced classes


def test_synthetic_any_shape_and_classes_are_separable():
    x, y = synthetic_dataset(200, shape=(3, 32, 32), num_classes=5, seed=0)
    assert x.shape == (200, 3, 32, 32) and set(y.tolist()) == set(range(5))
    # the class means differ clearly more than the examples of one class scatter around them
    xt, yt = synthetic_dataset(500, shape=(1, 28, 28), seed=0)
    xv, yv = synthetic_dataset(200, shape=(1, 28, 28), seed=1)
    means = torch.stack([xt[yt == k].mean(0) for k in range(10)]).flatten(1)    # (10, 784)
    nearest = torch.cdist(xv.flatten(1), means).argmin(1)
    assert (nearest == yv).float().mean() > 0.3                                   # chance: 0.1


def test_synthetic_registered_as_dataset():
    x, y = load_dataset("synthetic", train=False)
    assert x.shape == (512, 1, 28, 28) and y.shape == (512,)
    assert synthetic_dataset(0)[0].shape == (0, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist", train=True)


# ---------------------------------------------------------------- split


@pytest.mark.parametrize("val_size", [0, 7, 0.25, 1.0])
def test_split_disjoint_complete_deterministic(val_size):
    ids = torch.arange(40)
    x = ids.float().view(40, 1, 1, 1)
    xt, yt, xv, yv = split_train_val(x, ids, val_size, seed=1)
    n_val = round(val_size * 40) if isinstance(val_size, float) else val_size
    assert len(xv) == len(yv) == n_val and len(xt) == len(yt) == 40 - n_val
    assert set(yt.tolist()).isdisjoint(yv.tolist())
    assert sorted(yt.tolist() + yv.tolist()) == list(range(40))
    assert torch.equal(xt.flatten().long(), yt) and torch.equal(xv.flatten().long(), yv)   # x, y stay paired
    again = split_train_val(x, ids, val_size, seed=1)
    assert torch.equal(again[3], yv) and torch.equal(again[1], yt)


def test_split_seed_matters_and_bad_sizes_raise():
    ids = torch.arange(100)
    assert not torch.equal(split_train_val(ids, ids, 10, seed=0)[3], split_train_val(ids, ids, 10, seed=1)[3])
    for bad in (101, -1, 1.5):
        with pytest.raises(ValueError):
            split_train_val(ids, ids, bad, seed=0)


# ---------------------------------------------------------------- augment


def test_augment_crop_matches_a_manual_shift():
    x = torch.rand(16, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = augment(x, pad=2, flip=False, generator=g)
    offsets = torch.randint(0, 5, (16, 2), generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i, (r, c) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, r:r + 8, c:c + 8])
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out, x)


def test_augment_flip_only_mirrors_some_images():
    x = torch.rand(64, 1, 5, 7)
    out = augment(x, pad=0, flip=True, generator=torch.Generator().manual_seed(1))
    mirrored = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    unchanged = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert 10 < sum(mirrored) < 54                                                # about half
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))                  # flips move, not change


def test_augment_reproducible_and_noop():
    x = torch.rand(8, 1, 28, 28)
    a = augment(x, 2, True, torch.Generator().manual_seed(5))
    b = augment(x, 2, True, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert augment(x, 0, False, None) is x


def test_default_augment_covers_every_dataset():
    assert default_augment("cifar10") == (4, True) and default_augment("svhn") == (4, False)
    assert default_augment("fashion_mnist") == (2, True) and default_augment("synthetic") == (0, False)
    assert set(data.AUGMENT) == set(DATASETS)
    assert set(DATASETS) - {"synthetic"} <= set(DATASET_STATS)


def test_synthetic_geometry_matches_model_table():
    if "synthetic" not in DATASET_STATS:
        pytest.skip("rst.network.models.DATASET_STATS has no 'synthetic' entry")
    num_classes, channels, side, _, _ = DATASET_STATS["synthetic"]
    x, y = load_dataset("synthetic", train=True)
    assert x.shape[1:] == (channels, side, side) and int(y.max()) + 1 == num_classes
    with pytest.raises(ValueError):
        default_augment("imagenet")


# ---------------------------------------------------------------- DeviceLoader


def _ids_loader(n=103, **kw):
    ids = torch.arange(n)
    x = ids.float().view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return DeviceLoader(x, ids, batch_size=10, **kw), n


def test_loader_covers_every_example_once_per_epoch():
    loader, n = _ids_loader()
    assert len(loader) == 11
    batches = list(loader)
    assert len(batches) == 11 and len(batches[-1][1]) == 3
    seen = torch.cat([yb for _, yb in batches])
    assert sorted(seen.tolist()) == list(range(n))
    for xb, yb in batches:                                                        # x and y stay paired
        assert torch.equal(xb[:, 0, 0, 0].long(), yb)


def test_loader_reproducible_per_epoch_and_differs_between_epochs():
    loader, _ = _ids_loader(augment=(1, True), seed=7)
    first = [(xb.clone(), yb.clone()) for xb, yb in loader]                       # epoch 0
    second = [yb for _, yb in loader]                                             # epoch 1 (advanced)
    assert not torch.equal(torch.cat([yb for _, yb in first]), torch.cat(second))
    fresh, _ = _ids_loader(augment=(1, True), seed=7)
    fresh.set_epoch(0)
    for (xa, ya), (xb, yb) in zip(first, fresh):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    fresh.set_epoch(1)
    assert torch.equal(torch.cat([yb for _, yb in fresh]), torch.cat(second))
    other_seed, _ = _ids_loader(augment=(1, True), seed=8)
    assert not torch.equal(torch.cat([yb for _, yb in other_seed]), torch.cat([yb for _, yb in first]))


def _record_generators(monkeypatch, module):
    """Patch ``module.augment`` to record the generator each batch is augmented with."""
    seen = []

    def spy(x, pad, flip, generator=None):
        seen.append((generator, x.device))
        return augment(x, pad, flip, generator)
    monkeypatch.setattr(module, "augment", spy)
    return seen


def test_loader_draws_augmentation_from_a_generator_on_the_data_device(monkeypatch):
    from rst.data import device_loader
    from rst.search import distributed
    seen = _record_generators(monkeypatch, device_loader)
    loader, _ = _ids_loader(augment=(1, True), seed=7)
    batches = [xb for xb, _ in loader]
    assert len(seen) == len(batches) == 11
    assert len({id(g) for g, _ in seen}) == 1                        # one generator per epoch, not per batch
    assert all(g.device == loader.device == dev for g, dev in seen)   # where the batch lives
    seen_sharded = _record_generators(monkeypatch, distributed)
    for rank in (0, 1):
        list(distributed.ShardedLoader(_ids_loader(augment=(1, True), seed=7)[0], rank, 2))
    assert seen_sharded and all(g.device == dev for g, dev in seen_sharded)


def test_loader_augmentation_reproducible_for_a_seed_and_its_own_stream():
    """Same seed and epoch: the same crops and flips (resume relies on it), another seed other ones; and the
    augmentation has its own stream, not the permutation's: on all-ones images (a crop shows only as where
    the zero border lands) the shuffled and the unshuffled loader give the same batches."""
    n = 40
    x = torch.rand(n, 1, 6, 6)
    ids = torch.arange(n)
    runs = [[xb for xb, _ in DeviceLoader(x, ids, 8, augment=(2, True), seed=3)] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    other = [xb for xb, _ in DeviceLoader(x, ids, 8, augment=(2, True), seed=4)]
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], other))
    ones = torch.ones(n, 1, 6, 6)
    shuffled = DeviceLoader(ones, ids, 8, augment=(2, True), seed=3)
    plain = DeviceLoader(ones, ids, 8, augment=(2, True), seed=3, shuffle=False)
    shuffled.set_epoch(2), plain.set_epoch(2)
    pairs = list(zip(shuffled, plain))
    assert not torch.equal(torch.cat([ya for (_, ya), _ in pairs]), ids)          # the order did change
    assert all(torch.equal(a, b) for (a, _), (b, _) in pairs)                    # the crops did not
    assert any(not torch.equal(a, ones[:8]) for (a, _), _ in pairs)               # and there are crops


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_augment_on_cuda_refuses_a_host_generator_and_loader_is_reproducible():
    x = torch.rand(16, 3, 8, 8, device="cuda")
    with pytest.raises(ValueError, match="generator is on cpu"):
        augment(x, 2, True, torch.Generator().manual_seed(0))
    a, b = (augment(x, 2, True, data.augment_generator("cuda", 5)) for _ in range(2))
    assert torch.equal(a, b) and a.device.type == "cuda"
    loaders = [DeviceLoader(x, torch.arange(16), 4, augment=(2, True), seed=1, device="cuda") for _ in range(2)]
    assert all(torch.equal(p, q) for (p, _), (q, _) in zip(*loaders))


def test_loader_no_shuffle_drop_last_and_device():
    loader, n = _ids_loader(shuffle=False, drop_last=True, device="cpu")
    assert len(loader) == 10 and loader.device == torch.device("cpu")
    assert torch.equal(torch.cat([yb for _, yb in loader]), torch.arange(100))


# ---------------------------------------------------------------- IDX (Fashion-MNIST format)


def _write_idx(path: Path, tensor: torch.Tensor, compress: bool = False) -> Path:
    magic = {1: 2049, 3: 2051}[tensor.ndim]
    raw = struct.pack(">i", magic) + struct.pack(f">{tensor.ndim}I", *tensor.shape)
    raw += tensor.to(torch.uint8).numpy().tobytes()
    path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)
    return path


def _fake_fmnist(n):
    images = (torch.arange(n * 28 * 28) % 251).view(n, 28, 28).to(torch.uint8)
    return images, torch.arange(n) % 10


def test_idx_files_found_by_content_under_odd_names(tmp_path):
    images, labels = _fake_fmnist(12)
    (tmp_path / "raw").mkdir()
    _write_idx(tmp_path / "raw" / "blob.bin", images, compress=True)
    _write_idx(tmp_path / "lbl", labels)
    (tmp_path / "README.txt").write_text("not IDX")
    (tmp_path / "junk.gz").write_bytes(b"\x1f\x8bnot really gzip")
    _write_idx(tmp_path / "other-labels", torch.arange(5) % 10)                # another N: ignored
    pair = data._find_idx_pair(tmp_path, 12)
    assert pair == (tmp_path / "raw" / "blob.bin", tmp_path / "lbl")
    x, y = data._read_idx_pair(*pair)
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.float32 and x.max() <= 1
    assert torch.equal((x * 255).round().to(torch.uint8)[:, 0], images) and torch.equal(y, labels)
    assert data._find_idx_pair(tmp_path, 13) is None


def test_fashion_mnist_test_split_from_data_dir(tmp_path):
    images, labels = _fake_fmnist(10000)
    _write_idx(tmp_path / "a", images)
    _write_idx(tmp_path / "b.gz", labels, compress=True)
    x, y = load_dataset("fashion_mnist", train=False, data_dir=tmp_path, download=False)
    assert x.shape == (10000, 1, 28, 28) and torch.equal(y, labels)


def test_truncated_or_corrupt_idx_raises_naming_the_file(tmp_path):
    images, _ = _fake_fmnist(4)
    path = _write_idx(tmp_path / "imgs", images)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="imgs.*truncated"):
        data._read_idx(path)
    gz = _write_idx(tmp_path / "imgs2.gz", images, compress=True)
    gz.write_bytes(gz.read_bytes()[:-30])
    with pytest.raises(ValueError, match="imgs2.gz"):
        data._read_idx(gz)
    bad_labels = _write_idx(tmp_path / "labels", torch.tensor([0, 3, 12, 1]))
    good_images = _write_idx(tmp_path / "ok", images)
    with pytest.raises(ValueError, match="labels.*outside"):
        data._read_idx_pair(good_images, bad_labels)


def test_fashion_mnist_unavailable_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("fashion_mnist", train=True, data_dir=empty, download=False)
    msg = str(info.value)
    for place in (empty, tmp_path / "env", tmp_path / "env" / "fashion-mnist", "torchvision"):
        assert str(place) in msg
    assert "RST_DATA_DIR" in msg and "--data-dir" in msg


# ---------------------------------------------------------------- torchvision sets, offline


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_torchvision_dataset_missing_raises_helpful_error(tmp_path, name):
    with pytest.raises(DataUnavailableError) as info:
        load_dataset(name, train=True, data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert name in msg and str(tmp_path) in msg and "--data-dir" in msg and "RST_DATA_DIR" in msg
    assert isinstance(info.value, RuntimeError)


def test_offline_download_failure_says_offline(tmp_path, monkeypatch):
    import torchvision.datasets

    def no_network(self, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
    with pytest.raises(DataUnavailableError, match="offline"):
        load_dataset("cifar10", train=False, data_dir=tmp_path, download=True)


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_command_without_its_data_is_one_line_exit_2(command, tmp_path, monkeypatch, capsys):
    """Offline and no files: the CLI says where it looked in one line, no traceback (the real
    torchvision error spans several lines)."""
    import torchvision.datasets

    from rst.cli import commands as cli

    def no_network(self, *args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://x/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n")

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "download", no_network)
    monkeypatch.setattr(data, "_SYSTEM_DIRS", ())
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    code = cli.main([command, "--preset", "fmnist-cpu", "--epochs", "1", "--out", str(tmp_path / "out"),
                     "--data-dir", str(tmp_path / "none"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: fashion_mnist (train split") and err.count("\n") == 1, err
    assert str(tmp_path / "none") in err and "RST_DATA_DIR" in err


# ---------------------------------------------------------------- subsets


def test_subset_round_trip(tmp_path):
    x, y = synthetic_dataset(20, seed=0)
    x = (x * 255).round() / 255                                                   # representable in uint8
    meta = {"dataset": "synthetic", "source": "synthetic_dataset(20, seed=0)", "licence": "none needed"}
    path = save_subset(tmp_path / "subset.safetensors", x, y, meta)
    x2, y2, meta2 = load_subset(path)
    assert torch.equal(x2, x) and torch.equal(y2, y) and x2.dtype == torch.float32
    assert meta2["dataset"] == "synthetic" and meta2["licence"] == "none needed" and meta2["num_examples"] == 20
    assert path.stat().st_size < 20 * 28 * 28 + 2000                              # stored as uint8
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="dataset"):
        save_subset(tmp_path / "nometa.safetensors", x, y, {"source": "?"})
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ValueError):
        load_subset(tmp_path / "bad.safetensors")


def test_load_subset_refuses_a_file_of_another_split(tmp_path):
    x, y = synthetic_dataset(8, seed=0)
    path = save_subset(tmp_path / "test.safetensors", x, y, {"dataset": "synthetic", "split": "test[:8]"})
    assert data.subset_split(load_subset(path)[2]) == "test"
    assert len(load_subset(path, split="test")[1]) == 8
    with pytest.raises(ValueError, match="not the train split"):
        load_subset(path, split="train")
    assert data.subset_split({"split": "validation"}) is None and data.subset_split({}) is None


ASSETS = Path(__file__).resolve().parent.parent / "assets"


def test_shipped_training_subset_is_training_images_with_provenance():
    """assets/fashion_mnist_train_subset.safetensors: 6,000 uint8 training images, every class, its
    provenance in the metadata; none of its images is one of the shipped test subset's."""
    path = ASSETS / "fashion_mnist_train_subset.safetensors"
    x, y, meta = load_subset(path, split="train")
    assert x.shape == (6000, 1, 28, 28) and meta["split"] == "train[:6000]" and meta["dataset"] == "fashion_mnist"
    assert "Zalando" in meta["source"] and "MIT" in meta["licence"] and path.stat().st_size < 5_000_000
    assert torch.bincount(y, minlength=10).min() > 500
    xt, _, meta_t = load_subset(ASSETS / "fashion_mnist_test_subset.safetensors", split="test")
    train_rows = {bytes(r) for r in (x * 255).round().to(torch.uint8).flatten(1).numpy()}
    assert not train_rows & {bytes(r) for r in (xt * 255).round().to(torch.uint8).flatten(1).numpy()}


@pytest.mark.skipif(not SHARED_FMNIST.is_dir(), reason=f"no real Fashion-MNIST at {SHARED_FMNIST}")
def test_shipped_training_subset_is_the_training_split_first_6000():
    x, y, _ = load_subset(ASSETS / "fashion_mnist_train_subset.safetensors", split="train")
    xf, yf = load_dataset("fashion_mnist", train=True, data_dir=SHARED_FMNIST, download=False)
    assert torch.equal(x, xf[:6000]) and torch.equal(y, yf[:6000])


# ---------------------------------------------------------------- real Fashion-MNIST (when present)


@pytest.mark.skipif(not SHARED_FMNIST.is_dir(), reason=f"no real Fashion-MNIST at {SHARED_FMNIST}")
def test_real_fashion_mnist():
    for train, n in ((True, 60000), (False, 10000)):
        x, y = load_dataset("fashion_mnist", train=train, data_dir=SHARED_FMNIST, download=False)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.99
        assert set(y.unique().tolist()) == set(range(10))
        assert abs(x.mean().item() - DATASET_STATS["fashion_mnist"][3][0]) < 0.01
