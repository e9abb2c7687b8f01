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

    def _tiles(self, shape) -> bool:
        """Whether the windows tile the image exactly (kernel == stride, sizes divisible)."""
        k = self.kernel_size
        return self.stride == k and shape[1] % k == 0 and shape[2] % k == 0

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"MaxPool2d expects (N, H, W, C) input, got {x.shape}")
        if self._tiles(x.shape):
            return self._forward_tiled(x)
        return self._forward_strided(x)

    def backward(self, dout):
        cache = self._take_cache("_cache")
        if cache[0] == "tiled":
            return self._backward_tiled(dout, *cache[1:])
        return self._backward_strided(dout, *cache[1:])

    # -- windows that tile the image: reduce along W, then along H, on reshaped views ---------
    @staticmethod
    def _reduce(groups, track: bool):
        """Maximum over axis -2 of ``groups`` (``(..., k, C)``) and, if asked, the first arg-max."""
        xp = array_module(groups)
        out = groups[..., 0, :].copy()
        arg = xp.zeros(out.shape, dtype=xp.uint8) if track else None
        for j in range(1, groups.shape[-2]):
            candidate = groups[..., j, :]
            if track:
                xp.putmask(arg, candidate > out, j)             # strict: earlier positions win ties
            xp.maximum(out, candidate, out=out)
        return out, arg

    def _forward_tiled(self, x):
        n, h, w, c = x.shape
        k = self.kernel_size
        ho, wo = h // k, w // k
        track = self.training
        # along W first, then H: ties go to the first maximum in row-major order, as np.argmax
        wmax, warg = self._reduce(x.reshape(n, h, wo, k, c), track)             # N, H, Wo, C
        out, harg = self._reduce(wmax.reshape(n, ho, k, wo, c).transpose(0, 1, 3, 2, 4), track)
        self._cache = ("tiled", x if not track else None, warg, harg)
        return out                                                              # N, Ho, Wo, C

    def _backward_tiled(self, dout, x, warg, harg):
        xp = array_module(dout)
        if warg is None:                          # forward ran in eval mode: find the arg-maxima now
            self.training, training = True, self.training
            try:
                self._forward_tiled(x)
            finally:
                self.training = training
            _, _, warg, harg = self._take_cache("_cache")
        n, ho, wo, c = dout.shape
        k = self.kernel_size
        warg = warg.reshape(n, ho, k, wo, c)
        dx = xp.empty((n, ho, k, wo, k, c), dtype=dout.dtype)
        for a in range(k):
            row = harg == a                                                     # N, Ho, Wo, C
            for b in range(k):
                xp.multiply(row & (warg[:, :, a] == b), dout, out=dx[:, :, a, :, b, :])
        return dx.reshape(n, ho * k, wo * k, c)

    # -- general windows (overlapping, or not tiling the image) --------------------------------
    def _forward_strided(self, x):
        xp = array_module(x)
        ho, wo, _ = self.output_shape(x.shape[1:])
        views = self._offsets(x, ho, wo)
        out = views[0][2].copy()                                # N, Ho, Wo, C
        arg = xp.zeros(out.shape, dtype=xp.uint8)               # which offset holds the first maximum
        for index, (_, _, view) in enumerate(views[1:], start=1):
            xp.putmask(arg, view > out, index)                  # strict: earlier offsets win ties
            xp.maximum(out, view, out=out)
        self._cache = ("strided", x.shape, arg)
        return out

    def _backward_strided(self, dout, x_shape, arg):
        xp = array_module(dout)
        ho, wo = dout.shape[1:3]
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
