"""The ticket zoo: candidate sets we searched, their dense baseline and evaluation reports.

``python -m rst zoo build PRESET`` searches K tickets from ONE seeded random network, trains the
dense adversarial baseline of the same architecture with the same recipe, evaluates everything on
the test set, and writes::

    pretrained_masks/<id>/tickets.rst.safetensors      the candidate set (one file, K tickets)
    pretrained_masks/<id>/dense_at.weights.safetensors the dense adversarially trained baseline
    pretrained_masks/<id>/reports/*.json|csv|png       curve, transfer, r2s, autoattack
    pretrained_masks/index.json                        what the CLI and the app list

Checkpoints live under ``runs/zoo/<id>/`` (not shipped). Every stage is skipped when its output
exists, and searches resume from their last epoch, so a killed build continues where it stopped.
The stages, in order: search (:mod:`rst.zoo.search_stage`), test accuracy on the shipped subset
(:mod:`rst.zoo.subset_stage`), the dense baseline (:mod:`rst.zoo.dense_stage`), the reports and
AutoAttack (:mod:`rst.zoo.evaluate`), the index (:mod:`rst.zoo.index`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from rst.network.masks import save_tickets
from rst.network.tickets import CandidateSet
from rst.zoo.autoattack_stage import AUTOATTACK_CHUNK  # noqa: F401  (re-exported)
from rst.zoo.build_context import BuildContext, open_build
from rst.zoo.dense_stage import dense_stage, finish_deferred_dense, plan_dense
from rst.zoo.evaluate import evaluate_zoo
from rst.zoo.index import INDEX_FORMAT, read_index, update_index  # noqa: F401  (re-exported)
from rst.zoo.plan import DEFAULT_KEEP_RATIOS, ZooPlan  # noqa: F401  (re-exported)
from rst.zoo.recipe import _report_stamp, _same_recipe  # noqa: F401  (re-exported)
from rst.zoo.search_stage import FoundTickets, find_tickets, search_stage
from rst.zoo.subset_stage import subset_stage


def build_zoo(plan: ZooPlan, *, root: str | Path = "pretrained_masks", work: str | Path = "runs/zoo",
              device=None, data_dir=None, progress: Callable[[str], None] | None = None,
              step_progress: Callable[[dict], None] | None = None, evaluate: bool = True, dense: bool = True,
              subset_path: str | Path | None = None, batched: bool = False, jobs: int = 1,
              app_default: bool = False) -> dict:
    """Build (or continue building) the zoo of ``plan``; returns its index entry.

    ``batched=True`` searches the tickets still missing together in one pass (:mod:`rst.search.batched`):
    the same recipe, faster when one ticket does not fill the device.
    ``jobs=N`` runs the searches, the dense baseline and the reports in N worker processes, the
    threads split between them (:mod:`rst.runtime.workers`; on a small CPU, N one-thread searches beat
    one N-thread search). The results are the same files as with ``jobs=1``.
    ``app_default=True`` lists the zoo first in the index: the app opens on it.
    """
    ctx = open_build(plan, root, work, device, data_dir, jobs, progress, step_progress)
    tickets = find_tickets(ctx)                            # 1. search: shipped, resumed or missing
    dense_plan = plan_dense(ctx, dense, evaluate)
    cs = search_stage(ctx, tickets, dense_plan, batched)
    subset_stage(ctx, cs, subset_path)                     # 2. test accuracy on the app's subset
    _save_candidate_set(ctx, cs, tickets, subset_path)
    dense_metrics = dense_stage(ctx, dense_plan)           # 3. the dense baseline
    reports = {}                                           # 4. reports and AutoAttack
    if evaluate:
        reports = evaluate_zoo(cs, ctx.out / "reports", ctx.base, ctx.x_all, ctx.y_all, plan=plan,
                               device=ctx.device, progress=progress, dense_path=dense_plan.path, jobs=jobs,
                               cs_path=ctx.cs_path, dense_job=dense_plan.job if dense_plan.deferred else None)
    if dense_plan.deferred:
        dense_metrics = finish_deferred_dense(dense_plan)
    return _publish(ctx, _index_entry(ctx, cs, reports, dense_metrics), app_default)   # 5. the index


def _save_candidate_set(ctx: BuildContext, cs: CandidateSet, tickets: FoundTickets,
                        subset_path: str | Path | None) -> None:
    """Write the candidate set, unless the shipped file holds exactly these tickets (left with its provenance)."""
    if not tickets.unchanged(ctx.plan.keep_ratios) or subset_path is not None:
        save_tickets(ctx.cs_path, cs)


def _index_entry(ctx: BuildContext, cs: CandidateSet, reports: dict, dense_metrics: dict | None) -> dict:
    """The zoo's entry in the index: what it is, where its files are, its tickets' metrics, how it was built."""
    base, root, dense_path = ctx.base, ctx.root, ctx.dense_path
    return {
        "id": ctx.plan.id, "title": f"{base.arch} (width {base.width:g}) on {base.dataset}, eps={base.eps:g}",
        "preset": ctx.plan.preset, "dataset": base.dataset, "arch": base.arch, "width": base.width,
        "eps": base.eps, "seed": base.seed,
        "candidate_set": str(ctx.cs_path.relative_to(root)),
        "dense_baseline": str(dense_path.relative_to(root)) if dense_path.exists() else None,
        "reports": {k: str(Path(v).relative_to(root)) for k, v in reports.items()},
        "tickets": [{"name": t.name, "keep_ratio": t.keep_ratio, "metrics": t.metrics} for t in cs.tickets],
        "dense": {"metrics": dense_metrics} if dense_metrics else None,
        "config": base.to_dict(),
        "built_with": ctx.plan.command() + (f" --jobs {ctx.jobs}" if ctx.jobs > 1 else ""),
    }


def _publish(ctx: BuildContext, entry: dict, app_default: bool) -> dict:
    """Put the entry in the index (first when it is the app's default); returns it."""
    update_index(ctx.root, entry, first=app_default)
    ctx.log(f"zoo {ctx.plan.id}: index updated ({ctx.root / 'index.json'})"
            + (", listed first (the app's default)" if app_default else ""))
    return entry
