"""Blocked im2col: one column-matrix row per ``B x B`` block of output pixels.

A stride-1 convolution with a ``KH x KW`` kernel can read one ``(B+KH-1) x (B+KW-1)`` patch per
block of ``B x B`` output pixels instead of one ``KH x KW`` patch per pixel. The product then has
``B*B`` times fewer rows and ``B*B`` times more output columns: some multiplications fall on the
zeros of :func:`block_weights`, but BLAS runs the fatter matrices far more efficiently, and the
column matrix holds fewer copies of each input value.
"""
from __future__ import annotations

from ..backend import array_module


def block_weights(W, block: int):
    """Weights for ``block x block`` output pixels per patch: ``(PH*PW*C_in, B*B*C_out)``.

    Args:
        W: ``(KH, KW, C_in, C_out)``.
    Output pixel ``(u, v)`` of a block reads the patch at offset ``(u, v)``, so its column holds
    ``W`` shifted there and zeros elsewhere (``PH = B + KH - 1``, ``PW = B + KW - 1``).
    """
    xp = array_module(W)
    kh, kw, c_in, c_out = W.shape
    wb = xp.zeros((block + kh - 1, block + kw - 1, c_in, block, block, c_out), dtype=W.dtype)
    for u in range(block):
        for v in range(block):
            wb[u:u + kh, v:v + kw, :, u, v, :] = W
    return wb.reshape(-1, block * block * c_out)


def fold_block_gradient(dwb, kernel: tuple[int, int], c_in: int, block: int, out=None):
    """Adjoint of :func:`block_weights`: ``(PH*PW*C_in, B*B*C_out) -> (KH, KW, C_in, C_out)``,
    written into ``out`` if given."""
    xp = array_module(dwb)
    kh, kw = kernel
    dwb = dwb.reshape(block + kh - 1, block + kw - 1, c_in, block, block, -1)
    if out is None:
        dW = xp.zeros((kh, kw, c_in, dwb.shape[-1]), dtype=dwb.dtype)
    else:
        dW = out
        dW.fill(0)
    for u in range(block):
        for v in range(block):
            dW += dwb[u:u + kh, v:v + kw, :, u, v, :]
    return dW


def to_blocks(y, block: int, out=None):
    """``(N, H, W, C) -> (N*H/B*W/B, B*B*C)``: each row one ``B x B`` block of pixels (a copy for
    B > 1, into ``out`` if given)."""
    n, h, w, c = y.shape
    if block == 1:
        return y.reshape(n * h * w, c)
    b = block
    blocks = y.reshape(n, h // b, b, w // b, b, c).transpose(0, 1, 3, 2, 4, 5)
    if out is None:
        return blocks.reshape(-1, b * b * c)
    out.reshape(blocks.shape)[...] = blocks
    return out


def write_from_blocks(out, rows, block: int, add: bool = False) -> None:
    """Inverse of :func:`to_blocks`, written into ``out`` ``(N, H, W, C)`` (C-contiguous), or added
    to what it holds if ``add``."""
    n, h, w, c = out.shape
    b = block
    blocks = rows.reshape(n, h // b, w // b, b, b, c).transpose(0, 1, 3, 2, 4, 5)
    target = out.reshape(n, h // b, b, w // b, b, c)
    if add:
        target += blocks
    else:
        array_module(out).copyto(target, blocks)
