"""Weight initialisation on the host, from a seeded generator (same seed, same weights)."""
from __future__ import annotations

from typing import Any

import numpy as np


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype: Any) -> np.ndarray:
    """Kaiming/He normal initialisation for layers followed by ReLU: N(0, 2 / fan_in).

    Args:
        rng: the generator all of a model's randomness comes from.
        shape: the weight's shape.
        fan_in: inputs feeding one output unit (``KH*KW*C_in`` for conv, ``D_in`` for linear).
    """
    std = np.sqrt(2.0 / fan_in)
    return (rng.standard_normal(shape) * std).astype(dtype)
