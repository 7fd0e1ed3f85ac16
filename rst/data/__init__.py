"""Layer 2, the data: datasets in [0, 1] pixels (``datasets``: torchvision, IDX files, ``synthetic``, and
the shipped ``subsets``), splits, ``augmentation`` and the ``device_loader``. Imports nothing else from rst."""
from .augmentation import augment, augment_generator
from .datasets import (AUGMENT, DATA_DIR_ENV, DATASETS, FASHION_MNIST_SIZES, DataUnavailableError, default_augment,
                       load_dataset, split_train_val, test_split)
from .device_loader import DeviceLoader
from .subsets import load_subset, save_subset, subset_split
from .synthetic import SYNTHETIC_SHAPE, SYNTHETIC_SIZES, synthetic_dataset

__all__ = ["AUGMENT", "DATA_DIR_ENV", "DATASETS", "FASHION_MNIST_SIZES", "SYNTHETIC_SHAPE", "SYNTHETIC_SIZES",
           "DataUnavailableError", "DeviceLoader", "augment", "augment_generator", "default_augment", "load_dataset",
           "load_subset", "save_subset", "split_train_val", "subset_split", "synthetic_dataset", "test_split"]
