"""How much a result depends on the random draw: one recipe on several random networks.

A zoo holds the tickets of ONE random network (one seed). Its *siblings* in the zoo index are the
zoos of the same recipe (data, architecture, width, attack budget, search configuration) that differ
only in the seed. Across them this module gives the mean ± standard deviation over networks: the
spread of the random draw. That is a different ± from the binomial standard error of one network's
test accuracy (the spread of the test sample), which is kept beside each network's own figures.

    >>> entries = sibling_zoos(read_index(), "fmnist-wide")      # seed 0, 1, 2 ...
    >>> rows = across_networks(entries)                          # one row per keep ratio, and dense AT
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from rst.evaluation.per_image import standard_error

# what may differ between sibling zoos: the seed (the draw) and the config's default keep ratio
# (each ticket records its own)
RECIPE_FREE = ("seed", "keep_ratio")
DENSE = "dense AT"


def recipe_key(entry: dict) -> str:
    """The recipe of a zoo index entry, without its seed: equal keys are the same recipe."""
    from rst.search.loop import SearchConfig
    cfg = {k: v for k, v in SearchConfig.without_later_defaults(entry.get("config") or {}).items()
           if k not in RECIPE_FREE}
    return json.dumps({"dataset": entry.get("dataset"), "arch": entry.get("arch"), "width": entry.get("width"),
                       "eps": entry.get("eps"), "config": cfg}, sort_keys=True)


def sibling_zoos(index: dict, zoo_id: str) -> list[dict]:
    """The zoos of ``zoo_id``'s recipe, one per seed (the first listed), sorted by seed; itself included."""
    zoos = index.get("zoos", [])
    me = next((z for z in zoos if z.get("id") == zoo_id), None)
    if me is None:
        raise KeyError(f"no zoo {zoo_id!r} in the index")
    key, by_seed = recipe_key(me), {}
    for z in zoos:
        if recipe_key(z) == key and z.get("seed") not in by_seed:
            by_seed[z.get("seed")] = z
    by_seed[me.get("seed")] = me
    return [by_seed[s] for s in sorted(by_seed, key=lambda s: (s is None, s))]


@dataclass(frozen=True)
class NetworkResult:
    """One network's test accuracy of one model (a ticket, or its dense AT baseline)."""
    zoo: str
    seed: int
    name: str
    keep_ratio: float
    clean: float
    robust: float
    n_images: int

    @property
    def clean_se(self) -> float:
        return standard_error(self.clean, self.n_images)

    @property
    def robust_se(self) -> float:
        return standard_error(self.robust, self.n_images)


def _split_size(split: str) -> int:
    m = re.fullmatch(r"test\[:(\d+)\]", split or "")
    return int(m.group(1)) if m else 0


def _result(entry: dict, name: str, keep_ratio: float, metrics: dict | None) -> NetworkResult | None:
    m = metrics or {}
    clean, robust = m.get("test_clean"), m.get("test_pgd20")
    if not clean or not robust or clean.get("split") != robust.get("split"):
        return None
    return NetworkResult(entry["id"], entry.get("seed"), name, float(keep_ratio), float(clean["value"]),
                         float(robust["value"]), _split_size(robust.get("split")))


def network_results(entry: dict) -> list[NetworkResult]:
    """Clean and PGD-20 test accuracy of each ticket of a zoo entry, then of its dense baseline."""
    out = [_result(entry, t["name"], t["keep_ratio"], t.get("metrics")) for t in entry.get("tickets", [])]
    out.append(_result(entry, DENSE, 1.0, (entry.get("dense") or {}).get("metrics")))
    return [r for r in out if r is not None]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation is NaN for one value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def across_networks(entries: list[dict]) -> list[dict]:
    """One row per keep ratio that every network has, then dense AT: mean ± std over the networks.

    Each row: ``name``, ``keep_ratio``, ``n_networks``, ``clean_mean``/``clean_std``,
    ``robust_mean``/``robust_std`` (PGD-20), ``gap_mean``/``gap_std`` (ticket − dense AT under PGD-20,
    per network, then over networks; None for dense) and ``per_network``: each network's figures
    with their binomial standard errors (``clean_se``, ``robust_se``) and ``gap``.
    """
    per = [{r.keep_ratio: r for r in network_results(e)} for e in entries]
    if not per:
        raise ValueError("no networks")
    common = sorted(set.intersection(*(set(p) for p in per)))
    rows = []
    for k in common:
        rs = [p[k] for p in per]
        dense = [p.get(1.0) if k != 1.0 else None for p in per]
        gaps = [r.robust - d.robust for r, d in zip(rs, dense) if d is not None]
        row = {"name": rs[0].name if k != 1.0 else DENSE, "keep_ratio": k, "n_networks": len(rs),
               "per_network": [{"zoo": r.zoo, "seed": r.seed, "clean": r.clean, "clean_se": r.clean_se,
                                "robust": r.robust, "robust_se": r.robust_se, "n_images": r.n_images,
                                "gap": (r.robust - d.robust) if d is not None else None}
                               for r, d in zip(rs, dense)]}
        for what in ("clean", "robust"):
            row[f"{what}_mean"], row[f"{what}_std"] = mean_std([getattr(r, what) for r in rs])
        row["gap_mean"], row["gap_std"] = mean_std(gaps) if len(gaps) == len(rs) else (None, None)
        rows.append(row)
    return rows
