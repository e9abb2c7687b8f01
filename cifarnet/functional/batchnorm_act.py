"""Batch norm, then an optional residual addition, then an activation: one op, fused.

``forward(x, gamma, beta, running_mean, running_var, *, activation, training, momentum=0.1,
eps=1e-5, reducer=LOCAL, residual=None, keep=True) -> (out, ctx)`` computes
``activation(batch_norm(x) + residual)`` (``activation``: ``"relu"`` or ``"gelu"``; a residual only
before a ReLU, as in a residual block's ``relu(bn2(conv2(h)) + shortcut)``); batch norm's
arguments and running update are :data:`cifarnet.functional.batch_norm`'s.
``backward(ctx, dout, grads_out=None, reuse=False) -> (dx, {"gamma": dgamma, "beta": dbeta})``, with
``dx`` the pair ``(dx, dresidual)`` when the forward took a residual.

Two permissions let a variant work in place (the training plan gives them where it knows nothing
else reads the memory; the reference and the fused kernels ignore them): ``overwrite_input``, the
forward may write into ``x``; ``reuse``, the backward may write into ``dout`` and into what the
forward kept, so the context serves one backward only.

It is what the training plan (:mod:`cifarnet.training.plan`) runs for a batch norm whose only
reader is an activation: the NumPy variant normalises, adds and activates in one output array and
keeps no mask (ReLU's derivative is read from the output); the ``"cupy-fused"`` variant takes two
launches each way (:mod:`cifarnet.kernels.batchnorm_act`) instead of four or five forward and three
backward.

Shapes: x, residual, out: ``(N, ..., C)``;  gamma, beta, running_mean, running_var: ``(C,)``
"""
from __future__ import annotations

import numpy as np

from ..arrays.rows import rows, tile
from ..arrays.workspace import pooled, scratch, take
from ..backend import array_module
from ..comm import LOCAL
from ..kernels import batchnorm_act as kernels
from ..kernels.bn_columns import bn_act_columns
from .activation import GeluNumpy, GeluReference, ReluReference, gelu_arrays, gelu_blocks
from .batchnorm import (
    BatchNormReference,
    _check,
    gradient_sums,
    input_gradient_into,
    input_gradient_rows,
    train_statistics,
)
from .destination import target_or_new
from .dispatch import FUSED, Op
from .fused import fused_statistics

batch_norm_act = Op("batch_norm_act")
ACTIVATIONS = ("relu", "gelu")
CHUNK_BYTES = 2 << 20      # the NumPy variant's row blocks: a few passes over one stay in a core's L2 cache
                           # (1 MB was as fast on one thread; 2 MB makes half the NumPy calls, which two
                           # threads pay for in interpreter-lock waits: docs/performance.md, round three)


def _check_activation(activation: str, residual) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"batch_norm_act: activation must be one of {ACTIVATIONS}, got {activation!r}")
    if residual is not None and activation != "relu":
        raise ValueError("batch_norm_act: a residual is added before a ReLU only")


def _result(dx, d, has_residual: bool):
    return (dx, d) if has_residual else dx


@batch_norm_act.reference
class BatchNormActReference:
    """The ops one after another: batch norm's reference, the addition, the activation's reference."""

    @staticmethod
    def forward(x, gamma, beta, running_mean, running_var, *, activation: str, training: bool,
                momentum: float = 0.1, eps: float = 1e-5, reducer=LOCAL, residual=None, keep: bool = True,
                overwrite_input: bool = False):
        _check_activation(activation, residual)
        y, bn_saved = BatchNormReference.forward(x, gamma, beta, running_mean, running_var, training=training,
                                                 momentum=momentum, eps=eps, reducer=reducer, keep=keep)
        if residual is not None:
            y = y + residual
        act = ReluReference if activation == "relu" else GeluReference
        out, act_saved = act.forward(y, keep=keep)
        return out, ((bn_saved, act, act_saved, residual is not None) if keep else None)

    @staticmethod
    def backward(saved, dout, grads_out=None, reuse: bool = False):
        bn_saved, act, act_saved, has_residual = saved
        d, _ = act.backward(act_saved, dout)
        dx, grads = BatchNormReference.backward(bn_saved, d, grads_out)
        return _result(dx, d, has_residual), grads


def row_spans(n_rows: int, row_bytes: int, chunk_bytes: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive row blocks of about ``chunk_bytes`` each (at least one row)."""
    step = max(1, chunk_bytes // max(1, row_bytes))
    return [(a, min(n_rows, a + step)) for a in range(0, n_rows, step)]


@batch_norm_act.implementation("numpy")
class BatchNormActNumpy:
    """Batch norm, addition and activation on ``(N*H, W*C)`` row views (:mod:`cifarnet.arrays.rows`),
    equal bit for bit to :class:`~cifarnet.functional.batchnorm.BatchNormNumpy` followed by the
    addition and the activation: both compute the statistics and the input gradient with the same
    functions of :mod:`cifarnet.functional.batchnorm`, the channel sums on the same whole arrays (NumPy
    adds rows in order, so a sum taken block by block would round differently and a float32 run
    would part from the unfused one within tens of steps), and every element goes through the same
    operations in the same order. What is fused is the element-wise work: the passes that follow a
    block's first read run on it while it is in cache, a block of rows of about ``chunk_bytes``
    (default :data:`CHUNK_BYTES`) at a time, and nothing is written that the ops apart would write
    and read back (ReLU's mask, batch norm's output before the activation).

    Forward: the channel sums; the centred input (in the input's memory with ``overwrite_input``)
    and the sums of its squares; per block, scale, shift, residual and activation into the output.
    It keeps the centred input and, for ReLU, the output (its derivative is read there: no mask; the
    next layer keeps that output anyway). Backward: per block, ``dout`` through the activation (into
    ``dout``'s memory with ``reuse``); the two gradient sums; per block, the input gradient
    ``scale (d - dbeta/m - xhat dgamma/m)`` in batch norm's steps, in the centred input's memory with
    ``reuse``. GELU keeps its input and ``tanh`` as its own variant does (whole arrays). With a
    ``workspace`` (:mod:`cifarnet.arrays.workspace`) the output is a pooled array, the centred input
    (when not in the input's memory) its own array, ReLU's mask of a block a scratch array, and the
    gradients the permissions do not let it write in place pooled arrays: the same every step."""

    takes_workspace = True

    @staticmethod
    def forward(x, gamma, beta, running_mean, running_var, *, activation: str, training: bool,
                momentum: float = 0.1, eps: float = 1e-5, reducer=LOCAL, residual=None, keep: bool = True,
                overwrite_input: bool = False, chunk_bytes: int | None = None, workspace=None):
        _check_activation(activation, residual)
        _check(x, gamma)
        contiguous = np.ascontiguousarray(x)
        r = rows(contiguous)                                   # R, W*C
        width = r.shape[1]
        spans = row_spans(r.shape[0], width * r.itemsize, chunk_bytes or CHUNK_BYTES)
        res = None if residual is None else rows(np.ascontiguousarray(residual))
        if training:
            mine = overwrite_input or contiguous is not x      # memory this call may write into
            centred, invstd, m, offset = train_statistics(x, r, gamma, reducer, eps, momentum, running_mean,
                                                          running_var,
                                                          r if mine else take(workspace, "centred", r.shape, r.dtype))
            scale = gamma * invstd
            shift = beta if offset is None else beta - offset * scale
            source, kept, recentre = centred, centred, None
        else:
            m, offset = None, None
            invstd = 1.0 / np.sqrt(running_var + eps)
            scale = gamma * invstd
            source, shift, kept, recentre = r, beta - running_mean * scale, r, running_mean
        scale_row, shift_row = tile(scale, width), tile(shift, width)
        out = pooled(workspace, source.shape, source.dtype)
        relu = activation == "relu"
        if not relu:                                           # GELU's output, and its tanh (kept or a block's)
            result, t = gelu_arrays(out.shape, out.dtype, keep, workspace)
        for a, b in spans:
            block = np.multiply(source[a:b], scale_row, out=out[a:b])
            block += shift_row
            if res is not None:
                block += res[a:b]
            if relu:
                np.maximum(block, block.dtype.type(0), out=block)
            else:                                              # while the block is in cache
                gelu_blocks(block.reshape(-1), t[a:b].reshape(-1) if keep else t, result[a:b].reshape(-1))
        if relu:
            act_saved, result = out, out
        else:
            act_saved = (out, t, workspace) if keep else None
        saved = (kept, recentre, invstd, m, gamma, reducer, activation, act_saved, res is not None, spans, workspace,
                 offset)
        return result.reshape(x.shape), (saved if keep else None)

    @staticmethod
    def backward(saved, dout, grads_out=None, reuse: bool = False):
        kept, recentre, invstd, m, gamma, reducer, activation, act_saved, has_residual, spans, workspace, offset = saved
        c = gamma.shape[0]
        shape = dout.shape
        contiguous = np.ascontiguousarray(dout)
        g = rows(contiguous)
        width = g.shape[1]
        if activation == "relu":                               # d: dout's memory (if reused) or new
            d = g if reuse or contiguous is not dout else pooled(workspace, g.shape, g.dtype)
            mask = scratch(workspace, "relu mask", (spans[0][1] - spans[0][0], width), np.bool_)
            for a, b in spans:
                np.multiply(g[a:b], np.greater(act_saved[a:b], 0, out=mask[:b - a]), out=d[a:b])
        else:
            d = GeluNumpy.backward(act_saved, g, out=g if reuse or contiguous is not dout else
                                   scratch(workspace, "gelu gradient", g.shape, g.dtype))[0]
        centred = kept if recentre is None else kept - tile(recentre, width)
        dgamma, dbeta = gradient_sums(d, centred, invstd, c, grads_out, offset)   # this part's share
        grads = {"gamma": dgamma, "beta": dbeta}
        dres = d.reshape(shape) if has_residual else None
        if m is None:                                          # eval mode: the statistics are constants
            dx = np.multiply(d, tile(gamma * invstd, width), out=None if has_residual else d)
            return _result(dx.reshape(shape), dres, has_residual), grads
        dbeta_all, dgamma_all = reducer.sum(dbeta, dgamma)     # over the whole batch
        dx = kept if reuse else pooled(workspace, kept.shape, kept.dtype)
        factors = input_gradient_rows(invstd, gamma, dgamma_all, dbeta_all, m, width, offset)
        for a, b in spans:                                     # batch norm's own steps, a block at a time
            input_gradient_into(dx[a:b], d[a:b], kept[a:b], factors)
        return _result(dx.reshape(shape), dres, has_residual), grads


@batch_norm_act.implementation(FUSED)
class BatchNormActFused:
    """``bn_stats`` and ``bn_apply_act`` forward, ``bn_grad_sums_act`` and ``bn_dx_act`` backward
    (:mod:`cifarnet.kernels.batchnorm_act`); one device's batch only, as the fused batch norm. With a
    ``workspace`` its output and gradients are pooled arrays, its statistics its own.

    ``columns=(cols, kh, kw, pad)`` (no residual; the training plan gives it when a stride-1 "same"
    convolution alone reads the output): the output pass also writes the column matrix ``cols``
    ``(N*H*W, KH*KW*C)`` of that convolution, in the one launch of ``bn_act_columns``
    (:mod:`cifarnet.kernels.bn_columns`), and the convolution skips its ``im2col``."""

    takes_workspace = True
    makes_columns = True

    @staticmethod
    def forward(x, gamma, beta, running_mean, running_var, *, activation: str, training: bool,
                momentum: float = 0.1, eps: float = 1e-5, reducer=LOCAL, residual=None, keep: bool = True,
                overwrite_input: bool = False, workspace=None, columns=None):
        _check_activation(activation, residual)
        if columns is not None and residual is not None:
            raise ValueError("batch_norm_act: the column matrix is written for an output without a residual")
        x, mean, invstd, rows = fused_statistics(x, gamma, running_mean, running_var, training, momentum, eps,
                                                 reducer, workspace)
        xp = array_module(x)
        c = gamma.shape[0]
        code = kernels.RELU if activation == "relu" else kernels.GELU
        res = x if residual is None else xp.ascontiguousarray(residual)
        out = pooled(workspace, x.shape, x.dtype, xp)
        if columns is None:
            kernels.bn_apply_act(xp, x.size, x, mean, invstd, gamma, beta, res, out, x.size, c, code,
                                 residual is not None)
        else:
            cols, kh, kw, pad = columns
            if x.ndim != 4:
                raise ValueError(f"batch_norm_act: columns are for images (N, H, W, C), got {x.shape}")
            n, h, w, _ = x.shape
            if cols.shape != (n * h * w, kh * kw * c) or 2 * pad != kh - 1 or kh != kw:
                raise ValueError(f"batch_norm_act: columns {cols.shape} for a {kh}x{kw} kernel, padding {pad}, "
                                 f"do not fit a stride-1 'same' convolution of input {x.shape}")
            bn_act_columns(xp, cols.size, x, mean, invstd, gamma, beta, out, cols, n, h, w, c, kh, kw, pad, code)
        return out, ((x, out, mean, invstd, gamma, beta, training, rows, code, residual is not None, workspace)
                     if keep else None)

    @staticmethod
    def backward(saved, dout, grads_out=None, reuse: bool = False):
        x, out, mean, invstd, gamma, beta, training, rows, code, has_residual, workspace = saved
        xp = array_module(dout)
        dout = xp.ascontiguousarray(dout)
        c = gamma.shape[0]
        dbeta, dgamma = target_or_new(grads_out, "beta", dout, c), target_or_new(grads_out, "gamma", dout, c)
        kernels.bn_grad_sums_act(xp, c, dout, x, out, mean, invstd, gamma, beta, dbeta, dgamma, rows, c, code)
        dx = pooled(workspace, dout.shape, dout.dtype, xp)
        dres = pooled(workspace, dout.shape, dout.dtype, xp) if has_residual else dx
        kernels.bn_dx_act(xp, dx.size, dout, x, out, mean, invstd, gamma, beta, dbeta, dgamma, dx, dres, dx.size, c,
                          rows, code, training, has_residual)
        return _result(dx, dres, has_residual), {"gamma": dgamma, "beta": dbeta}
