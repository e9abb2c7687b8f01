"""Fully connected layer: owns ``W`` and ``b``; the math is :data:`cifarnet.functional.linear`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import to_numpy
from ..errors import InvalidValue
from ..functional import linear
from .base import EVAL, Layer, Mode, Shape, deliver
from .init import draw_weights
from .kinds import Kind, apply_activation, emit_activation, folded_weights, register_kind


class Linear(Layer):
    """``out = x @ W + b``.

    Shapes:
        x: ``(N, D_in)``;  W: ``(D_in, D_out)``;  b: ``(D_out,)``;  out: ``(N, D_out)``
    """

    kind = "linear"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32, init: str = "he_normal"):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise InvalidValue(f"Linear needs positive sizes, got {in_features} -> {out_features}")
        self.in_features, self.out_features = in_features, out_features
        rng = rng if rng is not None else np.random.default_rng()
        self.params.update(draw_weights(init, rng, (in_features, out_features), in_features,
                                        out_features if bias else None, dtype))

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, out_features: int, **options) -> Linear:
        if len(in_shape) != 1:
            raise InvalidValue(f"linear expects flat (D,) inputs, got shape {in_shape}; add a flatten "
                             "or global_avg_pool layer before it")
        return cls(in_shape[0], out_features, rng=rng, dtype=dtype, **options)

    def output_shape(self, in_shape: Shape) -> Shape:
        return (self.out_features,)

    def forward(self, x, mode: Mode = EVAL):
        return linear.forward(x, self.params["W"], self.params.get("b"), keep=mode.keep, workspace=mode.workspace)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        dx, grads = linear.backward(ctx, dout, need_dx=need_dx, grads_out=into)
        return dx, deliver(grads, into, self.kind)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={'b' in self.params}"


def infer_linear(node, args):
    """A linear node: its batch norm folded in, then the activation it took."""
    W, b = folded_weights(node)
    activation = node.attrs.get("activation")
    out = linear.forward(args[0], W, b, relu=activation == "relu", keep=False)[0]
    return out if activation in (None, "relu") else apply_activation(activation, out)


def onnx_linear(g, node, args, out, ranks) -> int:
    key = f"n{node.output}"
    W, b = (None if v is None else to_numpy(v) for v in folded_weights(node))
    inputs = [args[0], g.const(f"{key}_W", W)] + ([g.const(f"{key}_b", b)] if b is not None else [])
    emit_activation(g, node.attrs.get("activation"), g.node("Gemm", inputs), out, 2)
    return 2


register_kind(Kind("linear", Linear, weighted=True, role="folds_norm", infer=infer_linear, onnx=onnx_linear,
                   output_free=True))
