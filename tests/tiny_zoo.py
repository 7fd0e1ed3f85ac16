"""A tiny zoo for the app's tests and benchmark: seconds on a CPU, same layout as ``pretrained_masks/``.

    python tests/tiny_zoo.py /tmp/tiny_zoo      # then RST_ZOO_DIR=/tmp/tiny_zoo/pretrained_masks
                                                #      RST_TEST_SUBSET=/tmp/tiny_zoo/subset.safetensors

Three tickets (keep 0.3, 0.5, 0.7) of a quarter-width Conv-4, each from a quick score training
(``run_search`` for one epoch on 256 synthetic images; no inner attack unless ``adversarial=True``),
a 256-image "test subset" of synthetic Fashion-MNIST-shaped images, stored curve / transfer / R2S
reports in ``rst.zoo.build``'s layout, and an ``index.json``. Numbers from it mean nothing; it exercises
every code path of the app in seconds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

KEEP_RATIOS = (0.3, 0.5, 0.7)
EPS = 0.1


def build_tiny_zoo(root: str | Path, with_reports: bool = True, n_test: int = 256, adversarial: bool = False,
                   width: float = 0.25, keep_ratios: tuple[float, ...] = KEEP_RATIOS) -> dict[str, Path]:
    """Write the tiny zoo under ``root``; returns ``{"zoo_dir", "subset"}``.

    ``width=1.0, keep_ratios=(0.05, 0.1, 0.2, 0.3, 0.5)`` gives the real zoo's network and number of
    members (untrained-quality tickets): what ``bench/app_bench.py --bench-zoo`` times."""
    import torch

    from rst.evaluation.attacks import AttackConfig
    from rst.data.datasets import save_subset, split_train_val, synthetic_dataset
    from rst.evaluation.metrics import accuracy, robust_accuracy
    from rst.network.masks import CandidateSet, save_tickets
    from rst.search.loop import SearchData, preset, run_search

    torch.manual_seed(0)
    root = Path(root)
    zoo = root / "pretrained_masks"
    (zoo / "tiny").mkdir(parents=True, exist_ok=True)
    x, y = synthetic_dataset(288, seed=0)
    xt, yt, xv, yv = split_train_val(x, y, 32, seed=0)
    data = SearchData(xt, yt, xv, yv)
    tickets, spec = [], None
    for r in keep_ratios:
        cfg = preset("tiny", dataset="fashion_mnist", keep_ratio=r, epochs=1, val_images=32, val_steps=1, width=width,
                     inner_attack="pgd" if adversarial else "none")
        res = run_search(cfg, device="cpu", data=data)
        tickets.append(res.ticket)
        spec = res.spec
    x_test, y_test = synthetic_dataset(n_test, seed=1)
    subset = save_subset(root / "subset.safetensors", x_test, y_test,
                         {"dataset": "fashion_mnist", "source": f"synthetic stand-in, {n_test} images (tests only)",
                          "licence": "generated"})
    cs = CandidateSet(spec, tickets)
    attack = AttackConfig("pgd", eps=EPS, alpha=EPS / 4, steps=3)
    entries = []
    xm, ym = x_test[:64], y_test[:64]
    for i, t in enumerate(tickets):
        model = cs.model(i)
        split = f"test[:{len(ym)}]"
        metrics = {"test_clean": {"value": accuracy(model, xm, ym), "split": split, "attack": "none"},
                   "test_pgd20": {"value": robust_accuracy(model, xm, ym, attack), "split": split,
                                  "attack": attack.describe()}}
        t.metrics = {**t.metrics, **metrics}
        entries.append({"name": t.name, "keep_ratio": t.keep_ratio, "metrics": metrics})
    save_tickets(zoo / "tiny" / "tickets.rst.safetensors", cs)
    # stand-in "dense baseline" metrics (the untrained dense network: only exercises the app's baseline lines)
    from rst.network.masked import set_dense
    from rst.network.models import build_network
    dense = build_network(spec).eval()
    set_dense(dense, True)
    dense_metrics = {"test_clean": {"value": accuracy(dense, xm, ym), "split": f"test[:{len(ym)}]", "attack": "none"},
                     "test_pgd20": {"value": robust_accuracy(dense, xm, ym, attack), "split": f"test[:{len(ym)}]",
                                    "attack": attack.describe()}}
    reports = {}
    if with_reports:
        reports = _reports(cs, x_test[:32], y_test[:32], attack, zoo / "tiny")
    index = {"format": "rst-zoo-index", "version": 1, "zoos": [{
        "id": "tiny", "title": f"Tiny test zoo (synthetic, width {width:g})", "preset": "tiny", "dataset": "fashion_mnist",
        "arch": spec.arch, "eps": EPS, "candidate_set": "tiny/tickets.rst.safetensors", "dense_baseline": None,
        "reports": reports, "tickets": entries, "dense": {"metrics": dense_metrics}, "built_with": "python tests/tiny_zoo.py",
        "note": "1-epoch tickets on synthetic data: for tests only"}]}
    (zoo / "index.json").write_text(json.dumps(index, indent=1))
    return {"zoo_dir": zoo, "subset": subset}


def _reports(cs, x, y, attack, out: Path) -> dict:
    """Stored curve, transfer and R2S reports, in rst.zoo.build.evaluate_zoo's layout."""
    from rst.evaluation.metrics import sparsity_curve, transfer_matrix
    from rst.evaluation.protocols import evaluate_r2s
    from rst.evaluation.r2s import R2S
    rows = sparsity_curve(cs, x, y, attack, device="cpu")
    (out / "curve.json").write_text(json.dumps({"rows": rows, "attack": attack.describe(), "n_images": len(y)}))
    tr = {f"with{'' if es else 'out'}_early_stop": transfer_matrix(cs, x, y, attack, early_stop=es).to_dict()
          for es in (False, True)}
    (out / "transfer.json").write_text(json.dumps(tr))
    report = evaluate_r2s(R2S(cs), x, y, eps=attack.eps, steps=attack.steps, protocols=("paper", "expectation"))
    (out / "r2s.json").write_text(json.dumps(report.to_dict(), default=str))
    return {"curve": "tiny/curve.json", "transfer": "tiny/transfer.json", "r2s": "tiny/r2s.json"}


if __name__ == "__main__":
    out = build_tiny_zoo(sys.argv[1] if len(sys.argv) > 1 else "/tmp/rst_tiny_zoo",
                         with_reports="--no-reports" not in sys.argv)
    print(f"RST_ZOO_DIR={out['zoo_dir']} RST_TEST_SUBSET={out['subset']}")
