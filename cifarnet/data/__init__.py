"""Data: sources (CIFAR-10, synthetic, image folders), normalisation, augmentation, batches.

Everything here takes plain arguments; the runner maps the ``data`` config group onto
:func:`load_dataset` and :class:`BatchLoader`.
"""
from __future__ import annotations

from typing import Any

from ..registry import Registry
from .augment import Augmentation
from .cifar10 import DataError, load_cifar10
from .dataset import Dataset, Split, carve_validation, limit_splits
from .image_folder import load_image_folder
from .loader import BatchLoader
from .normalize import CIFAR10_STATS, Normalization
from .synthetic import load_synthetic

DATA_SOURCES = Registry("data source")
DATA_SOURCES.register("cifar10")(load_cifar10)
DATA_SOURCES.register("synthetic")(load_synthetic)
DATA_SOURCES.register("image_folder")(load_image_folder)


def load_dataset(source: str, val_size: int = 0, val_seed: int = 0, max_train_images: int | None = None,
                 max_test_images: int | None = None, **options: Any) -> Dataset:
    """Load the source registered as ``source`` with its ``options``, keep at most
    ``max_train_images`` and ``max_test_images`` (a subset chosen by ``val_seed``; None: all),
    then carve ``val_size`` training images into a validation split (chosen by ``val_seed``)."""
    loader = DATA_SOURCES.get(source)
    dataset = limit_splits(loader(**options), max_train_images, max_test_images, val_seed)
    return carve_validation(dataset, val_size, val_seed)


__all__ = ["Augmentation", "BatchLoader", "CIFAR10_STATS", "DATA_SOURCES", "DataError", "Dataset",
           "Normalization", "Split", "carve_validation", "load_dataset"]
