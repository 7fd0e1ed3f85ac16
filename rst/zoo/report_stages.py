"""The report stages of a zoo evaluation: the reports' stamp, the sparsity curve, and the transfer
matrix and R2S jobs (one job for both when they share their images)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from rst.evaluation.metrics import pgd20
from rst.network.masks import load_tickets
from rst.network.tickets import CandidateSet
from rst.search.loop import SearchConfig
from rst.zoo.build_context import _first, _log
from rst.zoo.eval_job import EvalJob
from rst.zoo.plan import ZooPlan
from rst.zoo.recipe import _report_stamp


def refresh_stamp(folder: Path, cs: CandidateSet, cfg: SearchConfig) -> None:
    """Delete the reports (and AutoAttack spans) of other tickets or another recipe, then stamp ``folder``."""
    stamp, members = folder / "candidate_set.txt", _report_stamp(cs, cfg)
    if stamp.exists() and stamp.read_text() != members:   # the tickets or the recipe changed: reports are stale
        for f in folder.iterdir():
            if f.is_file():
                f.unlink()
        shutil.rmtree(folder / "autoattack-parts", ignore_errors=True)
    stamp.write_text(members)


def report_found(folder: Path, name: str, paths: dict, progress) -> bool:
    """Is report ``name`` in ``folder`` already (then its path goes into ``paths``)? Says found or computing."""
    p = folder / f"{name}.json"
    if p.exists():
        paths[name] = str(p)
        _log(progress, f"report {name}: found {p}")
        return True
    _log(progress, f"report {name}: computing")
    return False


def _curve_rows(cs: CandidateSet, x, y, cfg: SearchConfig, device) -> list[dict]:
    """The sparsity curve on ``x``: each ticket's recorded test metrics where they were measured on
    these images with the same attack (the build measures them right after the search), else measured."""
    from rst.evaluation.metrics import sparsity_curve
    attack, split = pgd20(cfg.eps), f"test[:{len(x)}]"
    rows, todo = [], []
    for i, t in enumerate(cs.tickets):
        m = t.metrics
        if m.get("test_pgd20", {}).get("split") == split and m["test_pgd20"].get("attack") == attack.describe() \
                and m.get("test_clean", {}).get("split") == split:
            rows.append({"name": t.name, "keep_ratio": t.keep_ratio, "clean": m["test_clean"]["value"],
                         "robust": m["test_pgd20"]["value"], "attack": attack.describe()})
        else:
            todo.append(i)
    if todo:
        rows += sparsity_curve(CandidateSet(cs.spec, [cs.tickets[i] for i in todo]), x, y, attack, device=device)
    return sorted(rows, key=lambda r: r["keep_ratio"])


def curve_stage(cs: CandidateSet, folder: Path, cfg: SearchConfig, x, y, device: str, paths: dict,
                progress) -> list[dict]:
    """The sparsity curve report on ``x``, found or made here; its rows."""
    import pandas as pd

    from rst.evaluation.reports import curve_figure, write_report
    if not report_found(folder, "curve", paths, progress):
        rows = _curve_rows(cs, x, y, cfg, device)
        paths["curve"] = write_report(folder, "curve", {"rows": rows, "attack": pgd20(cfg.eps).describe(),
                                                        "n_images": len(x)}, pd.DataFrame(rows), curve_figure(rows))["json"]
    return json.loads(Path(paths["curve"]).read_text())["rows"]


def _transfer_report(cs_path: Path, folder: Path, cfg: SearchConfig, x, y, device: str) -> dict:
    """The transfer matrix between the tickets, source attacked without and with early stop."""
    return _write_transfer(folder, *_transfer_results(cs_path, cfg, x, y, device))


def _transfer_results(cs_path: Path, cfg: SearchConfig, x, y, device: str):
    """The transfer matrices under PGD-20, without and with early stop."""
    from rst.evaluation.metrics import transfer_matrix
    cs, attack = load_tickets(cs_path), pgd20(cfg.eps)
    return tuple(transfer_matrix(cs, x, y, attack, early_stop=es, device=torch.device(device)) for es in (False, True))


def _write_transfer(folder: Path, tr, tr_es) -> dict:
    """The transfer report of both matrices (its table and figure: without early stop)."""
    import pandas as pd

    from rst.evaluation.reports import transfer_figure, write_report
    frame = pd.DataFrame(tr.matrix.numpy(), index=tr.names, columns=tr.names)
    return {"transfer": write_report(folder, "transfer", {"without_early_stop": tr.to_dict(),
                                                          "with_early_stop": tr_es.to_dict()},
                                     frame, transfer_figure(tr))["json"]}


def _r2s_report(cs_path: Path, folder: Path, cfg: SearchConfig, x, y, device: str,
                protocols: tuple[str, ...] = ZooPlan.r2s_protocols, transfer=None) -> dict:
    """R2S over the tickets under the paper's protocol and the adaptive ones (``transfer``: the
    paper protocol's matrix, when the transfer report has it for the same images)."""
    from rst.evaluation.protocols import evaluate_r2s
    from rst.evaluation.r2s import R2S
    from rst.evaluation.reports import r2s_figure, write_report
    report = evaluate_r2s(R2S(load_tickets(cs_path), device=torch.device(device)), x, y, eps=cfg.eps, steps=20,
                          protocols=protocols, transfer=transfer)
    return {"r2s": write_report(folder, "r2s", report.to_dict(), report.to_frame(), r2s_figure(report))["json"]}


def _transfer_and_r2s_reports(cs_path: Path, folder: Path, cfg: SearchConfig, x, y, device: str,
                              protocols: tuple[str, ...]) -> dict:
    """Both reports on the same images, in one job: R2S's paper protocol is the transfer matrix
    without early stop (the same K PGD-20 attacks), so it is computed once, not twice."""
    tr, tr_es = _transfer_results(cs_path, cfg, x, y, device)
    return {**_write_transfer(folder, tr, tr_es), **_r2s_report(cs_path, folder, cfg, x, y, device, protocols, tr)}


def transfer_r2s_jobs(cs_path: Path, folder: Path, cfg: SearchConfig, plan: ZooPlan, x_all, y_all, device: str,
                      paths: dict, progress) -> list[EvalJob]:
    """The jobs of the transfer and R2S reports not found (one job for both on the same images)."""
    jobs = []
    want_transfer, want_r2s = not report_found(folder, "transfer", paths, progress), \
        not report_found(folder, "r2s", paths, progress)
    xt, yt = _first(x_all, y_all, plan.transfer_images)
    if want_transfer and want_r2s and plan.transfer_images == plan.r2s_images and "paper" in plan.r2s_protocols:
        jobs.append(EvalJob("transfer and r2s", _transfer_and_r2s_reports,
                            (cs_path, folder, cfg, xt, yt, device, plan.r2s_protocols)))
        want_transfer = want_r2s = False
    if want_transfer:
        jobs.append(EvalJob("transfer", _transfer_report, (cs_path, folder, cfg, xt, yt, device)))
    if want_r2s:
        jobs.append(EvalJob("r2s", _r2s_report, (cs_path, folder, cfg, *_first(x_all, y_all, plan.r2s_images),
                                                 device, plan.r2s_protocols)))
    return jobs
