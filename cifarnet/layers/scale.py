"""A constant factor: ``out = x * factor`` (airbench's logit scale, 1/9)."""
from __future__ import annotations

import numpy as np

from .base import EVAL, Layer, Mode
from .kinds import Kind, register_kind


class Scale(Layer):
    """``out = x * factor`` with a fixed ``factor`` (not trained); any shape."""

    kind = "scale"

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x, mode: Mode = EVAL):
        return x * x.dtype.type(self.factor), (True if mode.keep else None)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return dout * dout.dtype.type(self.factor), {}

    def extra_repr(self) -> str:
        return f"{self.factor}"


def onnx_scale(g, node, args, out, ranks) -> int:
    g.node("Mul", [args[0], g.const(f"n{node.output}_factor", np.array(node.layer.factor, np.float32))], out)
    return ranks[0]


register_kind(Kind("scale", Scale, onnx=onnx_scale))
