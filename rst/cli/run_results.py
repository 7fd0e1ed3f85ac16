"""What a finished run writes and prints: its test-set numbers, ``log.json``, the trained weights of
``train`` / ``finetune`` and one line per metric."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON at ``path``, written atomically."""
    from rst.runtime.atomic import atomic_write
    atomic_write(path, json.dumps(obj, indent=2, default=str))


def final_test_metrics(model, cfg, args) -> dict:
    """Clean and PGD-20 accuracy on the test set (or its first ``--test-images``; 0 skips)."""
    from rst.data.datasets import test_split
    from rst.evaluation.metrics import test_metrics
    if args.test_images == 0:
        return {}
    x, y = test_split(cfg.dataset, cfg.seed, args.data_dir, args.test_images)
    return test_metrics(model, x, y, cfg.eps)


def print_metrics(metrics: dict, prefix: str = "") -> None:
    """One indented line per metric: name, value, split and attack."""
    for k, v in metrics.items():
        print(f"  {prefix}{k:12s} {v['value']:.4f}   ({v['split']}, {v['attack']})")


def save_trained(result, cfg, args, kind: str, extra: dict) -> int:
    """Evaluate trained weights, write ``OUT/KIND.weights.safetensors`` and ``OUT/log.json``, print the metrics."""
    from rst.network.masks import save_weights
    from rst.search.loop import validation_metrics
    from rst.runtime.provenance import provenance
    out = Path(args.out)
    metrics = final_test_metrics(result.model, cfg, args)
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    metrics.update(validation_metrics(best, cfg))
    path = save_weights(out / f"{kind}.weights.safetensors", result.model, cfg.network_spec(),
                        {"kind": kind, "metrics": metrics, "config": cfg.to_dict(), **extra})
    write_json(out / "log.json", {"command": kind, "config": cfg.to_dict(), "metrics": metrics,
                                  "best_epoch": result.best_epoch, "history": result.history,
                                  "provenance": provenance(), **extra})
    print(f"weights written to {path}")
    print_metrics(metrics)
    return 0
