"""Inverted dropout with a rate that may change during training (dropout schedules)."""
from __future__ import annotations

import numpy as np

from ..backend import backend_of
from .base import Layer, Shape


class Dropout(Layer):
    """Zero each activation with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    Identity in eval mode and when ``rate == 0``. Masks are drawn on the host from this layer's
    own seeded generator (``self.rng``, derived from the model's at build time), so a seed gives
    the same masks on every backend.

    Shapes: x, out: any, e.g. ``(N, D)``.
    """

    def __init__(self, rate: float = 0.5, *, rng: np.random.Generator | None = None):
        super().__init__()
        self.rate = rate
        self.rng = rng if rng is not None else np.random.default_rng()

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {value}")
        self._rate = float(value)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, **options) -> "Dropout":
        return cls(rng=np.random.default_rng(rng.integers(2**63)), **options)

    def replica(self) -> "Dropout":
        """A twin with a generator of its own, seeded from this layer's generator (which advances)."""
        twin = super().replica()
        twin.rng = np.random.default_rng(self.rng.integers(2**63))
        return twin

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape) >= self.rate            # host, same shape as x
        mask = backend_of(x).asarray(keep.astype(x.dtype) / np.asarray(1.0 - self.rate, x.dtype))
        self._mask = mask
        return x * mask

    def backward(self, dout):
        mask, self._mask = getattr(self, "_mask", None), None
        return dout if mask is None else dout * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}"
