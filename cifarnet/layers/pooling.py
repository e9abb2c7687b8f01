"""Max pooling and global average pooling over NHWC images."""
from __future__ import annotations

from ..backend import array_module
from ..ops.windows import output_size, windows
from .base import Layer, Shape


class MaxPool2d(Layer):
    """Maximum over each ``k x k`` window, moved by ``stride`` (default ``k``), no padding.

    Shapes: x ``(N, H, W, C)`` -> out ``(N, Ho, Wo, C)``, ``Ho = (H - k) // stride + 1``.
    Where a window holds several equal maxima the gradient goes to the first (row-major).
    """

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        stride = kernel_size if stride is None else stride
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"MaxPool2d needs kernel_size and stride >= 1, got {kernel_size}, {stride}")
        self.kernel_size, self.stride = kernel_size, stride

    def output_shape(self, in_shape: Shape) -> Shape:
        h, w, c = in_shape
        k, s = self.kernel_size, self.stride
        return (output_size(h, k, s), output_size(w, k, s), c)

    def forward(self, x):
        xp = array_module(x)
        k = self.kernel_size
        win = windows(x, k, k, self.stride)                     # N, Ho, Wo, k, k, C (view)
        n, ho, wo, _, _, c = win.shape
        flat = win.reshape(n, ho, wo, k * k, c)                 # copy
        arg = flat.argmax(axis=3)                               # N, Ho, Wo, C
        out = xp.take_along_axis(flat, arg[:, :, :, None, :], axis=3)[:, :, :, 0, :]
        self._cache = (arg, x.shape)
        return out

    def backward(self, dout):
        xp = array_module(dout)
        arg, x_shape = self._take_cache("_cache")
        k, s = self.kernel_size, self.stride
        _, ho, wo, _ = dout.shape
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        h_span, w_span = s * (ho - 1) + 1, s * (wo - 1) + 1
        zero = xp.zeros((), dtype=dout.dtype)
        for a in range(k):
            for b in range(k):
                routed = xp.where(arg == a * k + b, dout, zero)  # N, Ho, Wo, C
                dx[:, a:a + h_span:s, b:b + w_span:s, :] += routed
        return dx

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class GlobalAvgPool(Layer):
    """Mean over the spatial axes: ``(N, H, W, C) -> (N, C)``."""

    def output_shape(self, in_shape: Shape) -> Shape:
        return (in_shape[-1],)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPool expects (N, H, W, C) input, got {x.shape}")
        self._shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, dout):
        xp = array_module(dout)
        n, h, w, c = self._take_cache("_shape")
        return xp.broadcast_to((dout / (h * w))[:, None, None, :], (n, h, w, c)).copy()
