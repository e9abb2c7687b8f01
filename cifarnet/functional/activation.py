"""Element-wise activations.

``relu.forward(x, keep=True) -> (max(x, 0), ctx)``; any shape. The gradient at exactly 0 is taken
as 0. NaN passes through (as in PyTorch), so bad numbers surface in the loss instead of vanishing.
"""
from __future__ import annotations

from ..backend import array_module
from .dispatch import Op

relu = Op("relu")


@relu.reference
class ReluReference:
    @staticmethod
    def forward(x, *, keep: bool = True):
        xp = array_module(x)
        return xp.maximum(x, xp.zeros((), dtype=x.dtype)), (x > 0 if keep else None)

    @staticmethod
    def backward(mask, dout):
        return dout * mask, {}
