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
        # training keeps the mask for backward; eval keeps only a reference to x (one pass less)
        self._cache = x > 0 if self.training else x
        return xp.maximum(x, xp.zeros((), dtype=x.dtype))

    def backward(self, dout):
        saved = self._take_cache("_cache")
        return dout * (saved if saved.dtype == bool else saved > 0)
