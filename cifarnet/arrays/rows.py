"""Row views of NHWC arrays, for per-channel arithmetic with long inner loops (NumPy).

NumPy runs ``x * v`` for ``x`` of shape ``(M, C)`` and ``v`` of shape ``(C,)`` with an inner loop
of only C elements, several times slower than a loop over a whole image row. These helpers view a
contiguous ``(N, H, W, C)`` array as ``(N*H, W*C)`` rows, tile per-channel vectors to row length,
and fold row sums back to channels.
"""
from __future__ import annotations

from ..backend import array_module


def rows(x):
    """``(N, H, W, C) -> (N*H, W*C)`` (a view of a contiguous array); ``(N, C)`` is returned as is."""
    if x.ndim == 2:
        return x
    n, h, w, c = x.shape
    return x.reshape(n * h, w * c)


def tile(v, row_length: int):
    """Repeat a per-channel vector ``(C,)`` along a row of ``row_length = W*C`` values."""
    xp = array_module(v)
    reps = row_length // v.shape[0]
    return v if reps == 1 else xp.tile(v, reps)


def channel_sums(r, channels: int, out=None):
    """Sum a ``(R, W*C)`` row view over rows and over W: ``(C,)`` (written into ``out`` if given)."""
    total = r.sum(axis=0)                                  # W*C
    return total.reshape(-1, channels).sum(axis=0, out=out)   # C


def channel_products(a, b, channels: int, out=None):
    """Per-channel sum of ``a * b`` for two ``(R, W*C)`` row views, without a temporary array
    (written into ``out`` if given)."""
    xp = array_module(a)
    return xp.einsum("ij,ij->j", a, b).reshape(-1, channels).sum(axis=0, out=out)
