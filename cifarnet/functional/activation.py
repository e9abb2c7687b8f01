"""Element-wise activations: ReLU and GELU.

``relu.forward(x, keep=True) -> (max(x, 0), ctx)``; any shape. The gradient at exactly 0 is taken
as 0. NaN passes through (as in PyTorch), so bad numbers surface in the loss instead of vanishing.
"""
from __future__ import annotations

import numpy as np

from ..arrays.workspace import pooled, scratch, take
from ..backend import array_module
from ..kernels.gelu_form import GELU_A, GELU_C
from .dispatch import Op

relu = Op("relu")


@relu.reference
class ReluReference:
    @staticmethod
    def forward(x, *, keep: bool = True):
        xp = array_module(x)
        return xp.maximum(x, xp.zeros((), dtype=x.dtype)), (x > 0 if keep else None)

    @staticmethod
    def backward(mask, dout):
        return dout * mask, {}


gelu = Op("gelu")



@gelu.reference
class GeluReference:
    """GELU in its tanh form, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (Hendrycks and
    Gimpel 2016; PyTorch's ``GELU(approximate="tanh")``). NumPy has no erf, and the tanh form is
    within 5e-4 of the erf form everywhere (``tests/test_airbench_layers.py`` measures it)."""

    @staticmethod
    def forward(x, *, keep: bool = True):
        xp = array_module(x)
        t = xp.tanh(GELU_C * (x + GELU_A * x * x * x))
        return 0.5 * x * (1 + t), ((x, t) if keep else None)

    @staticmethod
    def backward(saved, dout):
        x, t = saved
        slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * x * x)
        return dout * slope, {}


GELU_CHUNK_BYTES = 256 << 10    # the NumPy GELU's blocks: its 7 to 10 passes over one stay in a core's L2


def gelu_blocks(x, t, out, chunk_bytes: int | None = None) -> None:
    """GELU of the flat contiguous ``x`` into ``out``, ``tanh(C x (1 + A x^2))`` into ``t`` (both the
    shape of ``x``; ``t`` may instead be a scratch of one block, when it is not kept), a block of
    about ``chunk_bytes`` (default :data:`GELU_CHUNK_BYTES`) at a time so that each pass finds it in
    cache (at 1024x31x31x24 float32 on one thread, forward 1.6x and backward 2.1x faster than the
    same passes over the whole array: ``docs/performance.md``)."""
    step = max(1, (chunk_bytes or GELU_CHUNK_BYTES) // x.itemsize)
    kept = t.size == x.size
    for a in range(0, x.size, step):
        xs, os = x[a:a + step], out[a:a + step]
        ts = t[a:a + step] if kept else t[:xs.size]
        np.multiply(xs, xs, out=ts)
        ts *= GELU_A * GELU_C
        ts += GELU_C
        ts *= xs
        np.tanh(ts, out=ts)                     # tanh(C (x + A x^3))
        np.add(ts, 1, out=os)
        os *= xs
        os *= 0.5


def gelu_slope_blocks(x, t, dout, d, chunk_bytes: int | None = None, workspace=None) -> None:
    """``dout`` times GELU's slope ``0.5 (1 + t) (1 + C x (1 + 3 A x^2) (1 - t))`` into ``d`` (which
    may be ``dout`` itself); all four flat, contiguous and of one size; a block at a time as
    :func:`gelu_blocks`, its two temporaries ``workspace``'s scratch if given."""
    step = max(1, (chunk_bytes or GELU_CHUNK_BYTES) // x.itemsize)
    slope_block, other_block = scratch(workspace, "gelu slope blocks", (2, min(step, x.size)), x.dtype)
    for a in range(0, x.size, step):
        xs, ts = x[a:a + step], t[a:a + step]
        slope, other = slope_block[:xs.size], other_block[:xs.size]
        np.multiply(xs, xs, out=slope)
        slope *= 3 * GELU_A * GELU_C
        slope += GELU_C
        slope *= xs                             # C x (1 + 3 A x^2)
        np.subtract(1, ts, out=other)
        slope *= other
        slope += 1
        np.add(ts, 1, out=other)
        slope *= other
        slope *= 0.5
        np.multiply(slope, dout[a:a + step], out=d[a:a + step])


def gelu_arrays(shape: tuple, dtype, keep: bool, workspace=None, chunk_bytes: int | None = None):
    """``(out, t)`` for :func:`gelu_blocks`: the output (``workspace``'s pooled array: a node's
    output), and the tanh, the scope's own array when kept for the backward, else a block's scratch."""
    step = max(1, (chunk_bytes or GELU_CHUNK_BYTES) // np.dtype(dtype).itemsize)
    size = int(np.prod(shape))
    t = take(workspace, "gelu tanh", shape, dtype) if keep else \
        scratch(workspace, "gelu tanh block", (min(step, size),), dtype)
    return pooled(workspace, shape, dtype), t


@gelu.implementation("numpy")
class GeluNumpy:
    """The reference's formulas rearranged for fewer passes over memory, in place, and a block of
    about :data:`GELU_CHUNK_BYTES` at a time (:func:`gelu_blocks`, :func:`gelu_slope_blocks`):
    ``tanh(C x (1 + A x^2))`` forward, and the slope as ``0.5 (1 + t) (1 + C x (1 + 3 A x^2) (1 - t))``.
    The same operations in the same order on each element as over the whole array, so the results
    are the same to the bit whatever the block size (``chunk_bytes``, for tests). With a
    ``workspace`` (the training plan's) the output, the kept tanh and the input gradient are its
    arrays, the same every step."""

    takes_workspace = True

    @staticmethod
    def forward(x, *, keep: bool = True, chunk_bytes: int | None = None, workspace=None):
        x = np.ascontiguousarray(x)
        out, t = gelu_arrays(x.shape, x.dtype, keep, workspace, chunk_bytes)
        gelu_blocks(x.reshape(-1), t.reshape(-1), out.reshape(-1), chunk_bytes)
        return out, ((x, t, workspace) if keep else None)

    @staticmethod
    def backward(saved, dout, chunk_bytes: int | None = None, out=None):
        """``(dout * slope, {})``, into ``out`` if given (it may be ``dout``), else a new array (the
        workspace's, if the forward had one)."""
        x, t, workspace = saved
        dout = np.ascontiguousarray(dout)
        d = pooled(workspace, x.shape, x.dtype) if out is None else out
        gelu_slope_blocks(x.reshape(-1), t.reshape(-1), dout.reshape(-1), d.reshape(-1), chunk_bytes, workspace)
        return d, {}
