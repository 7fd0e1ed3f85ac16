"""The test-accuracy stage of a zoo build: the test subset shipped for the app (its default data) and
each ticket's accuracy on exactly those bytes."""
from __future__ import annotations

from pathlib import Path

from rst.network.tickets import CandidateSet
from rst.zoo.build_context import BuildContext, _first

SUBSET_SOURCE = {"source": "Fashion-MNIST (Zalando Research), MIT licence",
                 "licence": "MIT, Copyright (c) 2017 Zalando SE"}


def subset_stage(ctx: BuildContext, cs: CandidateSet, subset_path: str | Path | None) -> None:
    """Write the first ``plan.subset_images`` test images at ``subset_path`` (none for synthetic data)
    and record each ticket's clean accuracy on them as its ``subset_clean`` metric."""
    if subset_path is None or ctx.base.dataset == "synthetic":
        return
    from rst.data.subsets import load_subset, save_subset
    from rst.evaluation.metrics import accuracy
    xs, ys = _first(ctx.x_all, ctx.y_all, ctx.plan.subset_images)
    save_subset(subset_path, xs, ys, {"dataset": ctx.base.dataset, "split": f"test[:{len(xs)}]", **SUBSET_SOURCE})
    xs, ys, _ = load_subset(subset_path)   # measure on exactly the bytes shipped
    for i, t in enumerate(cs.tickets):
        t.metrics["subset_clean"] = {"value": accuracy(cs.model(i), xs, ys),
                                     "split": f"assets subset ({len(xs)} test images)", "attack": "none"}
