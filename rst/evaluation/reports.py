"""Result files with their provenance: ``name.json`` (numbers + config + provenance), ``name.csv``
(a flat table), ``name.png`` (a figure, provenance in its PNG text chunks).

Figures are built on ``matplotlib.figure.Figure`` directly (Agg, no pyplot global state), so they
are safe to build in a web app's worker threads and can be passed to ``st.pyplot``.

    >>> rows = sparsity_curve(cs, x, y, attack)
    >>> write_report("runs/eval", "curve", {"rows": rows, "attack": attack.to_dict()},
    ...              pandas.DataFrame(rows), curve_figure(rows))
    {'json': PosixPath('runs/eval/curve.json'), 'csv': ..., 'png': ...}
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import textwrap
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure   # Agg canvas on savefig; pyplot (global state) is never used

from rst.runtime.atomic import atomic_write
from rst.runtime.provenance import provenance


def _jsonable(obj: Any) -> Any:
    """Tensors, arrays, dataclasses, paths and non-finite floats -> plain JSON values (NaN -> null)."""
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj))
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def write_report(folder: str | os.PathLike, name: str, payload: dict, frame=None,
                 figure: Figure | None = None, device: str | None = None) -> dict[str, Path]:
    """Write ``name.json`` (payload + provenance), ``name.csv`` (if ``frame``), ``name.png`` (if ``figure``).

    The JSON gets ``provenance`` (package versions, git revision, time, device; a provenance the
    payload already carries is kept) and ``files`` (the sibling CSV / PNG names). Returns the paths
    written, keyed "json", "csv", "png". Each file is written with :func:`rst.runtime.atomic.atomic_write` (a
    temporary file per writer, fsync, rename): a writer killed at any point leaves the old files whole.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prov = payload.get("provenance") or provenance(device)
    paths: dict[str, Path] = {}
    files = {}
    if frame is not None:
        paths["csv"] = folder / f"{name}.csv"
        atomic_write(paths["csv"], frame.to_csv(index=False).encode())
        files["csv"] = paths["csv"].name
    if figure is not None:
        paths["png"] = folder / f"{name}.png"
        png_meta = {"Software": f"rst {prov.get('versions', {}).get('rst', '')}",
                    "Description": f"{name}; git {prov.get('git_revision', 'unknown')}; created {prov.get('created', '')}"}
        atomic_write(paths["png"], lambda f: figure.savefig(f, format="png", dpi=120, bbox_inches="tight",
                                                             metadata=png_meta))
        files["png"] = paths["png"].name
    doc = {**payload, "provenance": prov, "files": files}
    paths["json"] = folder / f"{name}.json"
    atomic_write(paths["json"], json.dumps(_jsonable(doc), indent=2, allow_nan=False).encode())
    return paths


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------


def curve_figure(rows: list[dict]) -> Figure:
    """Clean and robust accuracy against keep ratio (rows of :func:`rst.evaluation.metrics.sparsity_curve`)."""
    rows = sorted(rows, key=lambda r: r["keep_ratio"])
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    kr = [r["keep_ratio"] for r in rows]
    ax.plot(kr, [100 * r["clean"] for r in rows], "o-", label="clean")
    ax.plot(kr, [100 * r["robust"] for r in rows], "s-", label="robust")
    if kr and min(kr) > 0 and max(kr) / min(kr) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("keep ratio (fraction of weights kept)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    if rows:
        ax.set_title(f"Robust scratch tickets: {rows[0]['attack']}", fontsize=8)
    return fig


def transfer_figure(result) -> Figure:
    """Heat map of a :class:`rst.evaluation.metrics.TransferResult` (rows: source, columns: target)."""
    m = 100 * result.matrix.detach().cpu().numpy()
    K = m.shape[0]
    fig = Figure(figsize=(max(6.0, 1.6 + 0.75 * K), max(4.0, 1.4 + 0.7 * K)))
    ax = fig.subplots()
    im = ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
    for i in range(K):
        for j in range(K):
            ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] < 50 else "black")
    ticks = [f"{r:g}" for r in result.keep_ratios]
    ax.set_xticks(range(K), ticks)
    ax.set_yticks(range(K), ticks)
    ax.set_xlabel("target keep ratio (defender)")
    ax.set_ylabel("source keep ratio (attacked)")
    title = textwrap.fill(result.label, 60) + "\n" + textwrap.fill(f"{result.attack}, {result.n_images} images", 60)
    ax.set_title(title, fontsize=7)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    return fig


def r2s_figure(report) -> Figure:
    """Expected accuracy (bars) and worst member (markers) per protocol of an :class:`rst.evaluation.protocols.R2SReport`."""
    fig = Figure(figsize=(6.5, 0.9 + 0.55 * (len(report.results) + 2)))
    ax = fig.subplots()
    labels, exp, worst, hatches = ["clean"], [report.clean_expected_acc], [min(report.clean_per_member_acc)], [""]
    for r in report.results:
        labels.append(r.protocol + ("" if r.adaptive else " (non-adaptive)"))
        exp.append(r.expected_acc)
        worst.append(r.worst_member_acc)
        hatches.append("" if r.adaptive else "//")
    if report.worst_case_per_member_acc:
        labels.append("worst case (adaptive)")
        exp.append(report.worst_case_adaptive_acc)
        worst.append(min(report.worst_case_per_member_acc))
        hatches.append("")
    ys = list(range(len(labels)))[::-1]
    colors = ["0.7"] + ["tab:orange" if h else "tab:blue" for h in hatches[1:]]
    if report.worst_case_per_member_acc:
        colors[-1] = "tab:red"
    bars = ax.barh(ys, [100 * e for e in exp], color=colors, edgecolor="black", linewidth=0.5)
    for bar, h in zip(bars, hatches):
        bar.set_hatch(h)
    ax.plot([100 * w for w in worst], ys, "kx", label="worst member")
    for y_, e in zip(ys, exp):
        ax.text(100 * e + 1, y_, f"{100 * e:.1f}", va="center", fontsize=8)
    ax.set_yticks(ys, labels)
    ax.set_xlim(0, 105)
    ax.set_xlabel("expected accuracy over the random switch (%)")
    cfg = report.config
    ax.set_title(f"R2S, K={len(report.clean_per_member_acc)} members, eps={cfg.get('eps', float('nan')):.4g}, "
                 f"{cfg.get('n_images', '')} images", fontsize=8)
    ax.legend(loc="lower right", fontsize=7)
    return fig


__all__ = ["write_report", "curve_figure", "transfer_figure", "r2s_figure"]
