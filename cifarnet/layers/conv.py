"""2-D convolution over NHWC images as im2col + one matrix product."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_module
from ..ops.windows import add_windows, gather_patches, output_size, pad_hw, unpad_hw
from .base import Layer, Shape
from .init import he_normal

BLOCK_MAX_CHANNELS = 32   # blocked products pay off for narrow layers (fwd+bwd at batch 128: C=16 1.30x, C=32 1.33x, C=64 0.89x)


def block_weights(W, block: int):
    """Weights for ``block x block`` output pixels per patch: ``(PH*PW*C_in, B*B*C_out)``.

    Output pixel ``(u, v)`` of a block reads the patch at offset ``(u, v)``, so its column holds
    ``W`` shifted there and zeros elsewhere (``PH = B + KH - 1``).
    """
    xp = array_module(W)
    kh, kw, c_in, c_out = W.shape
    wb = xp.zeros((block + kh - 1, block + kw - 1, c_in, block, block, c_out), dtype=W.dtype)
    for u in range(block):
        for v in range(block):
            wb[u:u + kh, v:v + kw, :, u, v, :] = W
    return wb.reshape(-1, block * block * c_out)


def fold_block_gradient(dwb, kernel: tuple[int, int], c_in: int, block: int):
    """Adjoint of :func:`block_weights`: sum the shifted copies back into ``(KH, KW, C_in, C_out)``."""
    xp = array_module(dwb)
    kh, kw = kernel
    dwb = dwb.reshape(block + kh - 1, block + kw - 1, c_in, block, block, -1)
    dW = xp.zeros((kh, kw, c_in, dwb.shape[-1]), dtype=dwb.dtype)
    for u in range(block):
        for v in range(block):
            dW += dwb[u:u + kh, v:v + kw, :, u, v, :]
    return dW


def to_blocks(y, block: int):
    """``(N, H, W, C) -> (N*H/B*W/B, B*B*C)``: each row one ``B x B`` block of pixels (a copy)."""
    n, h, w, c = y.shape
    if block == 1:
        return y.reshape(n * h * w, c)
    b = block
    return y.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, b * b * c)


def from_blocks(rows, n: int, h: int, w: int, block: int):
    """Inverse of :func:`to_blocks`: ``(N*H/B*W/B, B*B*C) -> (N, H, W, C)``."""
    if block == 1:
        return rows.reshape(n, h, w, -1)
    b = block
    c = rows.shape[1] // (b * b)
    return rows.reshape(n, h // b, w // b, b, b, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


def correlate(x_pad, W, stride: int = 1, block: int = 1):
    """``out[n, i, j] = sum_{a, b, c} x_pad[n, i*stride + a, j*stride + b, c] * W[a, b, c]``.

    Args:
        x_pad: ``(N, Hp, Wp, C_in)``, already padded.
        W: ``(KH, KW, C_in, C_out)``.
        block: output pixels per patch side (stride 1 only); ``B > 1`` wastes some multiplications
            on zeros but hands BLAS a fatter, more efficient product.
    Returns:
        ``(N, Ho, Wo, C_out)`` and the column matrix it used.
    """
    kh, kw, _, c_out = W.shape
    if block == 1:
        cols, (n, ho, wo) = gather_patches(x_pad, kh, kw, stride)
        return (cols @ W.reshape(-1, c_out)).reshape(n, ho, wo, c_out), cols
    cols, (n, hb, wb) = gather_patches(x_pad, block + kh - 1, block + kw - 1, block)
    out = cols @ block_weights(W, block)                           # N*Hb*Wb, B*B*C_out
    return from_blocks(out, n, hb * block, wb * block, block), cols


class Conv2d(Layer):
    """Convolution (cross-correlation, as in every framework) with zero padding.

    Shapes:
        x:   ``(N, H, W, C_in)``
        W:   ``(KH, KW, C_in, C_out)``
        b:   ``(C_out,)`` (absent with ``bias=False``)
        out: ``(N, Ho, Wo, C_out)`` with ``Ho = (H + 2*padding - KH) // stride + 1``

    Forward gathers every window into a column matrix ``(N*Ho*Wo, KH*KW*C_in)`` and multiplies
    it by ``W`` viewed as ``(KH*KW*C_in, C_out)``. Narrow stride-1 layers instead gather one
    patch per 2x2 block of output pixels (see :func:`correlate`). Only the padded input is cached;
    backward regathers the columns, which costs one copy and saves holding a column matrix per
    layer.

    The input gradient of a stride-1 convolution is itself a convolution: of ``dout``, padded by
    ``KH-1-padding``, with the kernel flipped and its channel axes swapped. It is computed that
    way, as a gather and one matrix product; strided convolutions scatter the column gradient
    back instead (:func:`~cifarnet.ops.windows.add_windows`). With ``input_grad = False`` (the
    first layer of a network) the input gradient is not computed at all.
    """

    input_grad = True
    block: int | None = None        # output pixels per patch side; None chooses automatically

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

    def forward(self, x):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, H, W, {self.in_channels}) input, got {x.shape}")
        x_pad = pad_hw(x, self.padding)
        ho, wo, _ = self.output_shape(x.shape[1:])
        block = self._block_for(self.in_channels, ho, wo)
        out, _ = correlate(x_pad, self.params["W"], self.stride, block)
        if "b" in self.params:
            out += self.params["b"]
        self._cache = (x_pad, block)
        return out

    def backward(self, dout):
        xp = array_module(dout)
        x_pad, block = self._take_cache("_cache")
        kh, kw = self.kernel_size
        n, ho, wo, c_out = dout.shape
        W = self.params["W"]
        if block == 1:
            cols, _ = gather_patches(x_pad, kh, kw, self.stride)       # N*Ho*Wo, KH*KW*C_in
            dout_rows = dout.reshape(-1, c_out)
            self.grads["W"] = (cols.T @ dout_rows).reshape(W.shape)
        else:
            cols, _ = gather_patches(x_pad, block + kh - 1, block + kw - 1, block)
            dout_rows = to_blocks(dout, block)                          # N*Ho*Wo/B^2, B*B*C_out
            self.grads["W"] = fold_block_gradient(cols.T @ dout_rows, self.kernel_size, self.in_channels, block)
        del cols
        if "b" in self.params:
            self.grads["b"] = dout.sum(axis=(0, 1, 2))
        if not self.input_grad:
            return None
        p = self.padding
        if self.stride == 1 and p <= kh - 1 and p <= kw - 1:
            # full correlation of dout with the flipped, channel-swapped kernel
            w_flip = xp.ascontiguousarray(W[::-1, ::-1].transpose(0, 1, 3, 2))   # KH, KW, C_out, C_in
            d_pad = xp.pad(dout, ((0, 0), (kh - 1 - p, kh - 1 - p), (kw - 1 - p, kw - 1 - p), (0, 0)))
            h, w = x_pad.shape[1] - 2 * p, x_pad.shape[2] - 2 * p
            dx, _ = correlate(d_pad, w_flip, 1, self._block_for(c_out, h, w))
            return dx
        dcols = (dout.reshape(-1, c_out) @ W.reshape(-1, c_out).T).reshape(n, ho, wo, kh, kw, self.in_channels)
        dx_pad = add_windows(dcols, x_pad.shape, self.stride)
        return unpad_hw(dx_pad, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'b' in self.params}")
