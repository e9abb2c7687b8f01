"""Element-wise activations."""
from __future__ import annotations

from ..backend import array_module
from .base import Layer


class ReLU(Layer):
    """``out = max(x, 0)``; any shape. The gradient at exactly 0 is taken as 0.

    NaN passes through (as in PyTorch), so bad numbers surface in the loss instead of vanishing.
    """

    def forward(self, x):
        xp = array_module(x)
        self._mask = x > 0
        return xp.maximum(x, xp.zeros((), dtype=x.dtype))

    def backward(self, dout):
        mask = self._take_cache("_mask")
        return dout * mask
