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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .atomic import atomic_write
from .masks import CandidateSet, load_tickets, save_tickets
from .checkpoint import config_differences
from .search import SearchConfig, preset, run_search, search_data, validation_metrics

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
    autoattack_images: int = 200          # 0 skips the AutoAttack report
    subset_images: int = 1000             # the test subset shipped in assets/ for the app

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
        return " ".join(parts)


def _same_recipe(recorded: dict, cfg: SearchConfig) -> bool:
    """Was a ticket with this recorded ``search_config`` searched with ``cfg``? Fields added to
    SearchConfig after the ticket was written count at their defaults; speed settings
    (``rst.checkpoint.SPEED_FIELDS``: numerics, not the recipe) may differ."""
    try:
        return not config_differences(SearchConfig.from_dict(SearchConfig.recipe(recorded)).to_dict(), cfg.to_dict())
    except (TypeError, ValueError):
        return False


def _log(progress: Callable[[str], None] | None, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _first(x: torch.Tensor, y: torch.Tensor, n: int | None):
    return (x[:n], y[:n]) if n else (x, y)


def build_zoo(plan: ZooPlan, *, root: str | Path = "pretrained_masks", work: str | Path = "runs/zoo",
              device=None, data_dir=None, progress: Callable[[str], None] | None = None,
              step_progress: Callable[[dict], None] | None = None, evaluate: bool = True, dense: bool = True,
              subset_path: str | Path | None = None, batched: bool = False) -> dict:
    """Build (or continue building) the zoo of ``plan``; returns its index entry.

    ``batched=True`` searches the tickets still missing together in one pass (:mod:`rst.batched`):
    the same recipe, faster when one ticket does not fill the device.
    """
    from .data import test_split
    from .evaluate import accuracy, test_metrics
    from .masks import save_weights
    from .train import train_dense

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
        else:
            missing.append(r)

    def finish(result) -> None:     # test metrics, then the ticket on disk (a killed build keeps it)
        r, wdir = result.config.keep_ratio, work / f"keep{result.config.keep_ratio:g}"
        wdir.mkdir(parents=True, exist_ok=True)
        model = CandidateSet(result.spec, [result.ticket]).model(0, device=device)
        result.ticket.metrics.update(test_metrics(model, x_test, y_test, base.eps))
        save_tickets(wdir / "ticket.rst.safetensors", CandidateSet(result.spec, [result.ticket]))
        atomic_write(wdir / "history.json", json.dumps(result.history, indent=2))
        found[r] = result.ticket

    if batched and len(missing) > 1:
        from .batched import search_tickets
        _log(progress, f"keep ratios {','.join(f'{r:g}' for r in missing)}: searching together in one "
                       f"batched pass ({base.epochs} epochs)")
        wdir = work / ("batched-" + "_".join(f"{r:g}" for r in missing))
        for result in search_tickets(base, missing, device=device, data=data, workdir=wdir, resume=True,
                                     progress=step_progress):
            finish(result)
    else:
        for r in missing:
            cfg = plan.config(keep_ratio=r)
            _log(progress, f"keep_ratio {r:g}: searching ({cfg.epochs} epochs)")
            finish(run_search(cfg, device=device, data=data, workdir=work / f"keep{r:g}", resume=True,
                              progress=step_progress))
    cs = CandidateSet(base.network_spec(), [found[r] for r in plan.keep_ratios])
    # the shipped file already holds exactly these tickets: leave it (and its provenance) as it is
    unchanged = bool(shipped) and [t.keep_ratio for t in old.tickets] == list(plan.keep_ratios) \
        and all(r in shipped for r in plan.keep_ratios)

    # 2. the shipped test subset (the app's default data) and each ticket's accuracy on it
    if subset_path is not None and base.dataset != "synthetic":
        from .data import load_subset, save_subset
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
    dense_path = out / "dense_at.weights.safetensors"
    dense_metrics = None
    if not dense:
        _log(progress, "dense baseline: skipped (--no-dense)")
    elif dense_path.exists():
        from .masks import load_weights
        dense_metrics = load_weights(dense_path)[1].get("metrics")
        _log(progress, f"dense baseline: found {dense_path}")
    else:
        _log(progress, f"dense baseline: adversarial training ({base.epochs} epochs)")
        res = train_dense(base, device=device, data=data, workdir=work / "dense", resume=True, progress=step_progress)
        dense_metrics = test_metrics(res.model, x_test, y_test, base.eps)
        best = next(h for h in res.history if h["epoch"] == res.best_epoch)
        dense_metrics.update(validation_metrics(best, base))
        save_weights(dense_path, res.model, base.network_spec(),
                     {"kind": "dense_at", "metrics": dense_metrics, "config": base.to_dict()})

    # 4. evaluation reports
    reports = {}
    if evaluate:
        reports = evaluate_zoo(cs, out / "reports", base, x_all, y_all, plan=plan, device=device,
                               progress=progress, dense_path=dense_path)

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
        "built_with": plan.command(),
    }
    update_index(root, entry)
    _log(progress, f"zoo {plan.id}: index updated ({root / 'index.json'})")
    return entry


def evaluate_zoo(cs: CandidateSet, folder: Path, cfg: SearchConfig, x_all: torch.Tensor, y_all: torch.Tensor, *,
                 plan: ZooPlan, device, progress=None, dense_path: Path | None = None) -> dict[str, str]:
    """Curve, transfer matrix, R2S under every protocol, and AutoAttack per ticket and on the dense
    baseline at ``dense_path``, as reports."""
    from .attacks import AttackConfig
    from .autoattack import autoattack_accuracy
    from .evaluate import sparsity_curve, transfer_matrix
    from .r2s import R2S, evaluate_r2s
    from .reports import curve_figure, r2s_figure, transfer_figure, write_report

    folder.mkdir(parents=True, exist_ok=True)
    stamp, members = folder / "candidate_set.txt", ",".join(f"{t.name}:{t.keep_ratio:g}" for t in cs.tickets)
    if stamp.exists() and stamp.read_text() != members:   # the candidate set changed: reports are stale
        for f in folder.iterdir():
            f.unlink()
    stamp.write_text(members)
    paths = {}
    pgd20 = AttackConfig("pgd", eps=cfg.eps, alpha=cfg.eps / 4, steps=20)

    def done(name):
        p = folder / f"{name}.json"
        if p.exists():
            paths[name] = str(p)
            _log(progress, f"report {name}: found {p}")
            return True
        _log(progress, f"report {name}: computing")
        return False

    if not done("curve"):
        x, y = _first(x_all, y_all, plan.eval_images)
        rows = sparsity_curve(cs, x, y, pgd20, device=device)
        import pandas as pd
        paths["curve"] = write_report(folder, "curve", {"rows": rows, "attack": pgd20.describe(), "n_images": len(x)},
                                      pd.DataFrame(rows), curve_figure(rows))["json"]
    if not done("transfer"):
        x, y = _first(x_all, y_all, plan.transfer_images)
        tr = transfer_matrix(cs, x, y, pgd20, early_stop=False, device=device)
        tr_es = transfer_matrix(cs, x, y, pgd20, early_stop=True, device=device)
        import pandas as pd
        frame = pd.DataFrame(tr.matrix.numpy(), index=tr.names, columns=tr.names)
        paths["transfer"] = write_report(folder, "transfer", {"without_early_stop": tr.to_dict(),
                                                              "with_early_stop": tr_es.to_dict()},
                                         frame, transfer_figure(tr))["json"]
    if not done("r2s"):
        x, y = _first(x_all, y_all, plan.r2s_images)
        report = evaluate_r2s(R2S(cs, device=device), x, y, eps=cfg.eps, steps=20,
                              protocols=("paper", "expectation", "ensemble", "eot"))
        paths["r2s"] = write_report(folder, "r2s", report.to_dict(), report.to_frame(), r2s_figure(report))["json"]
    if plan.autoattack_images:                  # 0: skip (AutoAttack is slow on a CPU)
        # row by row: a report that lacks a row (the dense baseline, a killed run) gets only that row
        x, y = _first(x_all, y_all, plan.autoattack_images)
        path = folder / "autoattack.json"
        rows = json.loads(path.read_text())["rows"] if path.exists() else []
        rows = [r for r in rows if r.get("n_images") == len(x)]
        models = [(t.name, t.keep_ratio, lambda i=i: cs.model(i, device=device)) for i, t in enumerate(cs.tickets)]
        if dense_path is not None and Path(dense_path).exists():
            from .masks import load_weights
            models.append(("dense AT", 1.0, lambda: load_weights(dense_path, device=device)[0]))
        have = {r["name"] for r in rows}
        todo = [m for m in models if m[0] not in have]
        order = [m[0] for m in models]

        def save():                              # after every row: a killed run keeps what it finished
            import pandas as pd
            rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
            write_report(folder, "autoattack", {"rows": rows}, pd.DataFrame(rows), None)

        for name, keep, build in todo:
            res = autoattack_accuracy(build(), x, y, eps=cfg.eps, version="standard")
            res.pop("log", None)
            rows.append({"name": name, "keep_ratio": keep, **res})
            _log(progress, f"  AutoAttack {name}: robust {res['robust']:.3f} on {len(x)} images")
            save()
        if not todo:                             # (no file means no rows: everything was to do)
            _log(progress, f"report autoattack: found {path}")
        paths["autoattack"] = str(path)
    return paths


def update_index(root: str | Path, entry: dict) -> Path:
    """Replace ``entry`` (by id) in ``root/index.json`` where it stands, or append it."""
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
