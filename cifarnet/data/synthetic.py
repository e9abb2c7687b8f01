"""A generated, learnable 10-class image set for offline smoke runs, tests and benchmarks.

Each class has its own shape (disk, square, ring, cross, stripes, diamond, triangle, checker, ...)
drawn in its own colour at a random position and size over a random dim background, plus pixel
noise. Everything is drawn from one seed, so the same seed gives the same images.
"""
from __future__ import annotations

import numpy as np

from ..errors import InvalidValue
from .dataset import Dataset, Split

CLASS_NAMES = ["disk", "square", "ring", "cross", "h_stripes", "v_stripes", "diamond", "triangle",
               "checker", "diagonal"]

# One RGB colour per class (0..255); shapes and colours both carry the label.
_PALETTE = np.array([[230, 60, 60], [60, 200, 60], [70, 90, 230], [230, 210, 50], [200, 70, 200],
                     [60, 210, 210], [240, 140, 40], [150, 150, 150], [120, 60, 20], [250, 250, 250]],
                    dtype=np.float32)


def _shape_mask(kind: int, dy: np.ndarray, dx: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean mask of shape ``kind`` given offsets from the centre ``dy, dx`` and radius ``r``."""
    dist = np.sqrt(dy ** 2 + dx ** 2)
    box = np.maximum(np.abs(dy), np.abs(dx)) < r
    period = np.maximum(r / 2.5, 2.0)
    if kind == 0:
        return dist < r                                                          # disk
    if kind == 1:
        return box                                                               # square
    if kind == 2:
        return (dist < r) & (dist > 0.55 * r)                                    # ring
    if kind == 3:
        return ((np.abs(dy) < r / 3) & (np.abs(dx) < r)) | ((np.abs(dx) < r / 3) & (np.abs(dy) < r))
    if kind == 4:
        return box & (np.floor(dy / period) % 2 == 0)                            # horizontal stripes
    if kind == 5:
        return box & (np.floor(dx / period) % 2 == 0)                            # vertical stripes
    if kind == 6:
        return np.abs(dy) + np.abs(dx) < r                                       # diamond
    if kind == 7:
        return (dy < r) & (dy > -r) & (np.abs(dx) < (dy + r) / 2)                # triangle
    if kind == 8:
        return box & ((np.floor(dy / period) + np.floor(dx / period)) % 2 == 0)  # checker
    return box & (np.floor((dy + dx) / period) % 2 == 0)                         # diagonal stripes


def _masks(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``(N, size, size)`` shape masks, one shape per label at a random place and scale."""
    n = len(labels)
    r = rng.uniform(0.22, 0.38, n)[:, None, None] * size                         # N, 1, 1
    cy = rng.uniform(0.35, 0.65, n)[:, None, None] * size
    cx = rng.uniform(0.35, 0.65, n)[:, None, None] * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    for kind in range(len(CLASS_NAMES)):
        idx = np.flatnonzero(labels == kind)
        masks[idx] = _shape_mask(kind, yy[None] - cy[idx], xx[None] - cx[idx], r[idx])
    return masks


def make_split(n: int, rng: np.random.Generator, size: int = 32, noise: float = 20.0) -> Split:
    """``n`` images with balanced labels (``n // 10`` or one more per class), shuffled."""
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    masks = _masks(labels, size, rng)[..., None]                                 # N, S, S, 1
    background = rng.uniform(0, 90, (n, 1, 1, 3)).astype(np.float32)
    colour = _PALETTE[labels][:, None, None, :] * rng.uniform(0.75, 1.0, (n, 1, 1, 1)).astype(np.float32)
    images = np.where(masks, colour, background)
    images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(noise)
    return Split(np.clip(images, 0, 255).astype(np.uint8), labels)


def load_synthetic(train_size: int = 5000, test_size: int = 1000, data_seed: int = 0, image_size: int = 32,
                   noise: float = 20.0) -> Dataset:
    """The synthetic dataset; a pure function of its arguments (``data_seed`` draws the images)."""
    if train_size < 1 or test_size < 1:
        raise InvalidValue(f"synthetic sizes must be positive, got train={train_size}, test={test_size}")
    rng = np.random.default_rng([data_seed, 0x5E7])
    train = make_split(train_size, rng, image_size, noise)
    test = make_split(test_size, rng, image_size, noise)
    return Dataset(train=train, test=test, class_names=list(CLASS_NAMES), source="synthetic",
                   info={"seed": data_seed, "train_size": train_size, "test_size": test_size})
