"""Blocked im2col: one column-matrix row per ``BH x BW`` block of output pixels.

A stride-1 convolution with a ``KH x KW`` kernel can read one ``(BH+KH-1) x (BW+KW-1)`` patch per
block of ``BH x BW`` output pixels instead of one ``KH x KW`` patch per pixel. The product then has
``BH*BW`` times fewer rows and ``BH*BW`` times more output columns: some multiplications fall on
the zeros of :func:`block_weights`, but BLAS runs the fatter matrices far more efficiently, and the
column matrix holds fewer copies of each input value. A block one pixel high (``1 x BW``) has a
further virtue: its output pixels are neighbours in memory, so the product's rows are the output's
own rows (``(N*H*W/BW, BW*C)``, a view) and no copy moves them into place.

``block`` is a pair ``(BH, BW)``; an int ``B`` means ``(B, B)`` (:func:`as_block`).
"""
from __future__ import annotations

from ..backend import array_module


def as_block(block) -> tuple[int, int]:
    """``(BH, BW)`` of ``block``: a pair, or an int ``B`` for a square ``B x B`` block."""
    if isinstance(block, int):
        return block, block
    bh, bw = block
    return int(bh), int(bw)


def block_weights(W, block):
    """Weights for ``BH x BW`` output pixels per patch: ``(PH*PW*C_in, BH*BW*C_out)``.

    Args:
        W: ``(KH, KW, C_in, C_out)``.
    Output pixel ``(u, v)`` of a block reads the patch at offset ``(u, v)``, so its column holds
    ``W`` shifted there and zeros elsewhere (``PH = BH + KH - 1``, ``PW = BW + KW - 1``).
    """
    xp = array_module(W)
    bh, bw = as_block(block)
    kh, kw, c_in, c_out = W.shape
    wb = xp.zeros((bh + kh - 1, bw + kw - 1, c_in, bh, bw, c_out), dtype=W.dtype)
    for u in range(bh):
        for v in range(bw):
            wb[u:u + kh, v:v + kw, :, u, v, :] = W
    return wb.reshape(-1, bh * bw * c_out)


def fold_block_gradient(dwb, kernel: tuple[int, int], c_in: int, block, out=None):
    """Adjoint of :func:`block_weights`: ``(PH*PW*C_in, BH*BW*C_out) -> (KH, KW, C_in, C_out)``,
    written into ``out`` if given."""
    xp = array_module(dwb)
    kh, kw = kernel
    bh, bw = as_block(block)
    dwb = dwb.reshape(bh + kh - 1, bw + kw - 1, c_in, bh, bw, -1)
    if out is None:
        dW = xp.zeros((kh, kw, c_in, dwb.shape[-1]), dtype=dwb.dtype)
    else:
        dW = out
        dW.fill(0)
    for u in range(bh):
        for v in range(bw):
            dW += dwb[u:u + kh, v:v + kw, :, u, v, :]
    return dW


def to_blocks(y, block, out=None):
    """``(N, H, W, C) -> (N*H/BH*W/BW, BH*BW*C)``: each row one ``BH x BW`` block of pixels (a view
    of ``y`` for blocks one pixel high; else a copy, into ``out`` if given)."""
    n, h, w, c = y.shape
    bh, bw = as_block(block)
    if bh == 1:
        return y.reshape(n * h * (w // bw), bw * c)
    blocks = y.reshape(n, h // bh, bh, w // bw, bw, c).transpose(0, 1, 3, 2, 4, 5)
    if out is None:
        return blocks.reshape(-1, bh * bw * c)
    out.reshape(blocks.shape)[...] = blocks
    return out


def write_from_blocks(out, rows, block, add: bool = False) -> None:
    """Inverse of :func:`to_blocks`, written into ``out`` ``(N, H, W, C)`` (C-contiguous), or added
    to what it holds if ``add``."""
    n, h, w, c = out.shape
    bh, bw = as_block(block)
    blocks = rows.reshape(n, h // bh, w // bw, bh, bw, c).transpose(0, 1, 3, 2, 4, 5)
    target = out.reshape(n, h // bh, bh, w // bw, bw, c)
    if add:
        target += blocks
    else:
        array_module(out).copyto(target, blocks)
