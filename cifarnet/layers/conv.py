"""2-D convolution over NHWC images as im2col + one matrix product."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ops.windows import add_windows, output_size, pad_hw, unpad_hw, windows
from .base import Layer, Shape
from .init import he_normal


class Conv2d(Layer):
    """Convolution (cross-correlation, as in every framework) with zero padding.

    Shapes:
        x:   ``(N, H, W, C_in)``
        W:   ``(KH, KW, C_in, C_out)``
        b:   ``(C_out,)`` (absent with ``bias=False``)
        out: ``(N, Ho, Wo, C_out)`` with ``Ho = (H + 2*padding - KH) // stride + 1``

    Forward gathers every window into a column matrix ``(N*Ho*Wo, KH*KW*C_in)`` and multiplies
    it by ``W`` viewed as ``(KH*KW*C_in, C_out)``. Only the padded input is cached; backward
    regathers the columns, which costs one copy and saves holding a column matrix per layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int = 1, padding: int = 0, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if min(in_channels, out_channels, kh, kw, stride) < 1 or padding < 0:
            raise ValueError(
                f"Conv2d needs positive channels, kernel and stride and padding >= 0; got "
                f"in={in_channels}, out={out_channels}, kernel={(kh, kw)}, stride={stride}, padding={padding}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        rng = rng if rng is not None else np.random.default_rng()
        self.params["W"] = he_normal(rng, (kh, kw, in_channels, out_channels), kh * kw * in_channels, dtype)
        if bias:
            self.params["b"] = np.zeros(out_channels, dtype=dtype)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, out_channels: int, **options) -> "Conv2d":
        if len(in_shape) != 3:
            raise ValueError(f"conv expects (H, W, C) inputs, got shape {in_shape}")
        return cls(in_shape[-1], out_channels, rng=rng, dtype=dtype, **options)

    def output_shape(self, in_shape: Shape) -> Shape:
        h, w, _ = in_shape
        kh, kw = self.kernel_size
        return (output_size(h, kh, self.stride, self.padding),
                output_size(w, kw, self.stride, self.padding), self.out_channels)

    def _columns(self, x_pad):
        kh, kw = self.kernel_size
        win = windows(x_pad, kh, kw, self.stride)            # N, Ho, Wo, KH, KW, C_in (view)
        n, ho, wo = win.shape[:3]
        return win.reshape(n * ho * wo, -1), (n, ho, wo)     # copy: N*Ho*Wo, KH*KW*C_in

    def forward(self, x):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, H, W, {self.in_channels}) input, got {x.shape}")
        x_pad = pad_hw(x, self.padding)
        cols, (n, ho, wo) = self._columns(x_pad)
        w_mat = self.params["W"].reshape(-1, self.out_channels)   # KH*KW*C_in, C_out
        out = cols @ w_mat                                         # N*Ho*Wo, C_out
        if "b" in self.params:
            out += self.params["b"]
        self._x_pad = x_pad
        return out.reshape(n, ho, wo, self.out_channels)

    def backward(self, dout):
        x_pad = self._take_cache("_x_pad")
        cols, (n, ho, wo) = self._columns(x_pad)
        dout_mat = dout.reshape(-1, self.out_channels)             # N*Ho*Wo, C_out
        w_mat = self.params["W"].reshape(-1, self.out_channels)
        self.grads["W"] = (cols.T @ dout_mat).reshape(self.params["W"].shape)
        if "b" in self.params:
            self.grads["b"] = dout_mat.sum(axis=0)
        kh, kw = self.kernel_size
        dcols = (dout_mat @ w_mat.T).reshape(n, ho, wo, kh, kw, self.in_channels)
        dx_pad = add_windows(dcols, x_pad.shape, self.stride)
        return unpad_hw(dx_pad, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'b' in self.params}")
