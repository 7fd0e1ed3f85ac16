"""A zoo's evaluation as named stages: the reports' stamp, the sparsity curve, the transfer matrix and
R2S, and AutoAttack; each report found is kept, each missing one computed by its jobs."""
from __future__ import annotations

from pathlib import Path

import torch

from rst.network.masks import save_tickets
from rst.network.tickets import CandidateSet
from rst.search.loop import SearchConfig
from rst.zoo.autoattack_stage import AutoAttackReport, AutoAttackSetup, autoattack_stage
from rst.zoo.build_context import _first, _log
from rst.zoo.eval_job import EvalJob, _call
from rst.zoo.plan import ZooPlan
from rst.zoo.report_stages import curve_stage, refresh_stamp, transfer_r2s_jobs


def _autoattack(cs: CandidateSet, curve: list[dict], folder: Path, cfg: SearchConfig, x_all, y_all, plan: ZooPlan,
                device: str, cs_path: Path, dense_path: Path | None, dense_job: tuple | None,
                progress) -> tuple[AutoAttackReport | None, list[EvalJob]]:
    """The AutoAttack stage on the first ``plan.autoattack_images`` test images (0: skipped, slow on a CPU)."""
    if not plan.autoattack_images:
        return None, []
    xa, ya = _first(x_all, y_all, plan.autoattack_images)
    setup = AutoAttackSetup(cs_path, dense_path, dense_job, cfg, xa, ya, device)
    return autoattack_stage(cs, curve, folder, plan, setup, progress)


def _run_eval_jobs(jobs: list[EvalJob], workers: int, paths: dict, aa_report: AutoAttackReport | None,
                   progress) -> None:
    """Run the jobs in ``workers`` processes, recording each result as it comes (a report, an AutoAttack span)."""
    from rst.runtime.workers import run_jobs

    def finished(i, result):
        job = jobs[i]
        if job.network is not None:
            aa_report.record(job, result, progress)
        else:
            paths.update(result)
            _log(progress, f"report {job.label}: written")

    if jobs:
        _log(progress, f"evaluation: {len(jobs)} jobs" + (f" in {min(workers, len(jobs))} worker processes"
                                                          if workers > 1 else ""))
    run_jobs(_call, [(j.fn, j.args) for j in jobs], workers=workers, on_result=finished)


def evaluate_zoo(cs: CandidateSet, folder: Path, cfg: SearchConfig, x_all: torch.Tensor, y_all: torch.Tensor, *,
                 plan: ZooPlan, device, progress=None, dense_path: Path | None = None, jobs: int = 1,
                 cs_path: Path | None = None, dense_job: tuple | None = None) -> dict[str, str]:
    """Curve, transfer matrix, R2S under every protocol, and AutoAttack per ticket and on the dense
    baseline at ``dense_path``, as reports.

    The curve is made here (from the tickets' test metrics where they match); transfer, R2S and
    each AutoAttack run are independent jobs, run in ``jobs`` worker processes (:mod:`rst.runtime.workers`)
    on the candidate set saved at ``cs_path``. AutoAttack covers the ``plan.autoattack_tickets``
    tickets best under PGD-20 in the curve (all when None) and the dense baseline, in jobs of
    ``AUTOATTACK_CHUNK`` images whose results are files in ``folder/autoattack-parts/``, shipped with
    the reports (a killed build, or one continued from a fresh clone, keeps every finished span); a
    network's row goes into the report when its last span is done (:mod:`rst.zoo.autoattack_stage`).
    ``dense_job``: the dense baseline is not trained yet; its AutoAttack job trains it first
    (``_build_job``'s arguments) and then runs all its spans.
    """
    folder.mkdir(parents=True, exist_ok=True)
    refresh_stamp(folder, cs, cfg)
    if cs_path is None:                                    # the jobs read the candidate set from a file
        cs_path = folder / ".candidate_set.rst.safetensors"
        save_tickets(cs_path, cs)
    paths, device = {}, str(torch.device(device or "cpu"))
    curve = curve_stage(cs, folder, cfg, *_first(x_all, y_all, plan.eval_images), device, paths, progress)
    report_jobs = transfer_r2s_jobs(cs_path, folder, cfg, plan, x_all, y_all, device, paths, progress)
    aa_report, aa_jobs = _autoattack(cs, curve, folder, cfg, x_all, y_all, plan, device, cs_path, dense_path,
                                     dense_job, progress)
    # the job that trains the dense baseline first, then span by span; transfer and R2S last
    _run_eval_jobs(aa_jobs + report_jobs, jobs, paths, aa_report, progress)
    if aa_report is not None and aa_report.path.exists():
        paths["autoattack"] = str(aa_report.path)
    return paths
