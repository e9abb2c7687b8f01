"""Flatten everything but the batch axis."""
from __future__ import annotations

import math

from .base import EVAL, Layer, Mode, Shape


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``; for NHWC images the order is H, W, C."""

    kind = "flatten"

    def output_shape(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)

    def forward(self, x, mode: Mode = EVAL):
        return x.reshape(x.shape[0], -1), (x.shape if mode.keep else None)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return dout.reshape(ctx), {}
