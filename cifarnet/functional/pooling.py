"""Max pooling and global average pooling over NHWC images.

``max_pool2d.forward(x, kernel=, stride=, keep=True) -> (out, ctx)``: the maximum over each
``k x k`` window moved by ``stride``, no padding; ``(N, H, W, C) -> (N, Ho, Wo, C)`` with
``Ho = (H - k) // stride + 1``. Where a window holds several equal maxima the gradient goes to the
first in row-major order (as PyTorch). ``backward(ctx, dout) -> (dx, {})``.

``global_avg_pool.forward(x, keep=True)``: the mean over H and W, ``(N, H, W, C) -> (N, C)``.
"""
from __future__ import annotations

import numpy as np

from ..arrays.windows import output_size
from ..arrays.workspace import pooled, scratch, take
from ..backend import array_module
from .dispatch import Op

max_pool2d = Op("max_pool2d")
global_avg_pool = Op("global_avg_pool")


def _check(x) -> None:
    if x.ndim != 4:
        raise ValueError(f"max pooling expects (N, H, W, C) input, got {x.shape}")


def _offsets(x, kernel: int, stride: int, ho: int, wo: int):
    """The k*k strided views ``x[:, a::s, b::s]`` (each ``(N, Ho, Wo, C)``), row-major order."""
    h_span, w_span = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    return [x[:, a:a + h_span:stride, b:b + w_span:stride, :] for a in range(kernel) for b in range(kernel)]


def _mark_greater(arg, greater, index: int) -> None:
    """``arg[greater] = index`` in place, for ``arg`` (uint8) holding only indices below ``index``.

    Written as ``arg = max(arg, greater * index)``: branch-free arithmetic, many times faster than
    ``putmask`` or ``where`` on the unpredictable masks of max pooling.
    """
    xp = array_module(arg)
    xp.maximum(arg, xp.multiply(greater.view(xp.uint8), index, dtype=xp.uint8), out=arg)


@max_pool2d.reference
class MaxPoolReference:
    """One strided view per window offset; the index of each window's first maximum is kept."""

    @staticmethod
    def forward(x, *, kernel: int = 2, stride: int | None = None, keep: bool = True):
        _check(x)
        xp = array_module(x)
        stride = kernel if stride is None else stride
        ho, wo = output_size(x.shape[1], kernel, stride), output_size(x.shape[2], kernel, stride)
        views = _offsets(x, kernel, stride, ho, wo)
        out = views[0].copy()                                   # N, Ho, Wo, C
        arg = xp.zeros(out.shape, dtype=xp.uint8) if keep else None   # which offset holds the first maximum
        for index, view in enumerate(views[1:], start=1):
            if arg is not None:
                _mark_greater(arg, view > out, index)           # strict: earlier offsets win ties
            xp.maximum(out, view, out=out)
        return out, ((x.shape, arg, kernel, stride) if keep else None)

    @staticmethod
    def backward(saved, dout):
        x_shape, arg, kernel, stride = saved
        xp = array_module(dout)
        ho, wo = dout.shape[1:3]
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        zero = xp.zeros((), dtype=dout.dtype)
        for index, target in enumerate(_offsets(dx, kernel, stride, ho, wo)):
            target += xp.where(arg == index, dout, zero)
        return dx, {}


WIDE = 32      # channels from which windows are taken as (..., C) views (contiguous runs of C values)


@max_pool2d.implementation("numpy")
class MaxPoolNumpy:
    """Two paths for windows that do not overlap (kernel == stride):

    * ``wide`` (C >= 32, any size, the last rows and columns that fill no window dropped:
      airbench's 31 -> 15 -> 7 -> 3): the image seen as ``(N, Ho, k, Wo, k, C)``, the maximum of
      its k*k window views in k*k - 1 passes, no index kept; backward finds each window's maximum
      again by comparing the saved input with the output, in one pass when no window holds two
      (else window offset by offset, ties to the first, as the reference), writing every covered
      pixel once.
    * ``tiled`` (fewer channels, sizes divisible; SimpleCNN's 2x2 on 8 channels): reduce along W,
      then along H, comparing whole-array slices shifted by one pixel (along W) or one row (along
      H) instead of ``(..., C)``-strided views, so NumPy's inner loops run over thousands of
      values, not over C of them. Pixels that do not start a window are compared too (wasted but
      cheap) and dropped at the end. For k = 2 each step is two passes (the maximum, and which of
      the two held it, written straight into the result). Backward routes ``dout`` to the window row
      that won, then to the pixel in it, on ``(N, Ho, Wo, C)`` views written once into the gradient
      (for k = 2 a product and a difference per step: ``d * won`` and ``d - d * won``).

    Other windows take the reference path. Times per path and shape: ``docs/performance.md``.
    With a ``workspace`` (:mod:`cifarnet.arrays.workspace`) the outputs and input gradients are
    pooled arrays, the tiled path's indices (kept for the backward) its own arrays and its
    intermediate arrays scratch arrays: the same every step."""

    takes_workspace = True

    @staticmethod
    def forward(x, *, kernel: int = 2, stride: int | None = None, keep: bool = True, chunk: int | None = None,
                workspace=None):
        """``chunk``: images per chunk of the wide path's backward (default: about
        :data:`WIDE_CHUNK_BYTES` of input; tests set it)."""
        _check(x)
        stride = kernel if stride is None else stride
        n, h, w, c = x.shape
        if stride == kernel and c >= WIDE:
            return _forward_wide(x, kernel, keep, chunk, workspace)
        if not (stride == kernel and h % kernel == 0 and w % kernel == 0):
            out, saved = MaxPoolReference.forward(x, kernel=kernel, stride=stride, keep=keep)
            return out, (None if saved is None else ("strided", saved))
        k = kernel
        ho, wo = h // k, w // k
        flat = np.ascontiguousarray(x).reshape(-1)
        span = flat.size - (k - 1) * c                     # the last k-1 pixels start no window along W
        wmax = scratch(workspace, "pool row maxima", flat.shape, flat.dtype)   # p: max of pixels p .. p+k-1 along W
        wmax[span:] = 0
        warg = take(workspace, "warg", flat.shape, np.uint8, zeroed=True) if keep else None   # [span:] stays 0
        _fold_shifted([flat[j * c:j * c + span] for j in range(k)], wmax[:span], None if warg is None else warg[:span])
        window_rows = wmax.reshape(n, ho, k, w * c)         # window rows of each output row
        hmax = scratch(workspace, "pool window maxima", (n, ho, w * c), x.dtype)   # N, Ho, W*C
        harg = take(workspace, "harg", hmax.shape, np.uint8) if keep else None
        _fold_shifted([window_rows[:, :, a] for a in range(k)], hmax, harg)
        out = pooled(workspace, (n, ho, wo, c), x.dtype)                  # N, Ho, Wo, C
        np.copyto(out, hmax.reshape(n, ho, wo, k, c)[:, :, :, 0, :])
        return out, (("tiled", (warg, harg, k, workspace)) if keep else None)

    @staticmethod
    def backward(saved, dout):
        """Route ``dout`` to each window's first maximum: back along H, then along W, on the
        forward's full-width layouts. ``warg`` ``(N*H*W*C,)`` holds, per pixel, which of the next k
        pixels along W held the maximum; ``harg`` ``(N, Ho, W*C)`` which window row did."""
        kind, inner = saved
        if kind == "strided":
            return MaxPoolReference.backward(inner, dout)
        if kind == "wide":
            return _backward_wide(inner, dout)
        warg, harg, k, workspace = inner
        n, ho, wo, c = dout.shape
        dx = pooled(workspace, (n, ho, k, wo, k, c), dout.dtype)
        row_won = harg.reshape(n, ho, wo, k, c)[:, :, :, 0, :]                 # at each window's first column
        column_won = warg.reshape(n, ho, k, wo, k, c)[:, :, :, :, 0, :]      # per window row, likewise
        by_rows = [scratch(workspace, f"pool gradient of window row {a}", dout.shape, dout.dtype) for a in range(k)]
        for a, by_row in enumerate(_route(dout, row_won, by_rows)):      # to the window row that won
            _route(by_row, column_won[:, :, a], [dx[:, :, a, :, b, :] for b in range(k)])   # to the pixel in it
        return dx.reshape(n, ho * k, wo * k, c), {}


def _route(d, won, outs):
    """``outs[i] = d * (won == i)``: ``d`` where index ``i`` won, 0 elsewhere; for two outputs one
    product and one difference (``d - d * won``, exact since each product is ``d`` or 0)."""
    if len(outs) == 2:
        np.multiply(d, won, out=outs[1])
        np.subtract(d, outs[1], out=outs[0])
        return outs
    for i, out in enumerate(outs):
        np.multiply(d, won == i, out=out)
    return outs


def _windows(x, k: int, ho: int, wo: int):
    """``x``'s covered part as ``(N, Ho, k, Wo, k, C)`` (a view)."""
    n, c = x.shape[0], x.shape[3]
    return x[:, :ho * k, :wo * k].reshape(n, ho, k, wo, k, c)


def _forward_wide(x, k: int, keep: bool, chunk: int | None = None, workspace=None):
    n, h, w, c = x.shape
    ho, wo = h // k, w // k
    v = _windows(x, k, ho, wo)
    out = pooled(workspace, (n, ho, wo, c), x.dtype)                 # N, Ho, Wo, C
    np.copyto(out, v[:, :, 0, :, 0])
    for a in range(k):
        for b in range(k):
            if a or b:
                np.maximum(out, v[:, :, a, :, b], out=out)
    return out, (("wide", (x, out, k, chunk, workspace)) if keep else None)


WIDE_CHUNK_BYTES = 1 << 20     # the wide backward goes through the batch about this much input at a time


def _backward_wide(saved, dout):
    """A few images at a time (about :data:`WIDE_CHUNK_BYTES` of input), so that the comparison's
    mask and the routed gradient are written while the chunk is in cache."""
    x, out, k, chunk, workspace = saved
    n = x.shape[0]
    ho, wo = out.shape[1:3]
    dx = pooled(workspace, x.shape, dout.dtype)
    dx[:, ho * k:] = 0                                                    # rows and columns in no window
    dx[:, :ho * k, wo * k:] = 0
    images = chunk or max(1, WIDE_CHUNK_BYTES // max(1, x[0].nbytes))
    for start in range(0, n, images):
        part = slice(start, start + images)
        _route_wide(x[part], out[part], dout[part], dx[part], k, workspace)
    return dx, {}


def _route_wide(x, out, dout, dx, k: int, workspace=None) -> None:
    """``dout`` to each window's first maximum, into ``dx``'s covered part (images of one chunk); the
    chunk's temporaries ``workspace``'s scratch if given, all three asked for whether or not the
    chunk has ties, so that a step's requests do not depend on the data (a step that asked for
    others than the recorded step would leave the workspace's plan and be planned anew)."""
    ho, wo = out.shape[1:3]
    v, dv = _windows(x, k, ho, wo), _windows(dx, k, ho, wo)
    hit = scratch(workspace, "window maxima", v.shape, np.bool_)
    left = scratch(workspace, "not yet routed", dout.shape, dout.dtype)
    is_max = scratch(workspace, "window maximum", out.shape, np.bool_)
    np.equal(v, out[:, :, None, :, None, :], out=hit)                     # every window's maxima, in one pass
    if np.count_nonzero(hit) == out.size:                                 # one per window: no ties to break
        np.multiply(dout[:, :, None, :, None, :], hit, out=dv)
        return
    np.copyto(left, dout)                                                 # not yet routed to a maximum
    for a in range(k):
        for b in range(k):
            np.multiply(left, np.equal(v[:, :, a, :, b], out, out=is_max), out=dv[:, :, a, :, b])
            if a < k - 1 or b < k - 1:
                left -= dv[:, :, a, :, b]                                 # taken: ties go to the first


def _fold_shifted(candidates, best, arg) -> None:
    """Write the element-wise maximum of ``candidates`` (equal-shape views, in window order) into
    ``best`` and, into ``arg`` (uint8, or None), the index of the first candidate holding it (strict
    ``>``: ties stay early). The first two are compared straight into ``best`` and ``arg`` (no copy,
    no zeroing: for k = 2 the whole fold is two passes)."""
    first, rest = candidates[0], candidates[1:]
    if not rest:
        np.copyto(best, first)
        if arg is not None:
            arg[...] = 0
        return
    if arg is not None:
        np.greater(rest[0], first, out=arg.view(np.bool_))
    np.maximum(first, rest[0], out=best)
    for index, candidate in enumerate(rest[1:], start=2):
        if arg is not None:
            _mark_greater(arg, candidate > best, index)
        np.maximum(best, candidate, out=best)


@global_avg_pool.reference
class GlobalAvgPoolReference:
    @staticmethod
    def forward(x, *, keep: bool = True):
        if x.ndim != 4:
            raise ValueError(f"global average pooling expects (N, H, W, C) input, got {x.shape}")
        return x.mean(axis=(1, 2)), (x.shape if keep else None)

    @staticmethod
    def backward(saved, dout):
        xp = array_module(dout)
        n, h, w, c = saved
        return xp.broadcast_to((dout / (h * w))[:, None, None, :], (n, h, w, c)).copy(), {}


@global_avg_pool.implementation("numpy")
class GlobalAvgPoolNumpy:
    """The reference's formulas; with a ``workspace`` (:mod:`cifarnet.arrays.workspace`) the output
    and the input gradient are written into its pooled arrays, the same every step."""

    takes_workspace = True

    @staticmethod
    def forward(x, *, keep: bool = True, workspace=None):
        if x.ndim != 4:
            raise ValueError(f"global average pooling expects (N, H, W, C) input, got {x.shape}")
        out = np.mean(x, axis=(1, 2), out=pooled(workspace, (x.shape[0], x.shape[3]), x.dtype))
        return out, ((x.shape, workspace) if keep else None)

    @staticmethod
    def backward(saved, dout):
        (n, h, w, c), workspace = saved
        dx = pooled(workspace, (n, h, w, c), dout.dtype)
        np.copyto(dx, (dout / (h * w))[:, None, None, :])
        return dx, {}
