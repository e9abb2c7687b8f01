"""In-memory datasets: uint8 NHWC images and integer labels on the host."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidValue


@dataclass
class Split:
    """One split of a dataset.

    Attributes:
        images: ``(N, H, W, C)`` uint8, kept as bytes on the host (CIFAR-10 is 150 MB this way).
        labels: ``(N,)`` int64 class indices.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise InvalidValue(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise InvalidValue(f"{len(self.images)} images but labels of shape {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        return Split(self.images[indices], self.labels[indices])


@dataclass
class Dataset:
    """Train and test splits (and optionally a validation split carved from train)."""

    train: Split
    test: Split
    class_names: list[str]
    val: Split | None = None
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Per-example shape ``(H, W, C)``."""
        return tuple(self.train.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def carve_validation(dataset: Dataset, val_size: int, seed: int) -> Dataset:
    """Move ``val_size`` training images, chosen by a permutation drawn from ``seed``, to ``val``.

    The same seed always carves the same images; the remaining training images keep their order.
    """
    if val_size == 0:
        return dataset
    n = len(dataset.train)
    if not 0 < val_size < n:
        raise InvalidValue(f"val_size must be in [0, {n}) for {n} training images, got {val_size}")
    chosen = np.random.default_rng([seed, 0x7A1]).permutation(n)[:val_size]
    keep = np.ones(n, dtype=bool)
    keep[chosen] = False
    return Dataset(train=dataset.train.subset(np.flatnonzero(keep)), test=dataset.test,
                   class_names=dataset.class_names, val=dataset.train.subset(np.sort(chosen)),
                   source=dataset.source, info=dict(dataset.info, val_size=val_size))


def limit_splits(dataset: Dataset, max_train: int | None, max_test: int | None, seed: int) -> Dataset:
    """Keep at most ``max_train`` training and ``max_test`` test images (None: all), a random subset
    drawn from ``seed`` that keeps the images' order: a quick look at a large dataset.

    Raises:
        ValueError: a limit below 1.
    """
    def limited(split: Split, limit: int | None, stream: int, name: str) -> Split:
        if limit is None or limit >= len(split):
            return split
        if limit < 1:
            raise InvalidValue(f"data.max_{name}_images must be >= 1 (or null), got {limit}")
        chosen = np.random.default_rng([seed, stream]).permutation(len(split))[:limit]
        return split.subset(np.sort(chosen))

    if max_train is None and max_test is None:
        return dataset
    return Dataset(train=limited(dataset.train, max_train, 0x5B1, "train"),
                   test=limited(dataset.test, max_test, 0x5B2, "test"), class_names=dataset.class_names,
                   val=dataset.val, source=dataset.source,
                   info=dict(dataset.info, max_train_images=max_train, max_test_images=max_test))
