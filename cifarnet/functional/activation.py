"""Element-wise activations: ReLU and GELU.

``relu.forward(x, keep=True) -> (max(x, 0), ctx)``; any shape. The gradient at exactly 0 is taken
as 0. NaN passes through (as in PyTorch), so bad numbers surface in the loss instead of vanishing.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from ..kernels.gelu_form import GELU_A, GELU_C
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


gelu = Op("gelu")



@gelu.reference
class GeluReference:
    """GELU in its tanh form, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (Hendrycks and
    Gimpel 2016; PyTorch's ``GELU(approximate="tanh")``). NumPy has no erf, and the tanh form is
    within 5e-4 of the erf form everywhere (``tests/test_airbench_layers.py`` measures it)."""

    @staticmethod
    def forward(x, *, keep: bool = True):
        xp = array_module(x)
        t = xp.tanh(GELU_C * (x + GELU_A * x * x * x))
        return 0.5 * x * (1 + t), ((x, t) if keep else None)

    @staticmethod
    def backward(saved, dout):
        x, t = saved
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * x * x)
        return dout * slope, {}


@gelu.implementation("numpy")
class GeluNumpy:
    """The reference's formulas rearranged for fewer passes over memory, in place:
    ``tanh(C x (1 + A x^2))`` forward, and the slope as ``0.5 (1 + t) (1 + C x (1 + 3 A x^2) (1 - t))``
    (``docs/performance.md`` has the times)."""

    @staticmethod
    def forward(x, *, keep: bool = True):
        t = np.multiply(x, x)
        t *= GELU_A * GELU_C
        t += GELU_C
        t *= x
        np.tanh(t, out=t)                       # tanh(C (x + A x^3))
        out = t + 1
        out *= x
        out *= 0.5
        return out, ((x, t) if keep else None)

    @staticmethod
    def backward(saved, dout):
        x, t = saved
        slope = np.multiply(x, x)
        slope *= 3 * GELU_A * GELU_C
        slope += GELU_C
        slope *= x                              # C x (1 + 3 A x^2)
        other = np.subtract(1, t)
        slope *= other
        slope += 1
        np.add(t, 1, out=other)
        slope *= other
        slope *= 0.5
        slope *= dout
        return slope, {}
