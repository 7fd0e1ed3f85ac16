"""The AutoAttack stage of a zoo evaluation: the tickets best under PGD-20 and the dense baseline,
each attacked in spans of ``AUTOATTACK_CHUNK`` images, one job a span.

Each span's result is a file in ``reports/autoattack-parts/``, shipped with the reports, so a killed
build, or one continued from a fresh clone, keeps every finished span; a network's row goes into
``autoattack.json`` when its last span is done.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rst.network.masks import load_tickets
from rst.network.tickets import CandidateSet
from rst.runtime.atomic import atomic_write
from rst.search.loop import SearchConfig
from rst.zoo.build_context import _log
from rst.zoo.eval_job import EvalJob
from rst.zoo.plan import ZooPlan
from rst.zoo.training import _build_job

AUTOATTACK_CHUNK = 250     # images per AutoAttack job: finished spans survive a kill


def _part_path(part_dir: Path, name: str, span: tuple[int, int]) -> Path:
    """The file of network ``name``'s result on the images of ``span``."""
    return part_dir / f"{name.replace(' ', '_')}.{span[0]}-{span[1]}.json"


def _autoattack_parts(cs_path: Path, member: int | None, dense_path: Path | None, cfg: SearchConfig, x, y,
                      spans: list[tuple[int, int]], parts: list[str], device: str,
                      dense_job: tuple | None = None) -> list[dict]:
    """AutoAttack (standard) on images ``x[lo:hi]`` for each span, of ticket ``member`` of the
    candidate set or of the dense baseline (``member=None``), which ``dense_job`` (the arguments of
    ``_build_job``) trains first when it is given and the baseline is missing. Each span's result is
    written to its file in ``parts`` as soon as it is done (a killed run keeps it); returns them."""
    from rst.evaluation.autoattack import autoattack_accuracy
    from rst.network.masks import load_weights
    if dense_job is not None and not Path(dense_path).exists():
        _build_job(*dense_job)
    device = torch.device(device)
    model = load_weights(dense_path, device=device)[0] if member is None else \
        load_tickets(cs_path).model(member, device=device)
    results = []
    for (lo, hi), part in zip(spans, parts):
        res = autoattack_accuracy(model, x[lo:hi], y[lo:hi], eps=cfg.eps, version="standard")
        res.pop("log", None)
        res["images"] = [lo, hi]
        atomic_write(Path(part), json.dumps(res))
        results.append(res)
    return results


def _row_from_parts(part_dir: Path, name: str, keep_ratio: float, spans: list[tuple[int, int]]) -> dict | None:
    """A network's AutoAttack row from its spans' files (joined in image order), or None while one
    is missing."""
    files = [_part_path(part_dir, name, sp) for sp in spans]
    if not all(f.exists() for f in files):
        return None
    parts = [json.loads(f.read_text()) for f in files]
    n = sum(p["n_images"] for p in parts)
    return {"name": name, "keep_ratio": keep_ratio, **{k: v for k, v in parts[0].items() if k != "images"},
            "n_images": n, "clean": sum(p["clean"] * p["n_images"] for p in parts) / n,
            "robust": sum(p["robust"] * p["n_images"] for p in parts) / n,
            "robust_per_image": "".join(p["robust_per_image"] for p in parts), "chunk_images": spans[0][1] - spans[0][0]}


@dataclass(frozen=True, eq=False)
class AutoAttackSetup:
    """What every AutoAttack job of an evaluation reads: the networks' files, the recipe, the images."""
    cs_path: Path
    dense_path: Path | None
    dense_job: tuple | None     # the dense baseline is not trained yet: _build_job's arguments that train it
    cfg: SearchConfig
    x: torch.Tensor
    y: torch.Tensor
    device: str


@dataclass(eq=False)
class AutoAttackReport:
    """The AutoAttack report being made: its rows so far, the networks' order, their spans of images."""
    folder: Path
    spans: list[tuple[int, int]]
    order: list[str]
    rows: list[dict]

    @property
    def path(self) -> Path:
        """The report's JSON file."""
        return self.folder / "autoattack.json"

    @property
    def part_dir(self) -> Path:
        """The spans' files, shipped beside the reports: a build resumes anywhere."""
        return self.folder / "autoattack-parts"

    def save(self) -> None:
        """Write the report, its rows in the plan's order (after every network)."""
        import pandas as pd

        from rst.evaluation.reports import write_report
        self.rows.sort(key=lambda r: self.order.index(r["name"]) if r["name"] in self.order else len(self.order))
        write_report(self.folder, "autoattack", {"rows": self.rows}, pd.DataFrame(self.rows), None)

    def record(self, job: EvalJob, result: list[dict], progress) -> None:
        """Say what a finished job found; add its network's row when that was its last span."""
        name, keep_ratio = job.network
        _log(progress, f"  {job.label}: robust " + ", ".join(f"{r['robust']:.3f}" for r in result)
             + f" on {'+'.join(str(r['n_images']) for r in result)} images")
        row = _row_from_parts(self.part_dir, name, keep_ratio, self.spans)
        if row is not None and name not in {r["name"] for r in self.rows}:   # the network's last span
            self.rows.append(row)
            self.save()


def autoattack_networks(cs: CandidateSet, curve: list[dict], plan: ZooPlan,
                        setup: AutoAttackSetup) -> list[tuple[str, float, int | None]]:
    """The networks to attack as (name, keep ratio, member): the ``plan.autoattack_tickets`` tickets best
    under PGD-20 in the curve (all when None) in the set's order, then the dense baseline (member None)."""
    ranked = sorted(range(len(cs.tickets)), key=lambda i: -next(
        (r["robust"] for r in curve if r["name"] == cs.tickets[i].name), 0.0))
    chosen = sorted(ranked[:plan.autoattack_tickets] if plan.autoattack_tickets is not None else ranked)
    models = [(cs.tickets[i].name, cs.tickets[i].keep_ratio, i) for i in chosen]
    if setup.dense_path is not None and (Path(setup.dense_path).exists() or setup.dense_job is not None):
        models.append(("dense AT", 1.0, None))
    return models


def open_autoattack_report(folder: Path, n_images: int, networks: list[tuple], progress) -> AutoAttackReport:
    """The report so far (its rows on ``n_images`` images) and the spans of ``AUTOATTACK_CHUNK`` images."""
    path = folder / "autoattack.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = [r for r in rows if r.get("n_images") == n_images]
    if len({r["name"] for r in rows}) == len(networks):
        _log(progress, f"report autoattack: found {path}")
    spans = [(lo, min(lo + AUTOATTACK_CHUNK, n_images)) for lo in range(0, n_images, AUTOATTACK_CHUNK)]
    report = AutoAttackReport(folder, spans, [m[0] for m in networks], rows)
    report.part_dir.mkdir(parents=True, exist_ok=True)
    return report


def _network_jobs(report: AutoAttackReport, network: tuple[str, float, int | None], setup: AutoAttackSetup,
                  progress) -> list[tuple[tuple[bool, int], EvalJob]]:
    """The jobs of a network's missing spans with their order keys (one job for all when the dense
    baseline is trained first); its row, joined now, when a kill came after its last span."""
    name, keep, member = network
    todo = [(sp, str(_part_path(report.part_dir, name, sp))) for sp in report.spans]
    todo = [t for t in todo if not Path(t[1]).exists()]
    if len(todo) < len(report.spans):
        _log(progress, f"AutoAttack {name}: {len(report.spans) - len(todo)} of {len(report.spans)} spans of "
                       f"{AUTOATTACK_CHUNK} images found in {report.part_dir}")
    if not todo:                                   # killed after its last span, before its row
        report.rows.append(_row_from_parts(report.part_dir, name, keep, report.spans))
        report.save()
        return []
    train_first = setup.dense_job if member is None and not Path(setup.dense_path).exists() else None
    groups = [todo] if train_first is not None else [[t] for t in todo]
    return [((train_first is None, g[0][0][0]),
             EvalJob(f"AutoAttack {name} images {g[0][0][0]}-{g[-1][0][1]}", _autoattack_parts,
                     (setup.cs_path, member, setup.dense_path, setup.cfg, setup.x, setup.y, [t[0] for t in g],
                      [t[1] for t in g], setup.device, train_first), (name, keep)))
            for g in groups]


def autoattack_stage(cs: CandidateSet, curve: list[dict], folder: Path, plan: ZooPlan, setup: AutoAttackSetup,
                     progress) -> tuple[AutoAttackReport, list[EvalJob]]:
    """The AutoAttack report so far and the jobs of its missing spans, span by span across the networks.

    The jobs share the workers evenly, and a stopped run keeps the finished spans of every network; the
    dense baseline's spans run in the one job that trains it first when it is missing (the longest job,
    started first)."""
    networks = autoattack_networks(cs, curve, plan, setup)
    report = open_autoattack_report(folder, len(setup.x), networks, progress)
    have = {r["name"] for r in report.rows}
    keyed = []
    for network in sorted(networks, key=lambda m: m[2] is not None):
        if network[0] not in have:
            keyed += _network_jobs(report, network, setup, progress)
    return report, [job for _, job in sorted(keyed, key=lambda kj: kj[0])]
