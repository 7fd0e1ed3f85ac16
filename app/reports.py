"""The zoo's stored reports and the tickets' recorded metrics, as the tables and matrices the pages draw."""
from __future__ import annotations

import math
from dataclasses import dataclass

from store import zoo_entry, zoo_report


def pick_metric(metrics: dict | None, kind: str) -> dict | None:
    """The metric of ``kind`` ("robust" or "clean") in a ``{name: {value, split, attack}}`` dict,
    preferring the test split; returns ``{"name", "value", "split", "attack"}`` or None."""
    if not metrics:
        return None
    words = ("robust", "pgd", "adv") if kind == "robust" else ("clean", "natural", "nat")
    found = []
    for name, m in metrics.items():
        value = m.get("value") if isinstance(m, dict) else m
        if not isinstance(value, (int, float)) or not any(w in name.lower() for w in words):
            continue
        if kind == "clean" and any(w in name.lower() for w in ("robust", "pgd", "adv")):
            continue
        split = m.get("split", "") if isinstance(m, dict) else ""
        attack = m.get("attack", "") if isinstance(m, dict) else ""
        found.append((not str(split).startswith("test"), "autoattack" in name.lower(), name,
                      {"name": name, "value": float(value), "split": split, "attack": attack}))
    return sorted(found, key=lambda t: t[:3])[0][3] if found else None


def as_percent(v: float | None) -> float | None:
    """Accuracies are stored as fractions in [0, 1]; the app shows percent."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return 100.0 * v if v <= 1.0 else float(v)

def stored_curve(zoo_id: str | None, cs) -> tuple[list[dict], str] | None:
    """Curve rows {name, keep_ratio, clean, robust, attack} from the zoo's report or the tickets'
    recorded metrics, and where they come from; None when neither has them."""
    if zoo_id is not None:
        rep = zoo_report(zoo_id, "curve")
        rows = rep.get("rows") if isinstance(rep, dict) else rep
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and "keep_ratio" in r for r in rows):
            n = rep.get("n_images") if isinstance(rep, dict) else None
            extra = f", {n} test images" if n else ""
            return [{"n_images": n, **r} for r in rows], f"stored zoo report{extra}"
    rows = []
    metas = {t["name"]: t for t in (zoo_entry(zoo_id) or {}).get("tickets", [])} if zoo_id else {}
    for t in cs.tickets:
        metrics = (metas.get(t.name) or {}).get("metrics") or t.metrics
        rob, cln = pick_metric(metrics, "robust"), pick_metric(metrics, "clean")
        if rob is None or cln is None:
            return None
        rows.append({"name": t.name, "keep_ratio": t.keep_ratio, "clean": cln["value"], "robust": rob["value"],
                     "attack": rob["attack"], "split": rob["split"], "n_images": n_from_split(rob["split"])})
    splits = sorted({r["split"] for r in rows if r.get("split")})
    return rows, f"metrics recorded with the tickets ({', '.join(splits) or 'split not recorded'})"


def n_from_split(split: str | None) -> int | None:
    """The number of images of a split named like ``test[:2000]`` (None when it does not say)."""
    import re
    m = re.search(r"\[:(\d+)\]", str(split or ""))
    return int(m.group(1)) if m else None


def standard_error(p: float | None, n: int | None) -> float | None:
    """One binomial standard error of an accuracy ``p`` (fraction) measured on ``n`` images."""
    if p is None or not n or p != p:
        return None
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def stored_autoattack(zoo_id: str | None) -> tuple[dict[str, float], str, int | None] | None:
    """``({ticket name: AutoAttack robust accuracy}, description, images)`` from the zoo's report, or None."""
    rep = zoo_report(zoo_id, "autoattack") if zoo_id else None
    rows = rep.get("rows") if isinstance(rep, dict) else None
    if not isinstance(rows, list) or not rows:
        return None
    acc = {str(r["name"]): float(r["robust"]) for r in rows if isinstance(r, dict) and "name" in r and "robust" in r}
    r0 = rows[0]
    return acc, (f"AutoAttack {r0.get('version', '')} ({', '.join(r0.get('attacks') or [])}), "
                 f"eps={r0.get('eps')}, {r0.get('n_images')} test images"), r0.get("n_images")

@dataclass(frozen=True)
class TransferView:
    """What the Transfer page draws: robust accuracy (fractions) of inference ticket (column)
    on adversarial examples of attack ticket (row)."""
    names: list[str]
    keep_ratios: list[float]
    matrix: list[list[float]]        # (K, K): rows attack ticket, columns inference ticket
    label: str
    attack: str
    early_stop: bool | None
    n_images: int | None
    source: str


def transfer_from_result(res, source: str) -> TransferView:
    m = res.matrix
    matrix = m.tolist() if hasattr(m, "tolist") else [list(r) for r in m]
    attack = res.attack.describe() if hasattr(res.attack, "describe") else str(res.attack)
    return TransferView(list(res.names), [float(k) for k in res.keep_ratios], matrix, str(res.label), attack,
                        bool(res.early_stop), int(res.n_images), source)


def _transfer_view(rep: dict, source: str) -> TransferView | None:
    if not isinstance(rep, dict) or "matrix" not in rep:
        return None
    matrix = [[float(v) for v in row] for row in rep["matrix"]]
    k = len(matrix)
    ratios = [float(r) for r in rep.get("keep_ratios") or [math.nan] * k]
    names = rep.get("names") or [f"keep {r:g}" for r in ratios]
    attack = rep.get("attack")
    if isinstance(attack, dict):
        from rst.evaluation.attacks import AttackConfig
        attack = AttackConfig.from_dict(attack).describe()
    early = rep.get("early_stop")
    label = rep.get("label") or f"transfer ({attack})"
    return TransferView(list(names), ratios, matrix, str(label), str(attack or ""),
                        None if early is None else bool(early), rep.get("n_images"), source)


def stored_transfer(zoo_id: str | None) -> dict[bool | None, TransferView]:
    """The zoo's stored transfer matrices by early-stop flag: the report holds
    ``{"without_early_stop": TransferResult.to_dict(), "with_early_stop": ...}`` (or one matrix)."""
    rep = zoo_report(zoo_id, "transfer") if zoo_id else None
    if not isinstance(rep, dict):
        return {}
    parts = [(v, k) for k, v in rep.items() if k in ("without_early_stop", "with_early_stop")] or [(rep, None)]
    out = {}
    for part, key in parts:
        try:
            view = _transfer_view(part, "stored zoo report")
        except (ValueError, TypeError, KeyError):
            view = None
        if view is not None:
            early = view.early_stop if view.early_stop is not None else (key == "with_early_stop" if key else None)
            out[early] = view
    return out

def stored_compare(zoo_id: str | None):
    """The zoo's like-with-like report (``r2s_compare.json`` beside its R2S report, written by
    ``python -m rst eval r2s FILE --protocols all``, or the index's ``reports.r2s_compare``) as an
    ``rst.evaluation.compare.CompareReport``, or None."""
    from store import _read_json, file_mtime, zoo_dir
    from rst.evaluation.compare import CompareReport
    reports = ((zoo_entry(zoo_id) or {}).get("reports") or {}) if zoo_id else {}
    if reports.get("r2s_compare"):                 # a boosted set's, written by bench/boosted_switch.py ship
        path = zoo_dir() / reports["r2s_compare"]
    elif reports.get("r2s"):
        path = (zoo_dir() / reports["r2s"]).with_name("r2s_compare.json")
    else:
        return None
    mtime = file_mtime(path)
    doc = _read_json(str(path), mtime) if mtime is not None else None
    if not isinstance(doc, dict) or not isinstance(doc.get("compare"), dict):
        return None
    try:
        return CompareReport.from_dict(doc["compare"])
    except (KeyError, TypeError, ValueError):
        return None


def stored_r2s(zoo_id: str | None) -> tuple[list[dict], dict] | None:
    """Rows (accuracies as fractions) and config of the zoo's stored R2S report
    (``rst.evaluation.protocols.R2SReport.to_dict()``), or None."""
    rep = zoo_report(zoo_id, "r2s") if zoo_id else None
    if not isinstance(rep, dict) or not isinstance(rep.get("results"), list):
        return None
    rows = [{"what": "R2S · clean", "adaptive": False, "attack": "none", "expected": rep.get("clean_expected_acc"),
             "worst member": min(rep.get("clean_per_member_acc") or [math.nan])}]
    for r in rep["results"]:
        rows.append({"what": f"R2S · {r.get('protocol')}", "adaptive": bool(r.get("adaptive")),
                     "attack": r.get("attack", ""), "expected": r.get("expected_acc"),
                     "worst member": r.get("worst_member_acc")})
    if rep.get("worst_case_per_member_acc"):
        rows.append({"what": "R2S · worst case over adaptive attacks", "adaptive": True, "attack": "all adaptive",
                     "expected": rep.get("worst_case_adaptive_acc"),
                     "worst member": min(rep["worst_case_per_member_acc"])})
    return rows, dict(rep.get("config") or {})
