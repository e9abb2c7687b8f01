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

    # -- windows that tile the image: reduce along W, then along H, with long inner loops -------
    @staticmethod
    def _reduce_shifted(candidates, best, arg) -> None:
        """Fold ``candidates`` (equal-shape views, in window order) into ``best`` in place;
        ``arg`` (or None) records the index of the first maximum (strict ``>``: ties stay early)."""
        xp = array_module(best)
        for index, candidate in enumerate(candidates, start=1):
            if arg is not None:
                _mark_greater(arg, candidate > best, index)
            xp.maximum(best, candidate, out=best)

    def _forward_tiled(self, x):
        """W first, then H, so ties go to the first maximum in row-major order (as PyTorch).

        Each stage compares whole-array slices shifted by one pixel (along W) or one row (along
        H) instead of ``(..., C)``-strided views: NumPy's inner loops then run over thousands of
        values, not over C of them. Pixels that do not start a window are compared too (wasted but
        cheap) and dropped at the end.
        """
        xp = array_module(x)
        n, h, w, c = x.shape
        k = self.kernel_size
        ho, wo = h // k, w // k
        track = self.training
        flat = xp.ascontiguousarray(x).reshape(-1)
        span = flat.size - (k - 1) * c
        wmax = flat.copy()                                  # entry p: max of pixels p .. p+k-1 along W
        warg = xp.zeros(flat.size, dtype=xp.uint8) if track else None
        self._reduce_shifted([flat[j * c:j * c + span] for j in range(1, k)], wmax[:span],
                             None if warg is None else warg[:span])
        rows = wmax.reshape(n, ho, k, w * c)                # window rows of each output row
        hmax = rows[:, :, 0].copy()                         # N, Ho, W*C
        harg = xp.zeros(hmax.shape, dtype=xp.uint8) if track else None
        self._reduce_shifted([rows[:, :, a] for a in range(1, k)], hmax, harg)
        out = hmax.reshape(n, ho, wo, k, c)[:, :, :, 0, :].copy()              # N, Ho, Wo, C
        self._cache = ("tiled", x if not track else None, warg, harg)
        return out

    def _backward_tiled(self, dout, x, warg, harg):
        """Route ``dout`` to each window's first maximum: back along H, then along W.

        Works on the forward's full-width layouts with whole-array shifted slices, like the
        forward. ``warg`` ``(N*H*W*C,)`` holds, per pixel, which of the next k pixels along W held
        the maximum; ``harg`` ``(N, Ho, W*C)`` which window row did.
        """
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
        starts = xp.zeros((n, ho, wo, k, c), dtype=dout.dtype)   # dout at each window's first column
        starts[:, :, :, 0, :] = dout
        starts = starts.reshape(n, ho, wo * k * c)
        by_row = xp.empty((n, ho, k, wo * k * c), dtype=dout.dtype)
        for a in range(k):                                       # ... moved to the window row that won
            xp.multiply(starts, harg == a, out=by_row[:, :, a])
        flat = by_row.reshape(-1)
        span = flat.size - (k - 1) * c
        dx = xp.zeros(flat.size, dtype=dout.dtype)
        for b in range(k):                                       # ... and along W to the pixel that won
            dx[b * c:b * c + span] += flat[:span] * (warg[:span] == b)
        return dx.reshape(n, ho * k, wo * k, c)

    # -- general windows (overlapping, or not tiling the image) --------------------------------
    def _forward_strided(self, x):
        xp = array_module(x)
        ho, wo, _ = self.output_shape(x.shape[1:])
        views = self._offsets(x, ho, wo)
        out = views[0][2].copy()                                # N, Ho, Wo, C
        arg = xp.zeros(out.shape, dtype=xp.uint8)               # which offset holds the first maximum
        for index, (_, _, view) in enumerate(views[1:], start=1):
            _mark_greater(arg, view > out, index)               # strict: earlier offsets win ties
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


def _mark_greater(arg, greater, index: int) -> None:
    """``arg[greater] = index`` in place, for ``arg`` (uint8) holding only indices below ``index``.

    Written as ``arg = max(arg, greater * index)``: branch-free arithmetic, many times faster than
    ``putmask`` or ``where`` on the unpredictable masks of max pooling.
    """
    xp = array_module(arg)
    xp.maximum(arg, xp.multiply(greater.view(xp.uint8), index, dtype=xp.uint8), out=arg)


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
