"""Element-wise activations."""
from __future__ import annotations

from ..functional import relu
from .base import EVAL, Layer, Mode


class ReLU(Layer):
    """``out = max(x, 0)``; any shape (:data:`cifarnet.functional.relu`)."""

    kind = "relu"

    def forward(self, x, mode: Mode = EVAL):
        return relu.forward(x, keep=mode.keep)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return relu.backward(ctx, dout)
