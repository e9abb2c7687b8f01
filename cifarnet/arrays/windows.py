"""Sliding windows over NHWC images: the gather behind im2col and the scatter behind col2im.

A convolution looks at every ``KH x KW`` window of a padded image (:func:`padded_chunks` pads a
chunk of images at a time). The gather is a strided view copied once into a column matrix; the
scatter adds window-shaped gradients back into an image with ``KH*KW`` vectorised strided
additions, one per kernel offset (no per-pixel Python loops).
"""
from __future__ import annotations

from ..backend import array_module
from ..errors import InvalidValue
from .workspace import scratch


def output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """Number of window positions along one axis (floor mode, as PyTorch)."""
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise InvalidValue(
            f"a kernel of {kernel} with stride {stride} and padding {padding} does not fit "
            f"an input of size {size}"
        )
    return out


def padded_chunks(x, padding: tuple[int, int], images: int, workspace=None, name: str = "pad"):
    """Zero-pad ``x`` a chunk of ``images`` images at a time: yield ``(start, stop, x_pad)``.

    ``x_pad`` is ``(stop - start, H + 2*ph, W + 2*pw, C)`` for ``padding = (ph, pw)``; it lives in
    one buffer reused for every chunk (its border is zeroed once), so it is valid only until the
    next chunk is taken. Without padding the chunks are views of ``x``. Working a chunk at a time
    keeps each chunk's padded copy and column matrix small enough to stay in cache. With a
    ``workspace`` (:mod:`cifarnet.arrays.workspace`) the buffer is its scratch array ``name``, its
    border zeroed here (once per call: only the interior is written for each chunk).
    """
    xp = array_module(x)
    n, h, w, c = x.shape
    ph, pw = padding
    images = max(1, min(images, n))
    buf = None
    if ph or pw:
        buf = scratch(workspace, name, (images, h + 2 * ph, w + 2 * pw, c), x.dtype, xp, zeroed=workspace is None)
        if workspace is not None:
            zero_border(buf, (ph, pw), (h, w))
    for start in range(0, n, images):
        stop = min(n, start + images)
        if buf is None:
            yield start, stop, x[start:stop]
            continue
        part = buf[:stop - start]
        part[:, ph:ph + h, pw:pw + w, :] = x[start:stop]
        yield start, stop, part


def zero_border(buf, start: tuple[int, int], size: tuple[int, int]) -> None:
    """Zero ``buf`` ``(N, H, W, C)`` outside the window of ``size`` pixels from ``start`` (axes 1, 2)."""
    (top, left), (h, w) = start, size
    buf[:, :top] = 0
    buf[:, top + h:] = 0
    buf[:, top:top + h, :left] = 0
    buf[:, top:top + h, left + w:] = 0


def unpad_hw(x, padding: int):
    """The interior of an image zero-padded by ``padding`` on both spatial axes (a view)."""
    if padding == 0:
        return x
    return x[:, padding:-padding, padding:-padding, :]


def patches(x, ph: int, pw: int, step):
    """Strided view of ``ph x pw`` patches taken every ``step`` pixels: ``(N, Hb, Wb, PH, PW, C)``.

    ``step`` is one stride for both axes or a pair ``(down, across)``. With ``ph x pw`` the kernel
    and ``step`` the stride these are a convolution's windows (``view[n, i, j, a, b, c] ==
    x[n, i*step + a, j*step + b, c]``); with patches larger than the kernel they serve the blocked
    convolution (several output pixels per patch).
    """
    xp = array_module(x)
    sh, sw = (step, step) if isinstance(step, int) else step
    n, h, w, c = x.shape
    hb, wb = (h - ph) // sh + 1, (w - pw) // sw + 1
    s_n, s_h, s_w, s_c = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, hb, wb, ph, pw, c), strides=(s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))


def gather_patches(x, ph: int, pw: int, step, out=None):
    """Copy every patch into a column matrix ``(N*Hb*Wb, PH*PW*C)`` (im2col, one copy), into the
    first rows of ``out`` if given (a buffer of at least that many rows); ``step`` as :func:`patches`."""
    view = patches(x, ph, pw, step)
    n, hb, wb = view.shape[:3]
    if out is None:
        return view.reshape(n * hb * wb, -1), (n, hb, wb)
    cols = out[:n * hb * wb]
    cols.reshape(view.shape)[...] = view
    return cols, (n, hb, wb)


def add_windows(dwin, image_shape: tuple[int, int, int, int], stride: int, out=None):
    """Adjoint of :func:`patches` with patch = kernel: sum window gradients back into an image.

    Args:
        dwin: ``(N, Ho, Wo, KH, KW, C)`` gradient with respect to each window entry.
        image_shape: ``(N, H, W, C)`` of the image the windows were taken from.
        out: an array of ``image_shape`` to write into (zeroed here), or None.
    Returns:
        ``(N, H, W, C)`` gradient with respect to the image.
    """
    xp = array_module(dwin)
    _, ho, wo, kh, kw, _ = dwin.shape
    if out is None:
        dx = xp.zeros(image_shape, dtype=dwin.dtype)
    else:
        dx = out
        dx.fill(0)
    h_span, w_span = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    for a in range(kh):
        for b in range(kw):
            dx[:, a:a + h_span:stride, b:b + w_span:stride, :] += dwin[:, :, :, a, b, :]
    return dx
