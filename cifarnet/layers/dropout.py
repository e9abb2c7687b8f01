"""Inverted dropout with a rate that may change during training (dropout schedules)."""
from __future__ import annotations

import numpy as np

from ..errors import InvalidValue
from ..functional import dropout
from .base import EVAL, Layer, Mode, Shape
from .kinds import Kind, register_kind

_IDENTITY = object()           # the context of an eval-mode pass: backward passes dout through


class Dropout(Layer):
    """Zero each activation with probability ``rate`` and scale the rest by ``1 / (1 - rate)``.

    Identity in eval mode and when ``rate == 0``. Masks are drawn on the host from this layer's
    own seeded generator (``self.rng``, derived from the model's at build time; a part of a split
    batch draws from one derived from it, see :class:`Mode`), so a seed gives the same masks on
    every backend. The generator's state is saved in checkpoints.

    Shapes: x, out: any, e.g. ``(N, D)``.
    """

    kind = "dropout"

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
            raise InvalidValue(f"dropout rate must be in [0, 1), got {value}")
        self._rate = float(value)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, **options) -> Dropout:
        return cls(rng=np.random.default_rng(rng.integers(2**63)), **options)

    def forward(self, x, mode: Mode = EVAL):
        if not mode.training:
            return x, (_IDENTITY if mode.keep else None)
        return dropout.forward(x, rate=self.rate, generator=mode.generator(self), keep=mode.keep)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return (dout, {}) if ctx is _IDENTITY else dropout.backward(ctx, dout)

    def trace(self, graph, value: int) -> int:
        """A node in a training trace; the identity at inference (no node)."""
        return graph.add(self, [value]) if getattr(graph, "training", False) else value

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


register_kind(Kind("dropout", Dropout))         # a node only when traced for training
