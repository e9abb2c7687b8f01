"""Winograd F(4x4, 3x3): a 3x3 stride-1 correlation with 2.25 multiplies per output instead of 9.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). In one dimension,
four outputs of a 3-tap correlation ``y[i] = sum_a d[i + a] g[a]`` over six inputs are
``y = AT @ ((G @ g) * (BT @ d))``: six products instead of twelve (interpolation at 0, 1, -1, 2,
-2 and infinity). Nested over both axes, a 6x6 input tile gives a 4x4 output tile with 36
products instead of 144. Over channels, each of the 36 products becomes one matrix product:

    V[f] = (BT (x) BT) @ tiles        (36, T, C_in)      input tiles, transformed
    U[f] = (G (x) G) @ W              (36, C_in, C_out)  filters, transformed once per call
    M[f] = V[f] @ U[f]                (36, T, C_out)     36 products, 4x fewer multiply-adds
    out  = (AT (x) AT) @ M            (16, T, C_out)     scattered into 4x4 output tiles

``(x)`` is the Kronecker product; each transform is one matrix product with a 36-long inner
dimension over every tile and channel at once, or two products with a 6-long one (the tile's rows,
then its columns: ``BT d B``, a third of the multiply-adds in two passes over memory), which is
faster where a chunk's tiles stay in a core's cache through both passes (:data:`SEPARABLE_MAX_BYTES`)
and the thread computes alone: beside other threads of the process (:func:`cifarnet.threads.side_by_side`)
the extra calls cost more in interpreter-lock waits than the arithmetic they save. The batch is
worked through a few images at a time (about :data:`TILES_PER_CHUNK` tiles), so the tiles, their
transform and the 36 products' outputs stay in cache. Output sizes that are not a multiple of 4
are covered by whole tiles over extra zero padding, and cropped.

Accuracy: the transforms' coefficients (up to 8 and 1/24) add rounding; in float32 the result
differs from the direct correlation by about 1e-5 of the output's largest magnitude (docs/correctness.md;
``tests/test_winograd.py`` bounds it), in float64 by about 1e-15.

Shapes: ``x`` ``(N, H, W, C_in)``; filters ``(3, 3, C_in, C_out)``; padding ``(ph, pw)``, each
0 to 2; out ``(N, H + 2 ph - 2, W + 2 pw - 2, C_out)``.
"""
from __future__ import annotations

import numpy as np

from ..threads import side_by_side
from .windows import zero_border
from .workspace import scratch

BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], dtype=np.float64)          # (6, 6): input tile transform
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)                     # (6, 3): filter transform
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)         # (4, 6): output tile transform

TILE = 4                   # output pixels per tile side
TILES_PER_CHUNK = 128      # tiles transformed and multiplied at a time (docs/performance.md)
# A chunk's tiles of at most this many bytes per 6x6 position (T x C values) are transformed by
# rows, then columns (two products); larger ones by the Kronecker product in one (two passes over
# a chunk beyond the cache cost more than the multiply-adds they save: docs/performance.md). Wide
# layers take chunks of fewer tiles to fit, down to MIN_SEPARABLE_TILES.
SEPARABLE_MAX_BYTES = 16 << 10
MIN_SEPARABLE_TILES = 64

_INPUT = np.kron(BT, BT)   # (36, 36): tile (6 x 6, row-major) -> 36 transformed values
_OUTPUT = np.kron(AT, AT)  # (16, 36): 36 products -> output tile (4 x 4, row-major)
_FILTER = np.kron(G, G)    # (36, 9): filter (3 x 3, row-major) -> 36 transformed values


def transform_filters(W, workspace=None):
    """``(3, 3, C_in, C_out) -> (36, C_in, C_out)``: ``G W G^T`` per channel pair, in W's dtype
    (computed in float64; the float64 copy, product and result in ``workspace``'s scratch arrays if
    given: valid until the next call with that workspace)."""
    if W.shape[:2] != (3, 3):
        raise ValueError(f"Winograd F(4x4, 3x3) needs 3x3 filters, got {W.shape[:2]}")
    c_in, c_out = W.shape[2:]
    if W.dtype == np.float64:
        w64 = W.reshape(9, -1)
    else:                                                           # float32: one copy, in float64
        w64 = scratch(workspace, "winograd filters in float64", (9, c_in * c_out), np.float64)
        w64[...] = W.reshape(9, -1)
    u = np.matmul(_FILTER, w64, out=scratch(workspace, "winograd filters' product", (36, c_in * c_out), np.float64))
    if W.dtype == np.float64:                                       # one product, not a 6-index einsum
        return u.reshape(36, c_in, c_out)
    out = scratch(workspace, "winograd filters", (36, c_in, c_out), W.dtype)
    out.reshape(36, -1)[...] = u
    return out


def tiles_per_side(size: int) -> int:
    return -(-size // TILE)


def tiles_for(channels: int, itemsize: int, split: bool | None = None) -> int:
    """Tiles per chunk for ``channels`` (the wider side of a layer): :data:`TILES_PER_CHUNK`, or, when
    the transforms may be separable (``split`` not False, and None only on a thread computing
    alone), fewer (not under :data:`MIN_SEPARABLE_TILES`) so that they fit :data:`SEPARABLE_MAX_BYTES`."""
    if split is False or (split is None and side_by_side()):
        return TILES_PER_CHUNK
    fit = SEPARABLE_MAX_BYTES // max(1, channels * itemsize)
    return min(TILES_PER_CHUNK, fit) if fit >= MIN_SEPARABLE_TILES else TILES_PER_CHUNK


def separable(values: int, itemsize: int, forced: bool | None = None) -> bool:
    """Whether the transforms of chunks of up to ``values`` values per tile position (tiles x
    channels) run as two 1-D passes: ``forced`` if given, else when they fit in
    :data:`SEPARABLE_MAX_BYTES` and this thread computes alone (not :func:`cifarnet.threads.side_by_side`)."""
    if forced is not None:
        return bool(forced)
    return values * itemsize <= SEPARABLE_MAX_BYTES and not side_by_side()


class _Transform:
    """``kron = one_axis (x) one_axis`` (``(P*P, Q*Q)``; ``one_axis`` ``(P, Q)``; both given) applied to
    ``(Q*Q, R)`` tiles (tile positions row-major), for chunks of up to ``values`` values per
    position: in one product with ``kron``, or, if ``split``, by the tiles' rows and then their
    columns, through a buffer of ``P*Q*values`` (``workspace``'s scratch array ``name`` if given)."""

    def __init__(self, one_axis: np.ndarray, kron: np.ndarray, values: int, split: bool, dtype, name: str,
                 workspace=None):
        self.one_axis, self.kron = one_axis.astype(dtype), kron.astype(dtype)
        p, q = one_axis.shape
        self.half = scratch(workspace, name, (p * q * values,), dtype) if split else None

    def __call__(self, tiles, out) -> None:
        """``out`` ``(P*P, R)`` = ``kron @ tiles``."""
        if self.half is None:
            np.matmul(self.kron, tiles, out=out)
            return
        (p, q), r = self.one_axis.shape, tiles.shape[1]
        rows = self.half[:p * q * r].reshape(p, q * r)
        np.matmul(self.one_axis, tiles.reshape(q, q * r), out=rows)                 # over the rows
        np.matmul(self.one_axis, rows.reshape(p, q, r), out=out.reshape(p, p, r))   # over the columns


class _InputTiles:
    """The transformed input tiles of a chunk of images, in buffers reused for every chunk.

    ``transform(x[start:start + m])`` returns ``V`` ``(36, m*th*tw, C_in)``: each 6x6 tile (taken
    every 4 pixels from the images padded by ``(ph, pw)``, then zeros to whole tiles) times
    ``BT (x) BT`` (by rows, then columns, if ``split``). Valid until the next call. Its buffers are
    ``workspace``'s if given.
    """

    def __init__(self, images: int, size: tuple[int, int], padding: tuple[int, int], tiles: tuple[int, int],
                 channels: int, dtype, split: bool, workspace=None):
        (self.h, self.w), (self.ph, self.pw), (self.th, self.tw) = size, padding, tiles
        # one padded buffer for every chunk: zero borders written once, the interior overwritten
        self.x_pad = scratch(workspace, "winograd input", (images, TILE * self.th + 2, TILE * self.tw + 2, channels),
                             dtype, zeroed=workspace is None)
        if workspace is not None:
            zero_border(self.x_pad, padding, size)
        self.tiles = scratch(workspace, "winograd tiles", (36, images * self.th * self.tw * channels), dtype)
        self.freq = scratch(workspace, "winograd transformed tiles", (36, images * self.th * self.tw, channels), dtype)
        self.to_freq = _Transform(BT, _INPUT, images * self.th * self.tw * channels, split, dtype,
                                  "winograd half-transformed tiles", workspace)

    def transform(self, x):
        m, c = x.shape[0], x.shape[-1]
        t = m * self.th * self.tw
        self.x_pad[:m, self.ph:self.ph + self.h, self.pw:self.pw + self.w] = x
        s_n, s_h, s_w, s_c = self.x_pad.strides
        # tiles[a*6 + b, (n, i, j, c)] = x_pad[n, 4i + a, 4j + b, c]
        view = np.lib.stride_tricks.as_strided(
            self.x_pad, (6, 6, m, self.th, self.tw, c), (s_h, s_w, s_n, TILE * s_h, TILE * s_w, s_c))
        part = self.tiles[:, :t * c]
        part.reshape(6, 6, m, self.th, self.tw, c)[...] = view
        f = self.freq[:, :t]
        self.to_freq(part, f.reshape(36, -1))
        return f


def correlate_into(out, x, filters, padding: tuple[int, int], tiles_per_chunk: int | None = None,
                   workspace=None, add: bool = False, split: bool | None = None) -> None:
    """``out[n, i, j] = sum_{a, b, c} x_pad[n, i + a, j + b, c] * W[a, b, c]`` for 3x3 ``W``.

    Args:
        out: ``(N, Ho, Wo, C_out)``, written in place; ``Ho = H + 2 ph - 2``.
        x: ``(N, H, W, C_in)``, not padded.
        filters: :func:`transform_filters` of ``W``, in ``out``'s dtype.
        padding: zeros added on each side of each spatial axis, ``(ph, pw)``.
        tiles_per_chunk: tiles per chunk of images (default :func:`tiles_for` the wider side).
        workspace: where the chunk buffers live from call to call (:mod:`cifarnet.arrays.workspace`).
        add: add the correlation to what ``out`` holds instead of overwriting it.
        split: transform by rows, then columns (True) or by the Kronecker products (False); None:
            as :func:`separable` decides for the chunk's size.
    """
    n, h, w, c_in = x.shape
    ph, pw = padding
    ho, wo = h + 2 * ph - 2, w + 2 * pw - 2
    c_out = filters.shape[-1]
    if out.shape != (n, ho, wo, c_out):
        raise ValueError(f"out has shape {out.shape}, the correlation gives {(n, ho, wo, c_out)}")
    th, tw = tiles_per_side(ho), tiles_per_side(wo)
    per_image = th * tw
    dtype = out.dtype
    itemsize = np.dtype(dtype).itemsize
    images = max(1, min(n, (tiles_per_chunk or tiles_for(max(c_in, c_out), itemsize, split)) // per_image))
    inputs = _InputTiles(images, (h, w), (ph, pw), (th, tw), c_in, dtype,
                         separable(images * per_image * c_in, itemsize, split), workspace)
    outputs = images * per_image * c_out
    from_freq = _Transform(AT, _OUTPUT, outputs, separable(outputs, itemsize, split), dtype,
                           "winograd half-transformed products", workspace)
    prods = scratch(workspace, "winograd products", (36, images * per_image, c_out), dtype)
    spatial = scratch(workspace, "winograd output tiles", (16, images * per_image * c_out), dtype)
    for start in range(0, n, images):
        m = min(images, n - start)
        t = m * per_image
        f = inputs.transform(x[start:start + m])
        p = prods[:, :t]
        np.matmul(f, filters, out=p)
        s = spatial[:, :t * c_out]
        from_freq(p.reshape(36, -1), s)
        _write_tiles(out[start:start + m], s.reshape(TILE, TILE, m, th, tw, c_out), add)


def _write_tiles(o, s, add: bool) -> None:
    """``o[n, 4i + r, 4j + q] = s[r, q, n, i, j]`` (``+=`` if ``add``) for the output ``o`` ``(m, Ho,
    Wo, C)`` from the tiles ``s`` ``(4, 4, m, th, tw, C)``, cropped to ``o``: one strided copy when the
    tiles cover ``o`` exactly, else one per tile offset (16)."""
    m, ho, wo, c = o.shape
    th, tw = s.shape[3:5]
    if (ho, wo) == (TILE * th, TILE * tw) and o.flags.c_contiguous:
        target, source = o.reshape(m, th, TILE, tw, TILE, c), s.transpose(2, 3, 0, 4, 1, 5)
        if add:
            target += source
        else:
            target[...] = source
        return
    for r in range(TILE):                         # output rows r, r+4, ... and columns q, q+4, ...
        rows = len(range(r, ho, TILE))
        for q in range(TILE):
            part = s[r, q, :, :rows, :len(range(q, wo, TILE))]
            if add:
                o[:, r::TILE, q::TILE] += part
            else:
                o[:, r::TILE, q::TILE] = part





def weight_gradient(x, dout, padding: tuple[int, int], out=None, tiles_per_chunk: int | None = None,
                    workspace=None, split: bool | None = None):
    """The filters' gradient of :func:`correlate_into`: ``dW[a, b, c, o] = sum_{n, i, j}
    x_pad[n, i + a, j + b, c] * dout[n, i, j, o]``, by the same transforms.

    The forward is linear in the transformed filters ``U = (G (x) G) W``, so with the output tiles'
    gradient taken back through the output transform, ``D[f] = (AT (x) AT)^T dout_tile`` (36 values
    from 16), ``dU[f] = sum over tiles V[f]^T D[f]`` (36 products ``(C_in, T) @ (T, C_out)``, the
    long inner dimension running over tiles) and ``dW = (G (x) G)^T dU``: 4x fewer multiply-adds
    than the direct ``cols^T @ dout``.

    Args:
        x: ``(N, H, W, C_in)``, the correlation's input, not padded.
        dout: ``(N, Ho, Wo, C_out)``, the gradient of its output.
        out: ``(3, 3, C_in, C_out)`` to write into, or None.
        workspace: where the chunk buffers live from call to call (:mod:`cifarnet.arrays.workspace`).
        split: the transforms' form, as in :func:`correlate_into`.
    Returns:
        ``(3, 3, C_in, C_out)`` in ``dout``'s dtype.
    """
    n, h, w, c_in = x.shape
    ph, pw = padding
    _, ho, wo, c_out = dout.shape
    if (ho, wo) != (h + 2 * ph - 2, w + 2 * pw - 2):
        raise ValueError(f"dout has {ho}x{wo} pixels, the correlation of {h}x{w} with padding {padding} gives "
                         f"{h + 2 * ph - 2}x{w + 2 * pw - 2}")
    th, tw = tiles_per_side(ho), tiles_per_side(wo)
    per_image = th * tw
    dtype = dout.dtype
    itemsize = np.dtype(dtype).itemsize
    images = max(1, min(n, (tiles_per_chunk or tiles_for(max(c_in, c_out), itemsize, split)) // per_image))
    inputs = _InputTiles(images, (h, w), (ph, pw), (th, tw), c_in, dtype,
                         separable(images * per_image * c_in, itemsize, split), workspace)
    outputs = images * per_image * c_out
    back = _Transform(AT.T, _OUTPUT.T, outputs, separable(outputs, itemsize, split), dtype,
                      "winograd half-transformed dout", workspace)
    whole_tiles = (ho, wo) == (TILE * th, TILE * tw)       # dout's tiles read straight from it: no padded copy
    d_pad = None if whole_tiles else scratch(workspace, "winograd dout in whole tiles",
                                             (images, TILE * th, TILE * tw, c_out), dtype, zeroed=workspace is None)
    if workspace is not None and d_pad is not None:
        zero_border(d_pad, (0, 0), (ho, wo))
    d_tiles = scratch(workspace, "winograd dout tiles", (16, images * per_image * c_out), dtype)
    d_freq = scratch(workspace, "winograd dout transformed", (36, images * per_image, c_out), dtype)
    total = scratch(workspace, "winograd dW total", (36, c_in, c_out), dtype)
    total.fill(0)
    partial = scratch(workspace, "winograd dW partial", (36, c_in, c_out), dtype)
    for start in range(0, n, images):
        m = min(images, n - start)
        t = m * per_image
        f = inputs.transform(x[start:start + m])
        if whole_tiles:
            source = dout[start:start + m]
        else:
            source = d_pad[:m]
            source[:, :ho, :wo] = dout[start:start + m]    # the crop's rows and columns stay zero
        dt = d_tiles[:, :t * c_out]
        dt.reshape(TILE, TILE, m, th, tw, c_out)[...] = (
            source.reshape(m, th, TILE, tw, TILE, c_out).transpose(2, 4, 0, 1, 3, 5))
        df = d_freq[:, :t]
        back(dt, df.reshape(36, -1))
        np.matmul(f.transpose(0, 2, 1), df, out=partial)
        total += partial
    if out is None:
        out = np.empty((3, 3, c_in, c_out), dtype=dtype)
    np.matmul(_FILTER.T.astype(dtype), total.reshape(36, -1), out=out.reshape(9, -1))
    return out
