"""Inverted dropout: zero each value with probability ``rate``, scale the rest by ``1/(1-rate)``.

``forward(x, rate=, generator=, keep=True) -> (out, ctx)``; identity for ``rate == 0``. The mask
is drawn on the host from ``generator`` (a NumPy ``Generator``), so a seed gives the same masks on
every backend. ``backward(ctx, dout) -> (dx, {})``. Shapes: any, e.g. ``(N, D)``.
"""
from __future__ import annotations

import numpy as np

from ..backend import backend_of
from .dispatch import Op

dropout = Op("dropout")


@dropout.reference
class DropoutReference:
    @staticmethod
    def forward(x, *, rate: float, generator: np.random.Generator, keep: bool = True):
        if rate == 0.0:
            return x, (None if not keep else 1)
        kept = generator.random(x.shape) >= rate                # host, same shape as x
        mask = backend_of(x).asarray(kept.astype(x.dtype) / np.asarray(1.0 - rate, x.dtype))
        return x * mask, (mask if keep else None)

    @staticmethod
    def backward(mask, dout):
        return dout * mask, {}
