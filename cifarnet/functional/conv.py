"""2-D convolution (cross-correlation, as in every framework) over NHWC images, zero padding.

Shapes:
    x:   ``(N, H, W, C_in)``;  W: ``(KH, KW, C_in, C_out)``;  b: ``(C_out,)`` or None
    out: ``(N, Ho, Wo, C_out)`` with ``Ho = (H + 2*padding - KH) // stride + 1``

``forward(x, W, b, stride=, padding=, residual=None, relu=False, keep=True) -> (out, ctx)``
computes ``relu?(correlate(pad(x), W) + b + residual)``; the residual and ReLU serve inference
(with ``keep=False``), where they are applied while each output is in cache. ``backward(ctx, dout,
need_dx=True) -> (dx, {"W": dW, "b": db})``; with ``need_dx=False`` (a network's first layer) the
input gradient, the most expensive product, is skipped and ``dx`` is None; ``grads_out`` (name ->
array) receives the parameter gradients in place (:mod:`cifarnet.functional.destination`);
``dx_add`` (an ``(N, H, W, C_in)`` array, e.g. the gradient a residual block's shortcut already
gave its input) receives the input gradient added to what it holds, and is returned as ``dx``:
the same sums as adding afterwards, without a separate pass (nor, on a GPU, a launch).
"""
from __future__ import annotations

import numpy as np

from ..arrays import winograd as wino
from ..arrays.blocks import as_block, block_weights, fold_block_gradient, to_blocks, write_from_blocks
from ..arrays.rows import channel_sums, rows, tile
from ..arrays.windows import add_windows, gather_patches, padded_chunks, unpad_hw
from ..arrays.workspace import pooled, scratch
from ..backend import array_module
from ..threads import side_by_side
from .destination import product_into, sum_into, target
from .dispatch import Op

conv2d = Op("conv2d")

# Blocked products pay off for narrow layers only (docs/performance.md, "Measurements behind the
# defaults"; python -m cifarnet.bench.layouts measures the limit).
BLOCK_MAX_CHANNELS = 16
# From this many channels up, a block is two neighbours in a row (1x2: the product writes the output
# in place, a third fewer wasted multiplications than 2x2); below it, 2x2 (docs/performance.md,
# "Blocks of two neighbours in a row")
ROW_BLOCK_MIN_CHANNELS = 8
CHUNK_BYTES = 2 << 20     # the batch is worked through in chunks whose column matrix is about this size
# 3x3 stride-1 layers at least this wide on both sides correlate by Winograd F(4x4, 3x3)
# (docs/performance.md, "Winograd"; narrower ones run as fast or faster by im2col); on a thread
# computing alone from WINOGRAD_MIN_CHANNELS_ALONE: there its many smaller calls cost no waits for
# the interpreter lock (docs/performance.md, "Winograd at 16 channels on a thread computing alone")
WINOGRAD_MIN_CHANNELS = 24
WINOGRAD_MIN_CHANNELS_ALONE = 16


def _inference_only(keep: bool, residual, relu: bool) -> None:
    if keep and (residual is not None or relu):
        raise ValueError("conv2d: residual and relu are for inference (keep=False); backward does not undo them")


@conv2d.reference
class Conv2dReference:
    """im2col of the whole padded batch, one matrix product; backward scatters the column gradient."""

    @staticmethod
    def forward(x, W, b=None, *, stride: int = 1, padding: int = 0, residual=None, relu: bool = False,
                keep: bool = True):
        _inference_only(keep, residual, relu)
        xp = array_module(x)
        kh, kw, _, c_out = W.shape
        p = padding
        x_pad = xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))               # N, H+2p, W+2p, C_in
        cols, (n, ho, wo) = gather_patches(x_pad, kh, kw, stride)         # N*Ho*Wo, KH*KW*C_in
        out = (cols @ W.reshape(-1, c_out)).reshape(n, ho, wo, c_out)
        if b is not None:
            out = out + b
        if residual is not None:
            out = out + residual
        if relu:
            out = xp.maximum(out, out.dtype.type(0))
        return out, ((cols, x_pad.shape, W, b is not None, stride, padding) if keep else None)

    @staticmethod
    def backward(saved, dout, need_dx: bool = True, grads_out=None, dx_add=None):
        cols, pad_shape, W, has_bias, stride, padding = saved
        kh, kw, c_in, c_out = W.shape
        n, ho, wo, _ = dout.shape
        d = dout.reshape(-1, c_out)                                       # N*Ho*Wo, C_out
        grads = {"W": product_into(cols.T, d, target(grads_out, "W"), W.shape)}
        if has_bias:
            grads["b"] = sum_into(d, 0, target(grads_out, "b"))
        if not need_dx:
            return None, grads
        dcols = (d @ W.reshape(-1, c_out).T).reshape(n, ho, wo, kh, kw, c_in)
        dx = unpad_hw(add_windows(dcols, pad_shape, stride), padding)
        if dx_add is None:
            return dx, grads
        dx_add += dx
        return dx_add, grads


def weight_rows(W, block):
    """The right-hand matrix of the product: ``W`` as ``(KH*KW*C_in, C_out)``, or blocked."""
    return W.reshape(-1, W.shape[-1]) if as_block(block) == (1, 1) else block_weights(W, block)


def correlate_into(out, x_pad, w_rows, patch: tuple, block, workspace=None,
                   images: int | None = None, add: bool = False) -> None:
    """``out[n, i, j] = sum_{a, b, c} x_pad[n, i*stride + a, j*stride + b, c] * W[a, b, c]``.

    Args:
        out: ``(N, Ho, Wo, C_out)``, C-contiguous, written in place.
        x_pad: ``(N, Hp, Wp, C_in)``, already padded.
        w_rows: :func:`weight_rows` of ``W`` ``(KH, KW, C_in, C_out)`` for ``block``.
        patch: ``(PH, PW, step)``: ``(KH, KW, stride)``, or ``(BH+KH-1, BW+KW-1, (BH, BW))`` for a
            block of ``BH x BW`` output pixels per patch (stride 1 only; :func:`patch_for`).
        block: ``(BH, BW)`` (:mod:`cifarnet.arrays.blocks`).
        workspace: where the column matrix (and a blocked product) are kept, sized for chunks of
            ``images`` images (default N; :mod:`cifarnet.arrays.workspace`), or None.
        add: add the correlation to what ``out`` holds instead of overwriting it.
    """
    ph, pw, step = patch
    sh, sw = (step, step) if isinstance(step, int) else step
    per_image = ((x_pad.shape[1] - ph) // sh + 1) * ((x_pad.shape[2] - pw) // sw + 1)
    capacity = (images or x_pad.shape[0]) * per_image
    buffer = None if workspace is None else workspace.scratch("cols", (capacity, w_rows.shape[0]), x_pad.dtype)
    cols, _ = gather_patches(x_pad, *patch, out=buffer)       # N*Ho*Wo/(BH*BW), PH*PW*C_in
    if as_block(block)[0] == 1 and not add:                   # the product's rows are the output's own
        np.matmul(cols, w_rows, out=out.reshape(cols.shape[0], -1))
    else:
        product = scratch(workspace, "blocked product", (capacity, w_rows.shape[1]), out.dtype)[:cols.shape[0]]
        write_from_blocks(out, np.matmul(cols, w_rows, out=product), block, add=add)


def choose_block(channels: int, kernel: tuple[int, int], stride: int, ho: int, wo: int,
                 block=None) -> tuple[int, int]:
    """Output pixels per patch, ``(BH, BW)`` (see :mod:`cifarnet.arrays.blocks`): ``block`` (a pair,
    or an int for a square) if given and it tiles the output; else, for stride-1 layers of up to
    :data:`BLOCK_MAX_CHANNELS` input channels and a kernel wider than 1x1, ``(1, 2)`` (two
    neighbours in a row) from :data:`ROW_BLOCK_MIN_CHANNELS` channels up, ``(2, 2)`` below; else
    (or when the block does not tile the output) ``(1, 1)``."""
    if stride != 1:
        return 1, 1
    if block is None:
        if channels > BLOCK_MAX_CHANNELS or kernel == (1, 1):
            return 1, 1
        block = (1, 2) if channels >= ROW_BLOCK_MIN_CHANNELS else (2, 2)
    bh, bw = as_block(block)
    return (bh, bw) if ho % bh == 0 and wo % bw == 0 else (1, 1)


def use_winograd(c_in: int, c_out: int, kernel: tuple[int, int], stride: int, padding: int,
                 winograd: bool | None = None) -> bool:
    """Whether a correlation runs by Winograd F(4x4, 3x3) (:mod:`cifarnet.arrays.winograd`): only
    3x3 kernels at stride 1 with padding 0 to 2; then ``winograd`` if given, else when both
    channel counts are at least :data:`WINOGRAD_MIN_CHANNELS`, or
    :data:`WINOGRAD_MIN_CHANNELS_ALONE` on a thread computing alone (not
    :func:`cifarnet.threads.side_by_side`)."""
    if kernel != (3, 3) or stride != 1 or not 0 <= padding <= 2:
        return False
    if winograd is not None:
        return bool(winograd)
    return min(c_in, c_out) >= (WINOGRAD_MIN_CHANNELS if side_by_side() else WINOGRAD_MIN_CHANNELS_ALONE)


def flipped_kernel(W, dtype=None, workspace=None):
    """``(KH, KW, C_in, C_out) -> (KH, KW, C_out, C_in)``, rotated 180 degrees: the kernel whose
    stride-1 correlation with ``dout`` is the input gradient; in ``dtype`` (default W's), a scratch
    array of ``workspace``'s if given."""
    kh, kw, c_in, c_out = W.shape
    out = scratch(workspace, "flipped kernel", (kh, kw, c_out, c_in), dtype or W.dtype)
    out[...] = W[::-1, ::-1].transpose(0, 1, 3, 2)
    return out


def patch_for(kernel: tuple[int, int], stride: int, block) -> tuple:
    """``(PH, PW, step)`` of :func:`correlate_into` for ``block`` output pixels per patch."""
    kh, kw = kernel
    bh, bw = as_block(block)
    return (kh, kw, stride) if (bh, bw) == (1, 1) else (bh + kh - 1, bw + kw - 1, (bh, bw))


def col_bytes(channels: int, ho: int, wo: int, patch: tuple, block, itemsize: int) -> int:
    """Bytes of one image's column matrix."""
    ph, pw, _ = patch
    bh, bw = as_block(block)
    return (ho // bh) * (wo // bw) * ph * pw * channels * itemsize


def images_per_chunk(n: int, bytes_per_image: int, chunk: int | None = None) -> int:
    """``chunk`` if given; else enough images for about ``CHUNK_BYTES`` of columns (the whole
    batch when its columns fit in twice that)."""
    if chunk is not None:
        return chunk
    if n * bytes_per_image <= 2 * CHUNK_BYTES:
        return n
    return max(1, CHUNK_BYTES // max(1, bytes_per_image))


@conv2d.implementation("numpy")
class Conv2dNumpy:
    """Tuned for the CPU: Winograd F(4x4, 3x3) for wide 3x3 layers (forward, input gradient and,
    from outputs of one 4x4 tile up, weight gradient), else cache-sized chunks of images and
    blocked im2col for narrow layers; the input gradient of a stride-1 convolution as a
    correlation with the flipped kernel.

    The batch is worked through a chunk of images at a time (about ``CHUNK_BYTES`` of columns
    each), so each chunk's padded input, column matrix and output stay in cache, and the bias,
    residual and ReLU are applied to a chunk right after its product. Narrow stride-1 layers
    gather one patch per block of output pixels (:mod:`cifarnet.arrays.blocks`; two neighbours in
    a row, or 2x2 below :data:`ROW_BLOCK_MIN_CHANNELS` channels: :func:`choose_block`). Only the
    input is kept for backward, which regathers the columns chunk by chunk: one copy more, one
    column matrix per layer less. ``block`` and ``chunk`` force an im2col layout, ``winograd``
    the choice of Winograd (:func:`use_winograd`; tests use them). With a ``workspace``
    (:mod:`cifarnet.arrays.workspace`: a training plan's node) the output and the input gradient
    are pooled arrays and every chunk buffer a scratch array, the same ones every step; it is kept
    for the backward.

    ``defer`` (backward, a list; without a workspace, with ``grads_out`` and the input gradient
    wanted): the input gradient is computed now and the weight gradient appended to ``defer`` as
    a task that writes it into ``grads_out``'s array when called (which the caller must do before
    reading it): a thread of a split batch runs it while waiting for the other parts
    (:func:`cifarnet.parallel.offer_work`). The task reads the input and ``dout``, which must not
    change until it has run. Without a workspace each call's arrays are its own.
    """

    takes_workspace = True
    defers_weight_gradient = True

    @staticmethod
    def forward(x, W, b=None, *, stride: int = 1, padding: int = 0, residual=None, relu: bool = False,
                keep: bool = True, block: int | None = None, chunk: int | None = None,
                winograd: bool | None = None, workspace=None):
        _inference_only(keep, residual, relu)
        kh, kw, c_in, c_out = W.shape
        n, h, w, _ = x.shape
        p = padding
        ho, wo = (h + 2 * p - kh) // stride + 1, (w + 2 * p - kw) // stride + 1
        out = pooled(workspace, (n, ho, wo, c_out), np.result_type(x, W))
        bias_row = None if b is None else tile(b.astype(out.dtype, copy=False), wo * c_out)
        if residual is not None:
            residual = np.ascontiguousarray(residual)

        def finish(start: int, stop: int) -> None:                # bias, residual, ReLU on a chunk
            r = rows(out[start:stop])                                # chunk rows, Wo*C_out
            if bias_row is not None:
                r += bias_row
            if residual is not None:
                r += rows(residual[start:stop])
            if relu:
                np.maximum(r, r.dtype.type(0), out=r)

        blk = choose_block(c_in, (kh, kw), stride, ho, wo, block)
        if use_winograd(c_in, c_out, (kh, kw), stride, p, winograd):
            filters = wino.transform_filters(W.astype(out.dtype, copy=False), workspace)
            wino.correlate_into(out, x.astype(out.dtype, copy=False), filters, (p, p), workspace=workspace)
            finish(0, n)
        else:
            w_rows = weight_rows(W, blk)
            patch = patch_for((kh, kw), stride, blk)
            per_chunk = images_per_chunk(n, col_bytes(c_in, ho, wo, patch, blk, out.itemsize), chunk)
            for start, stop, x_pad in padded_chunks(x, (p, p), per_chunk, workspace):
                correlate_into(out[start:stop], x_pad, w_rows, patch, blk, workspace, per_chunk)
                finish(start, stop)                             # while the chunk is in cache
        saved = (x, W, b is not None, stride, padding, blk, block, chunk, winograd, workspace) if keep else None
        return out, saved

    @staticmethod
    def backward(saved, dout, need_dx: bool = True, grads_out=None, dx_add=None, defer=None):
        x, W, has_bias, stride, p, blk, block, chunk, winograd, workspace = saved
        kh, kw, c_in, c_out = W.shape
        ho, wo = dout.shape[1:3]
        # the input gradient of a stride-1 convolution is a full correlation of dout with the
        # flipped kernel, its channel axes swapped (padding kh - 1 - p)
        dx_winograd = need_dx and use_winograd(c_out, c_in, (kh, kw), stride, kh - 1 - p, winograd)
        # the weight gradient sums over tiles: at outputs under one tile wide the padding wastes more than it saves
        dw_winograd = use_winograd(c_in, c_out, (kh, kw), stride, p, winograd) and min(ho, wo) >= wino.TILE
        add = need_dx and dx_add is not None
        if add and (dx_add.shape != x.shape or dx_add.dtype != dout.dtype or not dx_add.flags.c_contiguous):
            raise ValueError(f"conv2d: dx_add must be a C-contiguous {dout.dtype} array of the input's shape "
                             f"{x.shape}, got {dx_add.dtype} {dx_add.shape}")
        dx = (dx_add if add else pooled(workspace, x.shape, dout.dtype)) if need_dx else None
        dW = target(grads_out, "W")
        dx_im2col = dx if need_dx and not dx_winograd else None
        if defer is not None and dW is not None and need_dx and workspace is None:
            if dx_im2col is not None:                   # the input gradient now, the weight gradient later
                _backward_im2col(x, W, dout, stride, p, blk, block, chunk, dx_im2col, dW, want_dw=False, add=add)
            if dw_winograd:
                defer.append(lambda: wino.weight_gradient(x.astype(dout.dtype, copy=False), dout, (p, p), out=dW))
            else:
                defer.append(lambda: _backward_im2col(x, W, dout, stride, p, blk, block, chunk, None, dW))
            grads = {"W": dW}
        elif dw_winograd:
            grads = {"W": wino.weight_gradient(x.astype(dout.dtype, copy=False), dout, (p, p), out=dW,
                                               workspace=workspace)}
            if dx_im2col is not None:
                _backward_im2col(x, W, dout, stride, p, blk, block, chunk, dx_im2col, dW, want_dw=False,
                                 workspace=workspace, add=add)
        else:
            grads = {"W": _backward_im2col(x, W, dout, stride, p, blk, block, chunk, dx_im2col, dW, want_dw=True,
                                           workspace=workspace, add=add)}
        if dx_winograd:
            filters = wino.transform_filters(flipped_kernel(W, dx.dtype, workspace), workspace)
            wino.correlate_into(dx, dout, filters, (kh - 1 - p, kw - 1 - p), workspace=workspace, add=add)
        if has_bias:
            grads["b"] = channel_sums(rows(np.ascontiguousarray(dout)), c_out, out=target(grads_out, "b"))
        return dx, grads


def _backward_im2col(x, W, dout, stride: int, p: int, blk: tuple[int, int], block, chunk, dx, dW,
                     want_dw: bool = True,
                     workspace=None, add: bool = False):
    """The im2col backward, a chunk of images at a time: the input gradient into ``dx`` (unless
    None; added to what it holds if ``add``) and, if ``want_dw``, the weight gradient, returned
    (into ``dW`` when given); its chunk buffers from ``workspace`` if given."""
    kh, kw, c_in, c_out = W.shape
    n, ho, wo, _ = dout.shape
    h, w = x.shape[1:3]
    patch = patch_for((kh, kw), stride, blk)
    # stride 1: the input gradient as a correlation with the flipped kernel; other strides scatter
    # the column gradient
    flipped = dx is not None and stride == 1 and p <= kh - 1 and p <= kw - 1
    per_image = col_bytes(c_in, ho, wo, patch, blk, dout.itemsize)
    if flipped:                                # a stride-1 correlation with C_out input channels
        dx_block = choose_block(c_out, (kh, kw), 1, h, w, block)
        dx_patch = patch_for((kh, kw), 1, dx_block)
        w_flip = weight_rows(flipped_kernel(W), dx_block)
        per_image = max(per_image, col_bytes(c_out, h, w, dx_patch, dx_block, dout.itemsize))
    per_chunk = images_per_chunk(n, per_image, chunk)
    d_chunks = padded_chunks(dout, (kh - 1 - p, kw - 1 - p) if flipped else (0, 0), per_chunk, workspace, "dout pad")
    rows_per_image = (ho // blk[0]) * (wo // blk[1])
    k_rows = patch[0] * patch[1] * c_in
    dw_rows = None                 # the weight gradient as rows (in dW's memory when it is given, unblocked)
    for (start, stop, x_pad), (_, _, d_part) in zip(padded_chunks(x, (p, p), per_chunk, workspace), d_chunks,
                                                    strict=True):
        m = stop - start
        if want_dw:
            buffer = scratch(workspace, "cols", (per_chunk * rows_per_image, k_rows), x.dtype)
            cols, _ = gather_patches(x_pad, *patch, out=buffer)   # rows, PH*PW*C_in
            by_block = None if blk[0] == 1 else scratch(      # blocks one pixel high are views of dout
                workspace, "blocks", (per_chunk * rows_per_image, blk[0] * blk[1] * c_out), dout.dtype)
            blocks = to_blocks(dout[start:stop], blk, out=None if by_block is None else by_block[:m * rows_per_image])
            if dw_rows is None:            # a new array when returned as the gradient (no dW to write into)
                into = (dW.reshape(k_rows, -1) if dW is not None else None) if blk == (1, 1) else scratch(
                    workspace, "dW rows", (k_rows, blocks.shape[1]), dout.dtype)
                dw_rows = np.matmul(cols.T, blocks, out=into)
            else:
                dw_rows += np.matmul(cols.T, blocks, out=scratch(workspace, "dW part", dw_rows.shape, dw_rows.dtype))
            del cols
        if dx is None:
            continue
        if flipped:
            correlate_into(dx[start:stop], d_part, w_flip, dx_patch, dx_block, workspace, per_chunk, add=add)
        else:
            dcols = scratch(workspace, "dcols", (per_chunk * ho * wo, kh * kw * c_in), dout.dtype)[:m * ho * wo]
            np.matmul(d_part.reshape(-1, c_out), W.reshape(-1, c_out).T, out=dcols)
            image = scratch(workspace, "dx image", (per_chunk,) + x_pad.shape[1:], dout.dtype)[:m]
            add_windows(dcols.reshape(m, ho, wo, kh, kw, -1), x_pad.shape, stride, out=image)
            if add:
                dx[start:stop] += unpad_hw(image, p)
            else:
                dx[start:stop] = unpad_hw(image, p)
    if not want_dw:
        return None
    if blk == (1, 1):
        return dw_rows.reshape(W.shape) if dW is None else dW
    return fold_block_gradient(dw_rows, (kh, kw), c_in, blk, out=dW)
