"""bench/random_draw.py's tables: mean ± std over sibling networks and each network's paired gap."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import random_draw  # noqa: E402

from rst.evaluation.compare import encode_per_image, paired_difference  # noqa: E402


def _m(c, r, n):
    return {"test_clean": {"value": c, "split": f"test[:{n}]"}, "test_pgd20": {"value": r, "split": f"test[:{n}]"}}


def test_table_gives_the_spread_and_the_paired_gap_per_network(tmp_path):
    n, g = 400, torch.Generator().manual_seed(0)
    zoos, out = [], tmp_path / "out"
    out.mkdir()
    for seed in (0, 1):
        dense = torch.rand(n, generator=g) < 0.75
        ticket = dense & (torch.rand(n, generator=g) < 0.95)          # the ticket loses ~4 points
        for name, bits in (("keep0.2", ticket), ("dense", dense)):
            (out / f"z{seed}-{name}-{n}.json").write_text(json.dumps({"pgd20_per_image": encode_per_image(bits)}))
        zoos.append({"id": f"z{seed}", "seed": seed, "dataset": "d", "arch": "a", "width": 1.5, "eps": 0.1,
                     "config": {"seed": seed}, "tickets": [{"name": "keep0.2", "keep_ratio": 0.2,
                                                            "metrics": _m(0.8, ticket.float().mean().item(), n)}],
                     "dense": {"metrics": _m(0.85, dense.float().mean().item(), n)}})
        d = paired_difference(ticket.double(), dense.double())
        zoos[-1]["expected"] = f"{100 * d['difference']:+.2f} [{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"
    (tmp_path / "index.json").write_text(json.dumps({"format": "rst-zoo-index", "version": 1, "zoos": zoos}))
    md = random_draw.table("z0", tmp_path, n=n, out_dir=out)
    assert "2 random draws of one recipe (seeds 0, 1" in md
    for z in zoos:
        assert z["expected"] in md                                      # each network's own paired interval
    gaps = [z["tickets"][0]["metrics"]["test_pgd20"]["value"] - z["dense"]["metrics"]["test_pgd20"]["value"]
            for z in zoos]
    mean = sum(gaps) / 2
    std = (sum((x - mean) ** 2 for x in gaps)) ** 0.5                     # n - 1 = 1
    assert f"{100 * mean:+.2f} pt ± {100 * std:.2f}" in md
    assert "| keep0.2 | 2 | 80.00 % ± 0.00 |" in md
    assert "Transfer" not in md                                          # no transfer file: no matrix


def test_cli_refuses_an_unknown_zoo_in_one_line(capsys):
    try:
        random_draw.main(["table", "no-such-zoo"])
    except SystemExit as e:
        assert e.code == 2
    assert "no zoo 'no-such-zoo'" in capsys.readouterr().err
