"""2-D convolution over NHWC images as im2col + one matrix product."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_module
from ..ops.blocks import block_weights, fold_block_gradient, to_blocks, write_from_blocks
from ..ops.channels import channel_sums, rows, tile
from ..ops.windows import add_windows, gather_patches, output_size, padded_chunks, unpad_hw
from .base import Layer, Shape
from .init import he_normal

# Blocked products pay off for narrow layers. With BLAS on 2 threads and the whole batch 128 they
# sped a conv's forward+backward up 1.30x at C=16, 1.33x at C=32 and 0.89x at C=64; with the batch
# split between threads (one BLAS thread each, as training and evaluation now run) blocking only
# up to 16 channels made the ResNet-32 step 0.90x-0.93x and evaluation 0.94x the time of up to 32.
BLOCK_MAX_CHANNELS = 16
CHUNK_BYTES = 2 << 20     # NumPy works through a batch in chunks whose column matrix is about this size


def weight_rows(W, block: int):
    """The right-hand matrix of the product: ``W`` as ``(KH*KW*C_in, C_out)``, or blocked."""
    return W.reshape(-1, W.shape[-1]) if block == 1 else block_weights(W, block)


def correlate_into(out, x_pad, w_rows, patch: tuple[int, int, int], block: int) -> None:
    """``out[n, i, j] = sum_{a, b, c} x_pad[n, i*stride + a, j*stride + b, c] * W[a, b, c]``.

    Args:
        out: ``(N, Ho, Wo, C_out)``, C-contiguous, written in place.
        x_pad: ``(N, Hp, Wp, C_in)``, already padded.
        w_rows: :func:`weight_rows` of ``W`` ``(KH, KW, C_in, C_out)`` for ``block``.
        patch: ``(PH, PW, step)``: ``(KH, KW, stride)``, or ``(B+KH-1, B+KW-1, B)`` for a block
            of ``B x B`` output pixels per patch (stride 1 only).
    """
    xp = array_module(out)
    cols, _ = gather_patches(x_pad, *patch)                   # N*Ho*Wo/B^2, PH*PW*C_in
    if block == 1:
        xp.matmul(cols, w_rows, out=out.reshape(cols.shape[0], -1))
    else:
        write_from_blocks(out, cols @ w_rows, block)


class Conv2d(Layer):
    """Convolution (cross-correlation, as in every framework) with zero padding.

    Shapes:
        x:   ``(N, H, W, C_in)``
        W:   ``(KH, KW, C_in, C_out)``
        b:   ``(C_out,)`` (absent with ``bias=False``)
        out: ``(N, Ho, Wo, C_out)`` with ``Ho = (H + 2*padding - KH) // stride + 1``

    Forward gathers every window into a column matrix ``(N*Ho*Wo, KH*KW*C_in)`` and multiplies
    it by ``W`` viewed as ``(KH*KW*C_in, C_out)``. Narrow stride-1 layers instead gather one
    patch per 2x2 block of output pixels (see :mod:`cifarnet.ops.blocks`). On NumPy the batch is
    worked through a chunk of images at a time (about ``CHUNK_BYTES`` of columns each), so that
    each chunk's padded input, column matrix and output stay in cache; on CuPy the whole batch
    goes at once. Only the input is cached; backward pads and regathers the columns chunk by
    chunk, which costs one copy and saves holding a column matrix per layer.

    The input gradient of a stride-1 convolution is itself a convolution: of ``dout``, padded by
    ``KH-1-padding``, with the kernel flipped and its channel axes swapped. It is computed that
    way, as a gather and one matrix product; strided convolutions scatter the column gradient
    back instead (:func:`~cifarnet.ops.windows.add_windows`). With ``input_grad = False`` (the
    first layer of a network) the input gradient is not computed at all.
    """

    input_grad = True
    block: int | None = None        # output pixels per patch side; None chooses automatically
    chunk: int | None = None        # images per chunk; None chooses automatically

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

    def _block_for(self, channels: int, ho: int, wo: int) -> int:
        """2 for narrow stride-1 layers with even output sizes (unless ``self.block`` says), else 1."""
        if self.stride != 1:
            return 1
        if self.block is not None:
            return self.block if ho % self.block == 0 and wo % self.block == 0 else 1
        return 2 if channels <= BLOCK_MAX_CHANNELS and self.kernel_size != (1, 1) and ho % 2 == 0 and wo % 2 == 0 else 1

    def _patch(self, block: int) -> tuple[int, int, int]:
        kh, kw = self.kernel_size
        return (kh, kw, self.stride) if block == 1 else (block + kh - 1, block + kw - 1, block)

    def _images_per_chunk(self, xp, n: int, col_bytes_per_image: int) -> int:
        """``self.chunk`` if set; NumPy: enough images for ~CHUNK_BYTES of columns (the whole batch
        when its columns fit in twice that); CuPy: the whole batch."""
        if self.chunk is not None:
            return self.chunk
        if xp is not np or n * col_bytes_per_image <= 2 * CHUNK_BYTES:
            return n
        return max(1, CHUNK_BYTES // max(1, col_bytes_per_image))

    def _col_bytes(self, channels: int, ho: int, wo: int, block: int, itemsize: int) -> int:
        ph, pw, _ = self._patch(block)
        return (ho // block) * (wo // block) * ph * pw * channels * itemsize

    def _convolve(self, x, W, bias=None, residual=None, relu: bool = False):
        """``relu?(correlate(pad(x), W) + bias + residual)``, a chunk of images at a time.

        The bias, residual and ReLU are applied to each chunk's output right after its product,
        on ``(rows, Wo*C_out)`` views, while it is still in cache. Returns ``(out, block)``.
        """
        xp = array_module(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, H, W, {self.in_channels}) input, got {x.shape}")
        n = x.shape[0]
        ho, wo, c_out = self.output_shape(x.shape[1:])
        block = self._block_for(self.in_channels, ho, wo)
        w_rows = weight_rows(W, block)
        out = xp.empty((n, ho, wo, c_out), dtype=xp.result_type(x, W))
        patch = self._patch(block)
        per_chunk = self._images_per_chunk(
            xp, n, self._col_bytes(self.in_channels, ho, wo, block, out.itemsize))
        bias_row = None if bias is None else tile(bias.astype(out.dtype, copy=False), wo * c_out)
        if residual is not None:
            residual = xp.ascontiguousarray(residual)
        p = self.padding
        for start, stop, x_pad in padded_chunks(x, (p, p), per_chunk):
            part = out[start:stop]
            correlate_into(part, x_pad, w_rows, patch, block)
            r = rows(part)                                           # chunk rows, Wo*C_out
            if bias_row is not None:
                r += bias_row
            if residual is not None:
                r += rows(residual[start:stop])
            if relu:
                xp.maximum(r, r.dtype.type(0), out=r)
        return out, block

    def forward(self, x):
        out, block = self._convolve(x, self.params["W"], self.params.get("b"))
        self._cache = (x, block)
        return out

    def infer_fused(self, x, scale, shift, residual=None, relu: bool = False):
        """Inference only: ``relu?(forward(x) * scale + shift + residual)``, no cache kept.

        The per-channel ``scale`` (C_out,) of a following eval-mode batch norm is folded into the
        kernel, ``shift`` into the bias; see :meth:`BatchNorm.folded`.
        """
        bias = shift + self.params["b"] * scale if "b" in self.params else shift
        return self._convolve(x, self.params["W"] * scale, bias, residual, relu)[0]

    def backward(self, dout):
        xp = array_module(dout)
        x, block = self._take_cache("_cache")
        kh, kw = self.kernel_size
        p = self.padding
        n, ho, wo, c_out = dout.shape
        h, w = x.shape[1:3]
        W = self.params["W"]
        patch = self._patch(block)
        # the input gradient of a stride-1 convolution is a full correlation of dout with the
        # flipped kernel, its channel axes swapped; other strides scatter the column gradient
        flipped = self.input_grad and self.stride == 1 and p <= kh - 1 and p <= kw - 1
        col_bytes = self._col_bytes(self.in_channels, ho, wo, block, dout.itemsize)
        if flipped:                                # a stride-1 correlation with C_out input channels
            dx_block = self._block_for(c_out, h, w)
            dx_patch = self._patch(dx_block)
            w_flip = weight_rows(xp.ascontiguousarray(W[::-1, ::-1].transpose(0, 1, 3, 2)), dx_block)
            col_bytes = max(col_bytes, self._col_bytes(c_out, h, w, dx_block, dout.itemsize))
        per_chunk = self._images_per_chunk(xp, n, col_bytes)
        dx = xp.empty(x.shape, dtype=dout.dtype) if self.input_grad else None
        d_chunks = padded_chunks(dout, (kh - 1 - p, kw - 1 - p) if flipped else (0, 0), per_chunk)
        dw_rows = None
        for (start, stop, x_pad), (_, _, d_part) in zip(padded_chunks(x, (p, p), per_chunk), d_chunks):
            cols, _ = gather_patches(x_pad, *patch)                # rows, PH*PW*C_in
            part = cols.T @ to_blocks(dout[start:stop], block)
            if dw_rows is None:
                dw_rows = part
            else:
                dw_rows += part
            del cols
            if dx is None:
                continue
            if flipped:
                correlate_into(dx[start:stop], d_part, w_flip, dx_patch, dx_block)
            else:
                m = stop - start
                dcols = (d_part.reshape(-1, c_out) @ W.reshape(-1, c_out).T).reshape(m, ho, wo, kh, kw, -1)
                dx[start:stop] = unpad_hw(add_windows(dcols, x_pad.shape, self.stride), p)
        self.grads["W"] = (dw_rows.reshape(W.shape) if block == 1
                           else fold_block_gradient(dw_rows, self.kernel_size, self.in_channels, block))
        if "b" in self.params:
            self.grads["b"] = channel_sums(rows(xp.ascontiguousarray(dout)), c_out)
        return dx

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'b' in self.params}")
