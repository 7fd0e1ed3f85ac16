"""One network of a zoo made and kept on disk: a ticket's search or the dense baseline's adversarial
training, each resumed from its checkpoints and measured on the test images, here or as a worker job."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from rst.network.masks import save_tickets
from rst.network.tickets import CandidateSet
from rst.runtime.atomic import atomic_write
from rst.search.loop import SearchConfig, run_search, search_data, validation_metrics
from rst.zoo.build_context import _first
from rst.zoo.plan import ZooPlan


def _keep_ticket(result, work: Path, device, x_test, y_test):
    """Test metrics, then the ticket and its history on disk (a killed build keeps it)."""
    from rst.evaluation.metrics import test_metrics
    wdir = Path(work) / f"keep{result.config.keep_ratio:g}"
    wdir.mkdir(parents=True, exist_ok=True)
    model = CandidateSet(result.spec, [result.ticket]).model(0, device=device)
    result.ticket.metrics.update(test_metrics(model, x_test, y_test, result.config.eps))
    save_tickets(wdir / "ticket.rst.safetensors", CandidateSet(result.spec, [result.ticket]))
    atomic_write(wdir / "history.json", json.dumps(result.history, indent=2))
    return result.ticket


def _search_ticket(plan: ZooPlan, r: float, work: Path, device, data, x_test, y_test, progress):
    """The search of keep ratio ``r`` (resumed from ``work/keep<r>/``), measured and kept on disk."""
    result = run_search(plan.config(keep_ratio=r), device=device, data=data, workdir=Path(work) / f"keep{r:g}",
                        resume=True, progress=progress)
    return _keep_ticket(result, work, device, x_test, y_test)


def _train_dense_baseline(base: SearchConfig, work: Path, dense_path: Path, device, data, x_test, y_test,
                          progress) -> dict:
    """Dense adversarial training with the zoo's recipe (resumed from ``work/dense/``), measured and
    saved at ``dense_path``; returns its metrics."""
    from rst.evaluation.metrics import test_metrics
    from rst.network.masks import save_weights
    from rst.search.train import train_dense
    res = train_dense(base, device=device, data=data, workdir=Path(work) / "dense", resume=True, progress=progress)
    metrics = test_metrics(res.model, x_test, y_test, base.eps)
    best = next(h for h in res.history if h["epoch"] == res.best_epoch)
    metrics.update(validation_metrics(best, base))
    save_weights(dense_path, res.model, base.network_spec(),
                 {"kind": "dense_at", "metrics": metrics, "config": base.to_dict()})
    return metrics


def _build_job(plan: ZooPlan, keep_ratio: float | None, work: str, dense_path: str, device: str,
               data_dir: str | None) -> str:
    """One build job in a worker process (rst.runtime.workers): the search of ``keep_ratio``, or the dense
    baseline (``keep_ratio=None``). Its results are files; it returns its label."""
    from rst.data.datasets import test_split
    from rst.runtime.progress import epoch_lines
    base = plan.config()
    data = search_data(base, data_dir)
    x_test, y_test = _first(*test_split(base.dataset, base.seed, data_dir), plan.eval_images)
    label = "dense" if keep_ratio is None else f"keep{keep_ratio:g}"
    if keep_ratio is None:
        _train_dense_baseline(base, Path(work), Path(dense_path), torch.device(device), data, x_test, y_test,
                              epoch_lines(label))
    else:
        _search_ticket(plan, keep_ratio, Path(work), torch.device(device), data, x_test, y_test, epoch_lines(label))
    return label
