"""rst.zoo.across_networks: sibling zoos of one recipe and the mean ± std over random networks."""
from __future__ import annotations

import copy
import math

import pytest

from rst.zoo.across_networks import across_networks, mean_std, network_results, recipe_key, sibling_zoos
from rst.zoo.build import read_index


def _metrics(clean, robust, n=10000):
    split = f"test[:{n}]"
    return {"test_clean": {"value": clean, "split": split, "attack": "none"},
            "test_pgd20": {"value": robust, "split": split, "attack": "PGD-20"}}


def _entry(seed, tickets, dense, zoo_id=None, width=1.5):
    return {"id": zoo_id or f"z{seed}", "dataset": "fashion_mnist", "arch": "fmnist_conv4", "width": width,
            "eps": 0.1, "seed": seed, "config": {"seed": seed, "keep_ratio": 0.1, "epochs": 10, "width": width},
            "tickets": [{"name": f"keep{k:g}", "keep_ratio": k, "metrics": _metrics(c, r)} for k, c, r in tickets],
            "dense": {"metrics": _metrics(*dense)}}


def test_siblings_share_the_recipe_and_differ_only_in_the_seed():
    a, b, c = _entry(0, [], (0.8, 0.7)), _entry(2, [], (0.8, 0.7)), _entry(1, [], (0.8, 0.7))
    other = _entry(3, [], (0.8, 0.7), width=1.0)               # another width: another recipe
    dup = _entry(1, [], (0.8, 0.7), zoo_id="z1-again")          # a second zoo of seed 1: the first listed wins
    index = {"zoos": [a, other, b, c, dup]}
    assert [z["id"] for z in sibling_zoos(index, "z0")] == ["z0", "z1", "z2"]
    assert [z["id"] for z in sibling_zoos(index, "z3")] == ["z3"]
    assert recipe_key(a) == recipe_key(b) != recipe_key(other)
    with pytest.raises(KeyError):
        sibling_zoos(index, "nope")


def test_mean_std_over_networks_and_the_gap_per_network():
    entries = [_entry(0, [(0.2, 0.85, 0.70), (0.7, 0.84, 0.66)], (0.85, 0.74)),
               _entry(1, [(0.2, 0.83, 0.68), (0.7, 0.86, 0.68)], (0.86, 0.73)),
               _entry(2, [(0.2, 0.84, 0.72), (0.05, 0.80, 0.69)], (0.84, 0.72))]   # seed 2 lacks 0.7
    rows = across_networks(entries)
    assert [r["keep_ratio"] for r in rows] == [0.2, 1.0]        # only what every network has, dense last
    t, d = rows
    assert t["n_networks"] == 3 and d["name"] == "dense AT"
    assert t["robust_mean"] == pytest.approx(0.70) and t["robust_std"] == pytest.approx(0.02)
    assert t["clean_mean"] == pytest.approx(0.84) and t["clean_std"] == pytest.approx(0.01)
    assert [p["gap"] for p in t["per_network"]] == pytest.approx([-0.04, -0.05, 0.0])
    assert t["gap_mean"] == pytest.approx(-0.03) and t["gap_std"] == pytest.approx(math.sqrt(7e-4))
    assert t["per_network"][0]["robust_se"] == pytest.approx(math.sqrt(0.7 * 0.3 / 10000))
    assert d["gap_mean"] is None and d["robust_mean"] == pytest.approx(0.73)


def test_one_network_has_no_spread():
    assert math.isnan(mean_std([0.5])[1])
    rows = across_networks([_entry(0, [(0.2, 0.85, 0.70)], (0.85, 0.74))])
    assert rows[0]["n_networks"] == 1 and math.isnan(rows[0]["robust_std"])


def test_a_ticket_without_matching_test_metrics_is_left_out():
    e = _entry(0, [(0.2, 0.85, 0.70)], (0.85, 0.74))
    bad = copy.deepcopy(e)
    bad["tickets"][0]["metrics"]["test_clean"]["split"] = "test[:2000]"   # clean and PGD-20 on other images
    assert [r.name for r in network_results(e)] == ["keep0.2", "dense AT"]
    assert [r.name for r in network_results(bad)] == ["dense AT"]


def test_the_shipped_default_zoo_and_its_siblings():
    index = read_index()
    sibs = sibling_zoos(index, "fmnist-wide")
    assert sibs[0]["id"] == "fmnist-wide" and sibs[0]["seed"] == 0
    assert "fmnist-full" not in {z["id"] for z in sibs}           # width 1.0, weight decay 5e-4: another recipe
    assert len({z["seed"] for z in sibs}) == len(sibs)
    rows = across_networks(sibs)
    dense = rows[-1]
    assert dense["name"] == "dense AT" and dense["per_network"][0]["robust"] == pytest.approx(0.7421, abs=1e-4)
