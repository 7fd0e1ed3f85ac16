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
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rst.runtime.atomic import atomic_write
from rst.network.masks import CandidateSet, load_tickets, save_tickets, ticket_digest
from rst.runtime.checkpoint import SPEED_FIELDS, ResumeMismatchError, config_differences
from rst.evaluation.metrics import pgd20
from rst.search.loop import SearchConfig, preset, run_search, search_data, validation_metrics

AUTOATTACK_CHUNK = 250     # images per AutoAttack job: finished spans survive a kill
DEFAULT_KEEP_RATIOS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
INDEX_FORMAT = "rst-zoo-index"


@dataclass(frozen=True)
class ZooPlan:
    """What a build makes: a preset, its keep ratios, how many test images each evaluation uses."""
    preset: str
    keep_ratios: tuple[float, ...] = DEFAULT_KEEP_RATIOS
    zoo_id: str | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    eval_images: int | None = None        # test images for curve / PGD-20 metrics (None: all)
    transfer_images: int = 1000
    r2s_images: int = 500
    r2s_protocols: tuple[str, ...] = ("paper", "expectation", "ensemble", "eot")   # rst.evaluation.r2s.PROTOCOLS
    autoattack_images: int = 200          # 0 skips the AutoAttack report
    autoattack_tickets: int | None = None  # AutoAttack the N tickets best under PGD-20 (None: all)
    subset_images: int = 1000             # the test subset shipped in assets/ for the app

    def __post_init__(self):
        for r in self.keep_ratios:    # an unknown preset, a bad override or keep ratio: refused before any work
            self.config(keep_ratio=r)

    @property
    def id(self) -> str:
        return self.zoo_id or self.preset

    def config(self, **extra) -> SearchConfig:
        return preset(self.preset, **dict(self.overrides), **extra)

    def command(self) -> str:
        """The ``python -m rst zoo build`` command line that makes this plan's candidate set."""
        parts = [f"python -m rst zoo build {self.preset}", "--keep-ratios " + ",".join(f"{r:g}" for r in self.keep_ratios)]
        if self.zoo_id:
            parts.append(f"--id {self.zoo_id}")
        parts += [f"--set {k}={v!r}" for k, v in self.overrides]
        if self.eval_images is not None:
            parts.append(f"--eval-images {self.eval_images}")
        parts += [f"--transfer-images {self.transfer_images}", f"--r2s-images {self.r2s_images}",
                  f"--autoattack-images {self.autoattack_images}", f"--subset-images {self.subset_images}"]
        if self.r2s_protocols != ZooPlan.r2s_protocols:
            parts.append("--r2s-protocols " + ",".join(self.r2s_protocols))
        if self.autoattack_tickets is not None:
            parts.append(f"--autoattack-tickets {self.autoattack_tickets}")
        return " ".join(parts)


def _same_recipe(recorded: dict, cfg: SearchConfig) -> bool:
    """Was a ticket with this recorded ``search_config`` searched with ``cfg``? Fields added to
    SearchConfig after the ticket was written count at their defaults; speed settings
    (``rst.runtime.checkpoint.SPEED_FIELDS``: numerics, not the recipe) may differ."""
    try:
        return not config_differences(SearchConfig.from_dict(SearchConfig.recipe(recorded)).to_dict(), cfg.to_dict())
    except (TypeError, ValueError):
        return False


def _report_stamp(cs: CandidateSet, cfg: SearchConfig) -> str:
    """What a zoo's reports were computed from: each ticket's name, keep ratio and mask digest, and
    the recipe (the dense baseline's too; speed settings left out). Another stamp: the reports are stale."""
    # fields added to SearchConfig later are left out at their defaults, so older reports stay current
    recipe = {k: v for k, v in SearchConfig.without_later_defaults(cfg.to_dict()).items()
              if k not in SPEED_FIELDS + ("keep_ratio",)}
    return "\n".join([f"{t.name}:{t.keep_ratio:g}:{ticket_digest(t)}" for t in cs.tickets]
                     + [json.dumps(recipe, sort_keys=True)])


def _dense_is_stale(path: Path, cfg: SearchConfig) -> bool:
    """Was the dense baseline at ``path`` trained with another recipe than ``cfg`` (e.g. a zoo rebuilt
    with new settings over the shipped one)?"""
    from rst.network.masks import load_weights
    recorded = load_weights(path)[1].get("config") or {}
    return not _same_recipe(recorded, cfg.replace(keep_ratio=recorded.get("keep_ratio", cfg.keep_ratio)))


def _log(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _first(x: torch.Tensor, y: torch.Tensor, n: int | None):
    return (x[:n], y[:n]) if n else (x, y)


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
    from rst.data.datasets import test_split
    from rst.evaluation.metrics import accuracy
    from rst.runtime.workers import run_jobs

    device = torch.device(device or "cpu")
    root, work = Path(root), Path(work) / plan.id
    out = root / plan.id
    out.mkdir(parents=True, exist_ok=True)
    base = plan.config()
    data = search_data(base, data_dir)
    x_all, y_all = test_split(base.dataset, base.seed, data_dir)          # read once, sliced per use
    x_test, y_test = _first(x_all, y_all, plan.eval_images)

    # 1. one search per keep ratio, all from the network of base.seed; tickets already shipped in
    #    the candidate set (same network, same recipe) are reused, so a later build only adds ratios
    shipped = {}
    if (out / "tickets.rst.safetensors").exists():
        old = load_tickets(out / "tickets.rst.safetensors")
        if old.spec == base.network_spec():
            shipped = {t.keep_ratio: t for t in old.tickets
                       if _same_recipe(t.search_config, plan.config(keep_ratio=t.keep_ratio))}
    found, missing = {}, []
    for r in plan.keep_ratios:
        tfile = work / f"keep{r:g}" / "ticket.rst.safetensors"
        if r in shipped:
            _log(progress, f"keep_ratio {r:g}: reusing the shipped ticket")
            found[r] = shipped[r]
        elif tfile.exists():
            _log(progress, f"keep_ratio {r:g}: found {tfile}")
            found[r] = load_tickets(tfile).tickets[0]
            if not _same_recipe(found[r].search_config, plan.config(keep_ratio=r)):   # the shipped tickets' check
                raise ResumeMismatchError(f"cannot reuse {tfile}: it was searched with another recipe; "
                                          "start a new --work folder, or delete this one")
        else:
            missing.append(r)

    dense_path = out / "dense_at.weights.safetensors"
    if dense and dense_path.exists() and _dense_is_stale(dense_path, base):
        _log(progress, f"dense baseline: {dense_path} was trained with another recipe; training it again")
        dense_path.unlink()
    dense_todo = dense and not dense_path.exists()
    # with workers and an AutoAttack report, the dense baseline is trained by the job that then
    # AutoAttacks it, beside the tickets' evaluation jobs (rst.runtime.workers): no worker waits for it
    dense_job = (plan, None, str(work), str(dense_path), str(device), data_dir)
    dense_deferred = dense_todo and jobs > 1 and evaluate and bool(plan.autoattack_images)
    dense_todo = dense_todo and not dense_deferred
    if batched and len(missing) > 1:
        from rst.search.batched import search_tickets
        _log(progress, f"keep ratios {','.join(f'{r:g}' for r in missing)}: searching together in one "
                       f"batched pass ({base.epochs} epochs)")
        wdir = work / ("batched-" + "_".join(f"{r:g}" for r in missing))
        for result in search_tickets(base, missing, device=device, data=data, workdir=wdir, resume=True,
                                     progress=step_progress):
            found[result.config.keep_ratio] = _keep_ticket(result, work, device, x_test, y_test)
    elif jobs > 1 and len(missing) + dense_todo > 1:
        what = [f"keep_ratio {r:g}" for r in missing] + (["the dense baseline"] if dense_todo else [])
        _log(progress, f"searching {', '.join(what)} ({base.epochs} epochs) in {min(jobs, len(what))} worker "
                       f"processes; each prints a line per epoch")
        args = [(plan, r, str(work), str(dense_path), str(device), data_dir) for r in missing]
        args += [dense_job] if dense_todo else []
        run_jobs(_build_job, args, workers=jobs,
                 on_result=lambda i, label: _log(progress, f"{label}: done"))
        for r in missing:
            found[r] = load_tickets(work / f"keep{r:g}" / "ticket.rst.safetensors").tickets[0]
    else:
        for r in missing:
            _log(progress, f"keep_ratio {r:g}: searching ({base.epochs} epochs)")
            found[r] = _search_ticket(plan, r, work, device, data, x_test, y_test, step_progress)
    cs = CandidateSet(base.network_spec(), [found[r] for r in plan.keep_ratios])
    # the shipped file already holds exactly these tickets: leave it (and its provenance) as it is
    unchanged = bool(shipped) and [t.keep_ratio for t in old.tickets] == list(plan.keep_ratios) \
        and all(r in shipped for r in plan.keep_ratios)

    # 2. the shipped test subset (the app's default data) and each ticket's accuracy on it
    if subset_path is not None and base.dataset != "synthetic":
        from rst.data.datasets import load_subset, save_subset
        xs, ys = _first(x_all, y_all, plan.subset_images)
        save_subset(subset_path, xs, ys, {"dataset": base.dataset, "split": f"test[:{len(xs)}]",
                                          "source": "Fashion-MNIST (Zalando Research), MIT licence",
                                          "licence": "MIT, Copyright (c) 2017 Zalando SE"})
        xs, ys, _ = load_subset(subset_path)   # measure on exactly the bytes shipped
        for i, t in enumerate(cs.tickets):
            t.metrics["subset_clean"] = {"value": accuracy(cs.model(i), xs, ys),
                                         "split": f"assets subset ({len(xs)} test images)", "attack": "none"}
    cs_path = out / "tickets.rst.safetensors"
    if not unchanged or subset_path is not None:
        save_tickets(cs_path, cs)

    # 3. the dense adversarially trained baseline, same architecture, same recipe
    dense_metrics = None
    if not dense:
        _log(progress, "dense baseline: skipped (--no-dense)")
    elif dense_deferred:
        _log(progress, f"dense baseline: adversarial training ({base.epochs} epochs) in the worker that then "
                       f"AutoAttacks it")
    elif dense_path.exists():
        from rst.network.masks import load_weights
        dense_metrics = load_weights(dense_path)[1].get("metrics")
        _log(progress, f"dense baseline: found {dense_path}")
    else:
        _log(progress, f"dense baseline: adversarial training ({base.epochs} epochs)")
        dense_metrics = _train_dense_baseline(base, work, dense_path, device, data, x_test, y_test, step_progress)

    # 4. evaluation reports
    reports = {}
    if evaluate:
        reports = evaluate_zoo(cs, out / "reports", base, x_all, y_all, plan=plan, device=device,
                               progress=progress, dense_path=dense_path, jobs=jobs, cs_path=cs_path,
                               dense_job=dense_job if dense_deferred else None)
    if dense_deferred:
        from rst.network.masks import load_weights
        if not dense_path.exists():            # its AutoAttack row was there already: no job trained it
            _build_job(*dense_job)
        dense_metrics = load_weights(dense_path)[1].get("metrics")

    entry = {
        "id": plan.id, "title": f"{base.arch} (width {base.width:g}) on {base.dataset}, eps={base.eps:g}",
        "preset": plan.preset, "dataset": base.dataset, "arch": base.arch, "width": base.width,
        "eps": base.eps, "seed": base.seed,
        "candidate_set": str(cs_path.relative_to(root)),
        "dense_baseline": str(dense_path.relative_to(root)) if dense_path.exists() else None,
        "reports": {k: str(Path(v).relative_to(root)) for k, v in reports.items()},
        "tickets": [{"name": t.name, "keep_ratio": t.keep_ratio, "metrics": t.metrics} for t in cs.tickets],
        "dense": {"metrics": dense_metrics} if dense_metrics else None,
        "config": base.to_dict(),
        "built_with": plan.command() + (f" --jobs {jobs}" if jobs > 1 else ""),
    }
    update_index(root, entry, first=app_default)
    _log(progress, f"zoo {plan.id}: index updated ({root / 'index.json'})"
                   + (", listed first (the app's default)" if app_default else ""))
    return entry


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


def _transfer_report(cs_path: Path, folder: Path, cfg: SearchConfig, x, y, device: str) -> dict:
    """The transfer matrix between the tickets, source attacked without and with early stop."""
    return _write_transfer(folder, *_transfer_results(cs_path, cfg, x, y, device))


def _transfer_results(cs_path: Path, cfg: SearchConfig, x, y, device: str):
    from rst.evaluation.metrics import transfer_matrix
    cs, attack = load_tickets(cs_path), pgd20(cfg.eps)
    return tuple(transfer_matrix(cs, x, y, attack, early_stop=es, device=torch.device(device)) for es in (False, True))


def _write_transfer(folder: Path, tr, tr_es) -> dict:
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
    from rst.evaluation.r2s import R2S, evaluate_r2s
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


def _part_path(part_dir: Path, name: str, span: tuple[int, int]) -> Path:
    return part_dir / f"{name.replace(' ', '_')}.{span[0]}-{span[1]}.json"


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
    network's row goes into the report when its last span is done.
    ``dense_job``: the dense baseline is not trained yet; its AutoAttack job trains it first
    (``_build_job``'s arguments) and then runs all its spans.
    """
    import pandas as pd

    from rst.evaluation.reports import curve_figure, write_report
    from rst.runtime.workers import run_jobs

    folder.mkdir(parents=True, exist_ok=True)
    stamp, members = folder / "candidate_set.txt", _report_stamp(cs, cfg)
    if stamp.exists() and stamp.read_text() != members:   # the tickets or the recipe changed: reports are stale
        for f in folder.iterdir():
            if f.is_file():
                f.unlink()
        shutil.rmtree(folder / "autoattack-parts", ignore_errors=True)
    stamp.write_text(members)
    if cs_path is None:                                    # the jobs read the candidate set from a file
        cs_path = folder / ".candidate_set.rst.safetensors"
        save_tickets(cs_path, cs)
    paths, device = {}, str(torch.device(device or "cpu"))

    def done(name):
        p = folder / f"{name}.json"
        if p.exists():
            paths[name] = str(p)
            _log(progress, f"report {name}: found {p}")
            return True
        _log(progress, f"report {name}: computing")
        return False

    x, y = _first(x_all, y_all, plan.eval_images)
    if not done("curve"):
        rows = _curve_rows(cs, x, y, cfg, device)
        paths["curve"] = write_report(folder, "curve", {"rows": rows, "attack": pgd20(cfg.eps).describe(),
                                                        "n_images": len(x)}, pd.DataFrame(rows), curve_figure(rows))["json"]
    curve = json.loads(Path(paths["curve"]).read_text())["rows"]

    units = []                                             # (label, job, args)
    want_transfer, want_r2s = not done("transfer"), not done("r2s")
    if want_transfer and want_r2s and plan.transfer_images == plan.r2s_images and "paper" in plan.r2s_protocols:
        units.append(("transfer and r2s", _transfer_and_r2s_reports,
                      (cs_path, folder, cfg, *_first(x_all, y_all, plan.transfer_images), device, plan.r2s_protocols)))
        want_transfer = want_r2s = False
    if want_transfer:
        units.append(("transfer", _transfer_report, (cs_path, folder, cfg, *_first(x_all, y_all, plan.transfer_images), device)))
    if want_r2s:
        units.append(("r2s", _r2s_report, (cs_path, folder, cfg, *_first(x_all, y_all, plan.r2s_images), device,
                                            plan.r2s_protocols)))

    def save_aa():                                         # after every network: rows in the plan's order
        aa_rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        write_report(folder, "autoattack", {"rows": aa_rows}, pd.DataFrame(aa_rows), None)

    aa_path, aa_rows, order = folder / "autoattack.json", [], []
    part_dir = folder / "autoattack-parts"                 # shipped beside the reports: a build resumes anywhere
    if plan.autoattack_images:                             # 0: skip (AutoAttack is slow on a CPU)
        xa, ya = _first(x_all, y_all, plan.autoattack_images)
        aa_rows = json.loads(aa_path.read_text())["rows"] if aa_path.exists() else []
        aa_rows = [r for r in aa_rows if r.get("n_images") == len(xa)]
        ranked = sorted(range(len(cs.tickets)), key=lambda i: -next(
            (r["robust"] for r in curve if r["name"] == cs.tickets[i].name), 0.0))
        chosen = sorted(ranked[:plan.autoattack_tickets] if plan.autoattack_tickets is not None else ranked)
        models = [(cs.tickets[i].name, cs.tickets[i].keep_ratio, i) for i in chosen]
        if dense_path is not None and (Path(dense_path).exists() or dense_job is not None):
            models.append(("dense AT", 1.0, None))
        order = [m[0] for m in models]
        have = {r["name"] for r in aa_rows}
        if len(have) == len(models):
            _log(progress, f"report autoattack: found {aa_path}")
        # each network's images in spans of AUTOATTACK_CHUNK, one job per span, span by span across the
        # networks: the jobs share the workers evenly, and a stopped run keeps finished spans (files in
        # part_dir) for the same images of every network; the dense baseline's spans run in the one job
        # that trains it first when it is missing (the longest job, started first)
        spans = [(lo, min(lo + AUTOATTACK_CHUNK, len(xa))) for lo in range(0, len(xa), AUTOATTACK_CHUNK)]
        part_dir.mkdir(parents=True, exist_ok=True)
        aa_units = []
        for name, keep, member in sorted(models, key=lambda m: m[2] is not None):
            if name in have:
                continue
            todo = [(sp, str(_part_path(part_dir, name, sp))) for sp in spans]
            todo = [t for t in todo if not Path(t[1]).exists()]
            if len(todo) < len(spans):
                _log(progress, f"AutoAttack {name}: {len(spans) - len(todo)} of {len(spans)} spans of "
                               f"{AUTOATTACK_CHUNK} images found in {part_dir}")
            if not todo:                                   # killed after its last span, before its row
                aa_rows.append(_row_from_parts(part_dir, name, keep, spans))
                save_aa()
                continue
            train_first = dense_job if member is None and not Path(dense_path).exists() else None
            groups = [todo] if train_first is not None else [[t] for t in todo]
            for g in groups:
                label = f"AutoAttack {name} images {g[0][0][0]}-{g[-1][0][1]}"
                aa_units.append((g[0][0][0], train_first is None, label, _autoattack_parts,
                                 (cs_path, member, dense_path, cfg, xa, ya, [t[0] for t in g], [t[1] for t in g],
                                  device, train_first), {"name": name, "keep_ratio": keep}))
        # the job that trains the dense baseline first, then span by span; transfer and R2S last
        units = [u[2:] for u in sorted(aa_units, key=lambda u: (u[1], u[0]))] + units

    def finished(i, result):
        label = units[i][0]
        if label.startswith("AutoAttack"):
            name = units[i][3]["name"]
            _log(progress, f"  {label}: robust " + ", ".join(f"{r['robust']:.3f}" for r in result)
                 + f" on {'+'.join(str(r['n_images']) for r in result)} images")
            row = _row_from_parts(part_dir, name, units[i][3]["keep_ratio"], spans)
            if row is not None and name not in {r["name"] for r in aa_rows}:   # the network's last span
                aa_rows.append(row)
                save_aa()
        else:
            paths.update(result)
            _log(progress, f"report {label}: written")

    if units:
        _log(progress, f"evaluation: {len(units)} jobs" + (f" in {min(jobs, len(units))} worker processes" if jobs > 1 else ""))
    run_jobs(_call, [(u[1], u[2]) for u in units], workers=jobs, on_result=finished)
    if plan.autoattack_images and aa_path.exists():
        paths["autoattack"] = str(aa_path)
    return paths


def _call(fn, args):
    """``fn(*args)``: a top-level function, so that a job and its arguments travel to a worker together."""
    return fn(*args)


def update_index(root: str | Path, entry: dict, first: bool = False) -> Path:
    """Replace ``entry`` (by id) in ``root/index.json`` where it stands, or append it; ``first=True``
    moves it to the front (the app opens on the first zoo)."""
    path = Path(root) / "index.json"
    index = {"format": INDEX_FORMAT, "version": 1, "zoos": []}
    if path.exists():
        index = json.loads(path.read_text())
    zoos = index.get("zoos", [])
    ids = [z.get("id") for z in zoos]
    if entry["id"] in ids:                      # in place: the first zoo is the app's default
        zoos[ids.index(entry["id"])] = entry
    else:
        zoos.append(entry)
    if first:
        zoos = [entry] + [z for z in zoos if z.get("id") != entry["id"]]
    index["zoos"] = zoos
    return atomic_write(path, json.dumps(index, indent=2, default=str))   # readers never see half an index


def read_index(root: str | Path = "pretrained_masks") -> dict:
    """The zoo index (an empty one when the file is missing)."""
    path = Path(root) / "index.json"
    if not path.exists():
        return {"format": INDEX_FORMAT, "version": 1, "zoos": []}
    index = json.loads(path.read_text())
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path} is not a zoo index (format {index.get('format')!r})")
    return index
