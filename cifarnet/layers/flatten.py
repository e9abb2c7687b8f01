"""Flatten everything but the batch axis."""
from __future__ import annotations

import math

from .base import EVAL, Layer, Mode, Shape
from .kinds import Kind, register_kind


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``; for NHWC images the order is H, W, C."""

    kind = "flatten"

    def output_shape(self, in_shape: Shape) -> Shape:
        return (math.prod(in_shape),)

    def forward(self, x, mode: Mode = EVAL):
        return x.reshape(x.shape[0], -1), (x.shape if mode.keep else None)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return dout.reshape(ctx), {}


def onnx_flatten(g, node, args, out, ranks) -> int:
    """cifarnet flattens in (H, W, C) order, ONNX's input is NCHW: transpose first."""
    if ranks[0] == 4:
        g.node("Flatten", [g.node("Transpose", [args[0]], perm=[0, 2, 3, 1])], out, axis=1)
    else:
        g.node("Flatten", [args[0]], out, axis=1)
    return 2


register_kind(Kind("flatten", Flatten, onnx=onnx_flatten))
