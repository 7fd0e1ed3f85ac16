"""The dense stage of a zoo build: the dense adversarially trained baseline, same architecture, same
recipe; trained here, in a search worker, or by the worker that then AutoAttacks it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rst.zoo.build_context import BuildContext
from rst.zoo.recipe import _dense_is_stale
from rst.zoo.training import _build_job, _train_dense_baseline


@dataclass(frozen=True)
class DensePlan:
    """Who trains a build's dense baseline: nobody (not ``wanted``), the search workers or the dense
    stage (``todo``), or the AutoAttack job that then attacks it (``deferred``)."""
    wanted: bool
    todo: bool
    deferred: bool
    path: Path
    job: tuple                 # the arguments of rst.zoo.training._build_job that train it


def plan_dense(ctx: BuildContext, dense: bool, evaluate: bool) -> DensePlan:
    """Drop a dense baseline of another recipe, and decide who trains the baseline still missing."""
    path = ctx.dense_path
    if dense and path.exists() and _dense_is_stale(path, ctx.base):
        ctx.log(f"dense baseline: {path} was trained with another recipe; training it again")
        path.unlink()
    todo = dense and not path.exists()
    # with workers and an AutoAttack report, the dense baseline is trained by the job that then
    # AutoAttacks it, beside the tickets' evaluation jobs (rst.runtime.workers): no worker waits for it
    job = (ctx.plan, None, str(ctx.work), str(path), str(ctx.device), ctx.data_dir)
    deferred = todo and ctx.jobs > 1 and evaluate and bool(ctx.plan.autoattack_images)
    return DensePlan(wanted=dense, todo=todo and not deferred, deferred=deferred, path=path, job=job)


def dense_stage(ctx: BuildContext, dense: DensePlan) -> dict | None:
    """The dense baseline skipped, left to its AutoAttack job, found, or trained here; its metrics."""
    if not dense.wanted:
        ctx.log("dense baseline: skipped (--no-dense)")
        return None
    if dense.deferred:
        ctx.log(f"dense baseline: adversarial training ({ctx.base.epochs} epochs) in the worker that then "
                f"AutoAttacks it")
        return None
    if dense.path.exists():
        from rst.network.masks import load_weights
        metrics = load_weights(dense.path)[1].get("metrics")
        ctx.log(f"dense baseline: found {dense.path}")
        return metrics
    ctx.log(f"dense baseline: adversarial training ({ctx.base.epochs} epochs)")
    x_test, y_test = ctx.test_images
    return _train_dense_baseline(ctx.base, ctx.work, dense.path, ctx.device, ctx.data, x_test, y_test,
                                 ctx.step_progress)


def finish_deferred_dense(dense: DensePlan) -> dict | None:
    """The deferred dense baseline's metrics, training it here when no AutoAttack job did."""
    from rst.network.masks import load_weights
    if not dense.path.exists():            # its AutoAttack row was there already: no job trained it
        _build_job(*dense.job)
    return load_weights(dense.path)[1].get("metrics")
