"""Max pooling and global average pooling over NHWC images."""
from __future__ import annotations

from ..backend import array_module
from ..ops.windows import output_size
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

    def _offsets(self, x, ho: int, wo: int):
        """The k*k strided views ``x[:, a::s, b::s]`` (each ``(N, Ho, Wo, C)``), row-major order."""
        k, s = self.kernel_size, self.stride
        h_span, w_span = s * (ho - 1) + 1, s * (wo - 1) + 1
        return [(a, b, x[:, a:a + h_span:s, b:b + w_span:s, :]) for a in range(k) for b in range(k)]

    def forward(self, x):
        xp = array_module(x)
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d expects (N, H, W, C) input, got {x.shape}")
        ho, wo, _ = self.output_shape(x.shape[1:])
        views = self._offsets(x, ho, wo)
        out = views[0][2].copy()                                # N, Ho, Wo, C
        if not self.training:                                   # no backward expected: maxima only
            for _, _, view in views[1:]:
                xp.maximum(out, view, out=out)
            self._cache = (x.shape, None, x, out)
            return out
        arg = xp.zeros(out.shape, dtype=xp.uint8)               # which offset holds the first maximum
        for index, (_, _, view) in enumerate(views[1:], start=1):
            greater = view > out                                # strict: earlier offsets win ties
            xp.maximum(out, view, out=out)
            xp.putmask(arg, greater, index)
        self._cache = (x.shape, arg, None, None)
        return out

    def backward(self, dout):
        xp = array_module(dout)
        x_shape, arg, x, out = self._take_cache("_cache")
        n, ho, wo, c = dout.shape
        if arg is None:                                         # eval-mode forward: find the maxima now
            arg = xp.zeros(out.shape, dtype=xp.uint8)
            found = self._offsets(x, ho, wo)[0][2] == out
            for index, (_, _, view) in enumerate(self._offsets(x, ho, wo)[1:], start=1):
                hit = (view == out) & ~found
                xp.putmask(arg, hit, index)
                found |= hit
        k, s = self.kernel_size, self.stride
        if k == s and x_shape[1] == ho * k and x_shape[2] == wo * k:
            # windows tile the image exactly: write each offset's share straight into place
            dx = xp.empty((n, ho, k, wo, k, c), dtype=dout.dtype)
            for index in range(k * k):
                a, b = divmod(index, k)
                xp.multiply(arg == index, dout, out=dx[:, :, a, :, b, :])
            return dx.reshape(x_shape)
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        zero = xp.zeros((), dtype=dout.dtype)
        for index, (_, _, target) in enumerate(self._offsets(dx, ho, wo)):
            target += xp.where(arg == index, dout, zero)
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
