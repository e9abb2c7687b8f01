"""Element-wise activations: ReLU and GELU (tanh form)."""
from __future__ import annotations

import numpy as np

from ..functional import gelu, relu
from ..functional.activation import GELU_A, GELU_C
from .base import EVAL, Layer, Mode
from .kinds import Kind, register_kind


class ReLU(Layer):
    """``out = max(x, 0)``; any shape (:data:`cifarnet.functional.relu`)."""

    kind = "relu"

    def forward(self, x, mode: Mode = EVAL):
        return relu.forward(x, keep=mode.keep)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return relu.backward(ctx, dout)


def onnx_relu(g, node, args, out, ranks) -> int:
    g.node("Relu", [args[0]], out)
    return ranks[0]


class GELU(Layer):
    """``out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, GELU's tanh form; any shape
    (:data:`cifarnet.functional.gelu`)."""

    kind = "gelu"

    def forward(self, x, mode: Mode = EVAL):
        return gelu.forward(x, keep=mode.keep, workspace=mode.workspace)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return gelu.backward(ctx, dout)


def onnx_gelu(g, node, args, out, ranks) -> int:
    """The tanh form from elementary ops (ONNX's Gelu needs opset 20)."""
    x = args[0]
    cube = g.node("Mul", [x, g.node("Mul", [x, x])])
    inner = g.node("Add", [x, g.node("Mul", [cube, g.const(f"gelu_a_{out}", _scalar(GELU_A))])])
    t = g.node("Tanh", [g.node("Mul", [inner, g.const(f"gelu_c_{out}", _scalar(GELU_C))])])
    half = g.node("Mul", [x, g.const(f"gelu_half_{out}", _scalar(0.5))])
    g.node("Mul", [half, g.node("Add", [t, g.const(f"gelu_one_{out}", _scalar(1.0))])], out)
    return ranks[0]


def _scalar(value: float):
    return np.array(value, dtype=np.float32)


register_kind(Kind("relu", ReLU, role="activation", infer=lambda node, args: relu.forward(args[0], keep=False)[0],
                   onnx=onnx_relu, train_forward=lambda node, args, mode: relu.forward(args[0], keep=mode.keep),
                   train_backward=lambda node, ctx, dout, need_dx, into, reuse=False: (
                       [relu.backward(ctx, dout)[0]], {})))
register_kind(Kind("gelu", GELU, role="activation", infer=lambda node, args: gelu.forward(args[0], keep=False)[0],
                   onnx=onnx_gelu))
