"""Fully connected layer."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_module
from .base import Layer, Shape
from .init import he_normal


class Linear(Layer):
    """``out = x @ W + b``.

    Shapes:
        x: ``(N, D_in)``;  W: ``(D_in, D_out)``;  b: ``(D_out,)``;  out: ``(N, D_out)``
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear needs positive sizes, got {in_features} -> {out_features}")
        self.in_features, self.out_features = in_features, out_features
        rng = rng if rng is not None else np.random.default_rng()
        self.params["W"] = he_normal(rng, (in_features, out_features), in_features, dtype)
        if bias:
            self.params["b"] = np.zeros(out_features, dtype=dtype)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, out_features: int, **options) -> "Linear":
        if len(in_shape) != 1:
            raise ValueError(f"linear expects flat (D,) inputs, got shape {in_shape}; add a flatten "
                             "or global_avg_pool layer before it")
        return cls(in_shape[0], out_features, rng=rng, dtype=dtype, **options)

    def output_shape(self, in_shape: Shape) -> Shape:
        return (self.out_features,)

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear expects (N, {self.in_features}) input, got {x.shape}")
        self._x = x
        out = x @ self.params["W"]
        if "b" in self.params:
            out += self.params["b"]
        return out

    def backward(self, dout):
        x = self._take_cache("_x")
        self.grads["W"] = x.T @ dout
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T

    def infer_fused(self, x, scale, shift, relu: bool = False):
        """``relu?(forward(x) * scale + shift)`` with the scale folded into ``W`` (inference only)."""
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Linear expects (N, {self.in_features}) input, got {x.shape}")
        xp = array_module(x)
        out = x @ (self.params["W"] * scale)
        out += shift + self.params["b"] * scale if "b" in self.params else shift
        return xp.maximum(out, out.dtype.type(0), out=out) if relu else out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={'b' in self.params}"
