"""Flatten everything but the batch axis."""
from __future__ import annotations

import math

from .base import Layer, Shape


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``; for NHWC images the order is H, W, C."""

    def output_shape(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._take_cache("_shape"))
