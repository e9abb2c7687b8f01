"""The ``"cupy-fused"`` variants: convolution, batch norm and ReLU on the fused kernels of
:mod:`cifarnet.kernels` (see :mod:`cifarnet.functional.dispatch` for when they run).

Launches per call (counted by :mod:`cifarnet.counting`), against the reference's:

- ``conv2d``: forward im2col + one product (the reference pads first: one more); backward the
  weight product, the column-gradient product and col2im (the reference scatters the columns back
  in KH*KW additions, each an add and a copy: 2 + 2*KH*KW), which with ``dx_add`` adds onto the
  gradient given (a residual block's input: the addition the plan would launch is gone);
- ``batch_norm`` in training: forward ``bn_stats`` (both statistics and the running update) and
  ``bn_apply``; backward ``bn_grad_sums`` and ``bn_dx`` (the reference: about 19 and 10);
- ``relu``: one each way (the reference: three and one).

Each variant runs on NumPy arrays too (the kernels' twins), so the variant harness checks it on
the CPU. Batch norm's statistics stay within one device's batch: a ``reducer`` that reaches
across parts or processes is refused (the CuPy path splits nothing).

Given a ``workspace`` (:mod:`cifarnet.arrays.workspace`: ``trainer.static_buffers``), each takes its
output and input gradient as pooled arrays, what it keeps (the convolution's columns, batch norm's
statistics) as its own and the column gradient as a scratch array, at the same addresses every
step (what a CUDA graph needs); the launches are the same.
"""
from __future__ import annotations

import numpy as np

from ..arrays.workspace import pooled, scratch, take
from ..backend import array_module
from ..comm import LOCAL
from ..errors import InvalidValue
from ..kernels import batchnorm as bn
from ..kernels.relu import relu_backward, relu_forward
from ..kernels.windows import col2im, im2col
from .activation import relu
from .batchnorm import _check, batch_norm
from .conv import _inference_only, conv2d
from .destination import product_into, sum_into, target, target_or_new
from .dispatch import FUSED


@conv2d.implementation(FUSED)
class Conv2dFused:
    """im2col and one product forward; ``columns``, if given, is that column matrix of ``x`` made
    already (by the batch norm before it, :class:`cifarnet.functional.batchnorm_act.BatchNormActFused`),
    and im2col is skipped. The columns are kept for the weight gradient."""

    takes_workspace = True
    takes_columns = True

    @staticmethod
    def forward(x, W, b=None, *, stride: int = 1, padding: int = 0, residual=None, relu: bool = False,
                keep: bool = True, workspace=None, columns=None):
        _inference_only(keep, residual, relu)
        xp = array_module(x)
        x = xp.ascontiguousarray(x)
        n, h, w, c = x.shape
        kh, kw, _, c_out = W.shape
        ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
        if columns is not None:
            if columns.shape != (n * ho * wo, kh * kw * c):
                raise ValueError(f"conv2d: columns of shape {columns.shape}, the input's are "
                                 f"{(n * ho * wo, kh * kw * c)}")
            cols = columns
        else:
            cols = take(workspace, "columns", (n * ho * wo, kh * kw * c), x.dtype, xp)
            im2col(xp, cols.size, x, cols, n, h, w, c, kh, kw, stride, padding, ho, wo)
        out = pooled(workspace, (n, ho, wo, c_out), np.result_type(x.dtype, W.dtype), xp)
        xp.matmul(cols, W.reshape(-1, c_out), out=out.reshape(-1, c_out))
        if b is not None:
            out += b
        if residual is not None:
            out += residual
        if relu:
            relu_forward(xp, out.size, out, out, out.size)
        return out, ((cols, x.shape, W, b is not None, stride, padding, workspace) if keep else None)

    @staticmethod
    def backward(saved, dout, need_dx: bool = True, grads_out=None, dx_add=None):
        cols, (n, h, w, c), W, has_bias, stride, padding, workspace = saved
        xp = array_module(dout)
        kh, kw, _, c_out = W.shape
        _, ho, wo, _ = dout.shape
        d = xp.ascontiguousarray(dout).reshape(-1, c_out)                     # N*Ho*Wo, C_out
        grads = {"W": product_into(cols.T, d, target(grads_out, "W"), W.shape)}
        if has_bias:
            grads["b"] = sum_into(d, 0, target(grads_out, "b"))
        if not need_dx:
            return None, grads
        dcols = scratch(workspace, "column gradient", (d.shape[0], kh * kw * c), dout.dtype, xp)
        xp.matmul(d, W.reshape(-1, c_out).T, out=dcols)                        # N*Ho*Wo, KH*KW*C_in
        add = dx_add is not None                    # col2im adds onto it: no separate addition
        if add and (dx_add.shape != (n, h, w, c) or dx_add.dtype != dout.dtype or not dx_add.flags.c_contiguous):
            raise ValueError(f"conv2d: dx_add must be a C-contiguous {dout.dtype} array of the input's shape "
                             f"{(n, h, w, c)}, got {dx_add.dtype} {dx_add.shape}")
        dx = dx_add if add else pooled(workspace, (n, h, w, c), dout.dtype, xp)
        col2im(xp, dx.size, dcols, dx, n, h, w, c, kh, kw, stride, padding, ho, wo, add)
        return dx, grads


def fused_statistics(x, gamma, running_mean, running_var, training: bool, momentum: float, eps: float, reducer,
                     workspace=None):
    """``(x, mean, invstd, rows)`` for the fused batch norms: ``x`` contiguous, the batch's mean and
    ``1/sqrt(var + eps)`` per channel (``bn_stats``, which also updates the running statistics) in
    training, the running ones in eval mode, and the values per channel. A ``reducer`` that reaches
    across threads or processes is refused (the fused kernels see one device's batch). The
    statistics are ``workspace``'s own arrays if given."""
    _check(x, gamma)
    if reducer is not LOCAL:
        raise InvalidValue("fused batch norm normalises one device's batch; a batch split between threads or "
                           "processes takes backend.kernels=reference")
    xp = array_module(x)
    x = xp.ascontiguousarray(x)
    c = gamma.shape[0]
    rows = x.size // c
    if not training:
        return x, running_mean, 1.0 / xp.sqrt(running_var + eps), rows
    _check(x, gamma, rows)
    mean, invstd = take(workspace, "mean", (c,), x.dtype, xp), take(workspace, "invstd", (c,), x.dtype, xp)
    bn.bn_stats(xp, c, x, mean, invstd, running_mean, running_var, rows, c, float(eps), float(momentum), True)
    return x, mean, invstd, rows


@batch_norm.implementation(FUSED)
class BatchNormFused:
    takes_workspace = True

    @staticmethod
    def forward(x, gamma, beta, running_mean, running_var, *, training: bool, momentum: float = 0.1,
                eps: float = 1e-5, reducer=LOCAL, keep: bool = True, workspace=None):
        x, mean, invstd, rows = fused_statistics(x, gamma, running_mean, running_var, training, momentum, eps,
                                                 reducer, workspace)
        xp = array_module(x)
        c = gamma.shape[0]
        out = pooled(workspace, x.shape, x.dtype, xp)
        bn.bn_apply(xp, x.size, x, mean, invstd, gamma, beta, out, x.size, c)
        return out, ((x, mean, invstd, gamma, training, rows, workspace) if keep else None)

    @staticmethod
    def backward(saved, dout, grads_out=None):
        x, mean, invstd, gamma, training, rows, workspace = saved
        xp = array_module(dout)
        dout = xp.ascontiguousarray(dout)
        c = gamma.shape[0]
        dbeta, dgamma = target_or_new(grads_out, "beta", dout, c), target_or_new(grads_out, "gamma", dout, c)
        bn.bn_grad_sums(xp, c, dout, x, mean, invstd, dbeta, dgamma, rows, c)
        if not training:
            return dout * (gamma * invstd), {"gamma": dgamma, "beta": dbeta}
        dx = pooled(workspace, dout.shape, dout.dtype, xp)
        bn.bn_dx(xp, dx.size, dout, x, mean, invstd, gamma, dbeta, dgamma, dx, dx.size, c, rows)
        return dx, {"gamma": dgamma, "beta": dbeta}


@relu.implementation(FUSED)
class ReluFused:
    @staticmethod
    def forward(x, *, keep: bool = True):
        xp = array_module(x)
        x = xp.ascontiguousarray(x)
        out = xp.empty_like(x)
        relu_forward(xp, x.size, x, out, x.size)
        return out, (out if keep else None)

    @staticmethod
    def backward(out, dout):
        xp = array_module(dout)
        dout = xp.ascontiguousarray(dout)
        dx = xp.empty_like(dout)
        relu_backward(xp, dx.size, out, dout, dx, dx.size)
        return dx, {}
