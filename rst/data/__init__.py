"""Layer 2, the data: datasets in [0, 1] pixels (torchvision or the shipped subsets), splits,
augmentation and the device-side loader. Imports nothing else from rst."""
from .datasets import (AUGMENT, DATA_DIR_ENV, DATASETS, FASHION_MNIST_SIZES, SYNTHETIC_SHAPE, SYNTHETIC_SIZES,
                       DataUnavailableError, DeviceLoader, augment, augment_generator, default_augment, load_dataset,
                       load_subset, save_subset, split_train_val, subset_split, synthetic_dataset, test_split)

__all__ = ["AUGMENT", "DATA_DIR_ENV", "DATASETS", "FASHION_MNIST_SIZES", "SYNTHETIC_SHAPE", "SYNTHETIC_SIZES",
           "DataUnavailableError", "DeviceLoader", "augment", "augment_generator", "default_augment", "load_dataset",
           "load_subset", "save_subset", "split_train_val", "subset_split", "synthetic_dataset", "test_split"]
