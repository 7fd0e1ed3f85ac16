"""The like-with-like report (:mod:`rst.evaluation.compare` computes it): one row per model with its
per-image worst-case scores, the paired differences of R2S against every other row, JSON in and out,
and the joining of reports taken on consecutive image ranges (a long evaluation run a chunk at a time).

    >>> rep = CompareReport.from_dict(json.loads(path.read_text()))
    >>> concat_reports([first_300, next_700]).paired["best_member"]
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .per_image import decode_per_image, encode_per_image, paired_difference
from .suite import accuracy_with_se


@dataclass
class CompareRow:
    """One model under its suite: accuracies in [0, 1] on its first ``n_images`` test images."""
    name: str
    kind: str                      # "r2s", "ticket" or "dense"
    keep_ratio: float | None
    n_images: int
    clean: float
    worst_case: float
    se: float
    attacks: list[dict]            # [{"attack", "description", "acc_after"}] cumulative, in order
    per_image: list[float]         # worst-case correctness per image (R2S: expected, in [0, 1])
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.kind != "r2s":       # 0/1 per image, as one compact string
            d["per_image"] = encode_per_image(self.per_image)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CompareRow":
        d = dict(d)
        if isinstance(d.get("per_image"), str):
            d["per_image"] = decode_per_image(d["per_image"]).tolist()
        return cls(**d)


@dataclass
class CompareReport:
    """Rows (R2S first, then the members, then dense AT) and the paired differences of R2S."""
    rows: list[CompareRow]
    paired: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def row(self, name: str) -> CompareRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows], "paired": dict(self.paired), "config": dict(self.config)}

    @classmethod
    def from_dict(cls, d: dict) -> "CompareReport":
        return cls([CompareRow.from_dict(r) for r in d["rows"]], dict(d.get("paired", {})), dict(d.get("config", {})))

    def to_frame(self):
        """One row per model: clean, worst case ± SE, images, and the suite (pandas.DataFrame)."""
        import pandas as pd
        return pd.DataFrame([{"model": r.name, "kind": r.kind, "keep_ratio": r.keep_ratio, "n_images": r.n_images,
                              "clean": r.clean, "worst_case": r.worst_case, "se": r.se,
                              "suite": "; ".join(a["description"] for a in r.attacks)} for r in self.rows])


def _paired(rows: list[CompareRow]) -> dict:
    """R2S minus the best member, minus every member and minus dense AT, on the images both saw."""
    r2s = next((r for r in rows if r.kind == "r2s"), None)
    others = [r for r in rows if r.kind != "r2s"]
    if r2s is None or not others:
        return {}
    out = {"per_model": {}}
    best_name, best_acc = None, -1.0
    for o in others:
        n = min(r2s.n_images, o.n_images)
        if n < 2:
            continue
        a, b = torch.tensor(r2s.per_image[:n]), torch.tensor(o.per_image[:n])
        res = paired_difference(a, b)
        res.update({"r2s_acc": float(a.mean()), "model_acc": float(b.mean())})
        out["per_model"][o.name] = res
        if o.kind == "ticket" and res["model_acc"] > best_acc:
            best_name, best_acc = o.name, res["model_acc"]
    if best_name is not None:
        out["best_member"] = {"name": best_name, **out["per_model"][best_name],
                              "rule": "the member with the highest worst-case accuracy on the images R2S saw"}
    dense = next((o.name for o in others if o.kind == "dense"), None)
    if dense is not None and dense in out["per_model"]:
        out["dense"] = {"name": dense, **out["per_model"][dense]}
    return out


def _concat_rows(rows: Sequence[CompareRow]) -> CompareRow:
    """One model's rows on consecutive image ranges, as one row over all of them (ValueError when they
    are not the same model under the same attacks)."""
    first = rows[0]
    same = [(r.name, r.kind, r.keep_ratio, [a["attack"] for a in r.attacks], r.extra.get("members")) for r in rows]
    if any(s != same[0] for s in same):
        raise ValueError(f"concat: the parts of row {first.name!r} differ in model, kind or attacks")
    n = sum(r.n_images for r in rows)

    def mean(values):
        return sum(r.n_images * v for r, v in zip(rows, values)) / n
    per_image = [float(v) for r in rows for v in r.per_image]
    p, se = accuracy_with_se(torch.tensor(per_image))
    attacks = [dict(a, acc_after=mean([r.attacks[i]["acc_after"] for r in rows])) for i, a in enumerate(first.attacks)]
    extra = dict(first.extra)
    if "worst_case_per_member" in extra:
        extra["worst_case_per_member"] = [mean(col) for col in zip(*(r.extra["worst_case_per_member"] for r in rows))]
    return CompareRow(first.name, first.kind, first.keep_ratio, n, mean([r.clean for r in rows]), p, se, attacks,
                      per_image, extra)


def concat_reports(parts: Sequence[CompareReport]) -> CompareReport:
    """Reports of the same rows, suite, members and radius on consecutive image ranges (in order: the
    first on images ``[0, n0)``, the next on ``[n0, n0 + n1)``, ...), as one report on all of them: each
    row's per-image scores joined, its means weighted by image count, the paired differences recomputed.
    The attacks are per image, so this is the report the whole range would give up to their random
    starts; it lets a long evaluation run, and resume, a chunk at a time. ValueError on parts that differ."""
    if not parts:
        raise ValueError("concat: no reports")
    if not all(same_setup(p.config, parts[0].config) for p in parts):
        raise ValueError("concat: the reports differ in suite, members or radius")
    names = [r.name for r in parts[0].rows]
    if any([r.name for r in p.rows] != names for p in parts):
        raise ValueError("concat: the reports have different rows")
    rows = [_concat_rows([p.rows[i] for p in parts]) for i in range(len(names))]
    config = dict(parts[0].config)
    for k in ("r2s_images", "single_images"):
        if k in config:
            config[k] = sum(int(p.config.get(k, 0)) for p in parts)
    return CompareReport(rows, _paired(rows), config)


def same_setup(a: dict, b: dict) -> bool:
    """Whether two reports' configs name the same suite, members and radius (what makes their rows
    comparable image by image)."""
    return all(_plain(a.get(k)) == _plain(b.get(k)) for k in ("suite", "members", "eps"))


def _plain(v):
    """``v`` as JSON gives it back: tuples and lists alike (a report read back from JSON has lists)."""
    return json.loads(json.dumps(v))


__all__ = ["CompareReport", "CompareRow", "concat_reports", "same_setup"]
