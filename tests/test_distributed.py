"""Data-parallel search (rst.search.distributed): sharding in-process, and a real 2-process run under torchrun (Gloo, CPU)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from rst.data.datasets import DeviceLoader
from rst.search.distributed import ShardedLoader, init_distributed, is_main, shard, sharded_mean, world_size


def test_single_process_helpers_are_no_ops():
    loader = DeviceLoader(torch.rand(10, 1, 4, 4), torch.arange(10), 4)
    assert shard(loader) is loader
    assert is_main() and world_size() == 1
    assert init_distributed("cpu").enabled is False
    assert sharded_mean(lambda x, y: float(y.float().mean()), torch.zeros(4, 1), torch.arange(4)) == 1.5


def test_shards_are_disjoint_and_make_up_the_single_process_batches():
    n, batch, world = 70, 8, 2
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)      # each example's value is its index
    y = torch.arange(n)
    single = DeviceLoader(x, y, batch, seed=3)
    shards = [ShardedLoader(DeviceLoader(x, y, batch, seed=3), r, world) for r in range(world)]
    for epoch in (0, 5):
        single.set_epoch(epoch)
        for s in shards:
            s.set_epoch(epoch)
        full = [set(yb.tolist()) for _, yb in single]
        parts = [[yb.tolist() for _, yb in s] for s in shards]
        assert len(parts[0]) == len(parts[1]) == len(shards[0])          # same number of steps on every rank
        seen = [i for p in parts for b in p for i in b]
        assert len(seen) == len(set(seen)) == n                             # disjoint, nothing lost (70 = 2 * 35)
        for i, batch_full in enumerate(full):                               # world divides batch: same global batches
            assert set(parts[0][i]) | set(parts[1][i]) == batch_full


# Run by torchrun in each of the 2 processes: the tiny search for one epoch (2 optimiser steps of a
# global batch of 64, i.e. 32 images per rank), then this rank's scores, BN statistics and history.
_WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from pathlib import Path
    from rst.search import distributed
    from rst.data.datasets import split_train_val, synthetic_dataset
    from rst.network.masked import masked_layers
    from rst.network.models import build_network
    from rst.search.loop import SearchData, adversarial_fit, preset, score_parameters

    out = Path(sys.argv[1])
    x, y = synthetic_dataset(160, seed=0)
    data = SearchData(*split_train_val(x, y, 32, seed=0))              # 128 train, 32 validation
    cfg = preset("tiny", epochs=1, val_size=32, val_images=32)
    model = build_network(cfg.network_spec(), keep_ratio=cfg.keep_ratio)
    initial = {n: l.scores.detach().clone() for n, l in masked_layers(model)}
    events = []
    fit = adversarial_fit(model, score_parameters(model), cfg, data, torch.device("cpu"),
                          checkpoint=out / "checkpoint.pt", progress=events.append)
    rank = int(os.environ["RANK"])
    torch.save({"scores": {n: l.scores.detach() for n, l in masked_layers(model)}, "initial": initial,
                "buffers": {n: b for n, b in model.named_buffers() if b is not None}},
               out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({"history": fit.history, "events": events,
                                                    "world_size": distributed.world_size()}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_search_keeps_replicas_identical(tmp_path, repo_root):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, s0 in r0["scores"].items():
        assert torch.equal(s0, r1["scores"][name]), name                 # DDP kept the replicas in sync
        assert not torch.equal(s0, r0["initial"][name]), name            # and they did learn
    for name, b0 in r0["buffers"].items():                              # BN statistics averaged over ranks
        assert torch.equal(b0, r1["buffers"][name]), name
    h0, h1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for key in ("train_adv_loss", "train_adv_acc", "val_clean", "val_robust"):
        assert h0["history"][0][key] == h1["history"][0][key], key     # metrics over ranks, identical
    assert h0["world_size"] == h1["world_size"] == 2
    steps = [e for e in h0["events"] if e["event"] == "step"]
    assert len(steps) == steps[0]["steps"] == 2                          # 128 images / global batch 64
    assert h1["events"] == []                                            # only rank 0 reports progress
    assert (tmp_path / "checkpoint.pt").exists()                          # written by rank 0


# Run by torchrun in each of the 2 processes: `rst train`, then `rst finetune`, through the CLI's main,
# recording which rank writes files and evaluates the test set, whether the process group (and so this
# rank's device) existed before the model was built, and this rank's final weights.
_CLI_WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from pathlib import Path
    import rst.cli.commands as cli, rst.evaluation.metrics as evaluate, rst.network.masks as masks, rst.search.train as train
    import rst.cli.run_results as run_results

    out, ticket = Path(sys.argv[1]), sys.argv[2]
    rank = int(os.environ["RANK"])
    record = {"writes": [], "evaluations": 0, "built_after_init": []}

    def spy(fn, note):
        def wrapped(*a, **k):
            note(*a)
            return fn(*a, **k)
        return wrapped

    run_results.write_json = spy(run_results.write_json, lambda path, obj: record["writes"].append(Path(path).name))
    masks.save_weights = spy(masks.save_weights, lambda path, *a: record["writes"].append(Path(path).name))
    evaluate.test_metrics = spy(evaluate.test_metrics, lambda *a: record.__setitem__("evaluations",
                                                                                     record["evaluations"] + 1))
    train.build_network = spy(train.build_network, lambda *a: record["built_after_init"].append(dist.is_initialized()))

    def keep_weights(fn, kind):
        def wrapped(*a, **k):
            result = fn(*a, **k)
            torch.save(masks.dense_state_dict(result.model), out / f"{kind}_rank{rank}.pt")
            return result
        return wrapped
    train.train_dense, train.finetune = keep_weights(train.train_dense, "dense"), keep_weights(train.finetune, "ft")

    common = ["--preset", "tiny", "--epochs", "1", "--train-subset", "128", "--set", "val_images=32",
              "--device", "cpu", "--test-images", "32", "--quiet"]
    assert cli.main(["train", *common, "--out", str(out / "dense")]) == 0
    assert cli.main(["finetune", ticket, *common, "--out", str(out / "ft")]) == 0
    (out / f"rank{rank}.json").write_text(json.dumps(record))
""")


def test_two_process_train_and_finetune_cli_one_writer_same_weights(tmp_path, repo_root):
    from safetensors.torch import load_file
    from rst.network.masks import CandidateSet, extract_ticket, save_tickets
    from rst.network.models import build_network
    from rst.search.loop import preset

    spec = preset("tiny").network_spec()
    ticket = save_tickets(tmp_path / "ticket.rst.safetensors",
                          CandidateSet(spec, [extract_ticket(build_network(spec, keep_ratio=0.5), name="k0.5")]))
    script = tmp_path / "cli_worker.py"
    script.write_text(_CLI_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script), str(tmp_path), str(ticket)]
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["writes"] == ["dense_at.weights.safetensors", "log.json", "ft_inherit.weights.safetensors", "log.json"]
    assert r1["writes"] == [] and r1["evaluations"] == 0                # rank 1 neither writes nor evaluates
    assert r0["evaluations"] == 2                                         # rank 0: one test evaluation per command
    assert r0["built_after_init"] == r1["built_after_init"] == [True, True]   # device resolved before the model
    for kind, name in (("dense", "dense_at"), ("ft", "ft_inherit")):
        w0, w1 = (torch.load(tmp_path / f"{kind}_rank{r}.pt", weights_only=True) for r in (0, 1))
        written = load_file(tmp_path / kind / f"{name}.weights.safetensors")
        assert w0.keys() == w1.keys() == written.keys()
        for key in w0:
            assert torch.equal(w0[key], w1[key]) and torch.equal(w0[key], written[key]), (kind, key)
        log = json.loads((tmp_path / kind / "log.json").read_text())
        assert log["command"] == name and len(log["history"]) == 1
        assert not list((tmp_path / kind).glob("*.tmp"))
        assert (tmp_path / kind / "checkpoint.pt").exists()


def test_more_ranks_than_gpus_is_refused_before_touching_a_gpu(monkeypatch):
    import rst.search.distributed as distributed
    monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    touched = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: touched.append(d))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **k: touched.append(k))
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK 1, but this machine has 1 CUDA GPU.*--nproc_per_node"):
        init_distributed("cuda")
    assert touched == []                                                 # no GPU selected, no process group
