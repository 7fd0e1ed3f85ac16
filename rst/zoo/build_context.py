"""What every stage of a zoo build reads: :class:`BuildContext` (the plan, its folders, the device,
the search data and the test split read once) and where its progress messages go."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from rst.search.loop import SearchConfig, search_data
from rst.zoo.plan import ZooPlan


def _log(progress: Callable[[str], None] | None, msg: str) -> None:
    """Hand ``msg`` to ``progress`` (nothing when it is None)."""
    if progress is not None:
        progress(msg)


def _first(x: torch.Tensor, y: torch.Tensor, n: int | None):
    """The first ``n`` images and labels (all when ``n`` is None or 0)."""
    return (x[:n], y[:n]) if n else (x, y)


@dataclass(frozen=True, eq=False)
class BuildContext:
    """One build's inputs, read by every stage: the plan, its folders, device, data and progress callbacks."""
    plan: ZooPlan
    root: Path                 # the shipped folder (pretrained_masks/)
    work: Path                 # this zoo's checkpoints (runs/zoo/<id>/, not shipped)
    device: torch.device
    data_dir: str | None
    base: SearchConfig         # the plan's recipe at the preset's keep ratio
    data: object               # the search's training and validation data
    x_all: torch.Tensor        # the test split, read once, sliced per use
    y_all: torch.Tensor
    jobs: int = 1
    progress: Callable[[str], None] | None = None
    step_progress: Callable[[dict], None] | None = None

    @property
    def out(self) -> Path:
        """The zoo's shipped folder, ``root/<id>/``."""
        return self.root / self.plan.id

    @property
    def cs_path(self) -> Path:
        """The shipped candidate set."""
        return self.out / "tickets.rst.safetensors"

    @property
    def dense_path(self) -> Path:
        """The shipped dense adversarially trained baseline."""
        return self.out / "dense_at.weights.safetensors"

    @property
    def test_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test images of the curve and PGD-20 metrics (``plan.eval_images`` of them)."""
        return _first(self.x_all, self.y_all, self.plan.eval_images)

    def log(self, msg: str) -> None:
        """A progress message."""
        _log(self.progress, msg)


def open_build(plan: ZooPlan, root: str | Path, work: str | Path, device, data_dir, jobs: int,
               progress: Callable[[str], None] | None,
               step_progress: Callable[[dict], None] | None) -> BuildContext:
    """The context of a build: its shipped folder made, the search data and the test split read once."""
    from rst.data.datasets import test_split
    device = torch.device(device or "cpu")
    root, work = Path(root), Path(work) / plan.id
    (root / plan.id).mkdir(parents=True, exist_ok=True)
    base = plan.config()
    data = search_data(base, data_dir)
    x_all, y_all = test_split(base.dataset, base.seed, data_dir)
    return BuildContext(plan, root, work, device, data_dir, base, data, x_all, y_all, jobs, progress, step_progress)
