"""Which test images an evaluation runs on: the first N of the shipped test subset when it holds them (the
same images as the test split's first N, offline), else the data set's test split."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_IMAGES = 1000          # the shipped subset's size: the same images as the test split's first 1000
SUBSET_ENV = "RST_TEST_SUBSET"


def default_subset_path() -> Path:
    """``$RST_TEST_SUBSET``, else the repository's ``assets/fashion_mnist_test_subset.safetensors``."""
    env = os.environ.get(SUBSET_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "assets" / "fashion_mnist_test_subset.safetensors"


def evaluation_images(cs, n: int | None, subset: str | os.PathLike | None = None, data_dir=None):
    """``(x, y, description)``: the first ``n`` test images of the set's data set (``None``: all of them).

    From the subset file (``subset``, else :func:`default_subset_path`) when it is of that data set and
    holds ``n`` images — a subset written by ``zoo build --subset`` holds the test split's first images,
    so the numbers are the same and no data set is needed — else from the test split
    (:func:`rst.data.datasets.test_split`, which raises ``DataUnavailableError`` saying why)."""
    from rst.data.datasets import DataUnavailableError, test_split
    from rst.data.subsets import load_subset
    dataset = cs.spec.dataset
    path = Path(subset) if subset else default_subset_path()
    why = ""
    if n is not None and dataset != "synthetic":
        if os.path.lexists(path):             # a FIFO, device or /proc file is refused, never read
            from rst.network.regular_files import regular_file_stat
            regular_file_stat(path, 2**40)
        if not path.is_file():
            why = f"no test subset at {path}"
        else:
            try:
                xs, ys, meta = load_subset(path)
            except ValueError as e:
                why = str(e)
            else:
                if meta.get("dataset") != dataset:
                    why = f"the test subset {path} is of {meta.get('dataset')}, not {dataset}"
                elif len(ys) < n:
                    why = f"the test subset {path} has {len(ys)} images, fewer than {n}"
                else:
                    return xs[:n], ys[:n], f"the first {n} test images, from the shipped subset {path.name}"
    try:
        x, y = test_split(dataset, cs.spec.seed, data_dir, n)
    except DataUnavailableError as e:
        raise DataUnavailableError(f"{why + '; ' if why else ''}{e}".strip()) from None
    where = "seeded synthetic test draw" if dataset == "synthetic" else f"{dataset} test split on disk"
    return x, y, f"{'all' if n is None else 'the first'} {len(y)} test images of the {where}"


def test_data(cs, data_dir=None):
    """The test split of the candidate set's data set ("synthetic": 512 images drawn with seed + 1)."""
    from rst.data.datasets import test_split
    return test_split(cs.spec.dataset, cs.spec.seed, data_dir)
