"""Batch norm followed by an activation (and, before a ReLU, a residual addition), in training:
two launches forward (``bn_stats`` of :mod:`.batchnorm`, then ``bn_apply_act``) and two backward
(``bn_grad_sums_act``, ``bn_dx_act``), where batch norm, the addition and the activation apart
take 2 + 1 + 1 forward and 2 + 1 backward.

The activation's derivative is taken where it is needed, not stored: ReLU's from the output
(``out > 0``), GELU's from the batch norm's output recomputed from ``x`` (GELU takes no residual).
``activation``: 1 ReLU, 2 GELU (tanh form, :mod:`cifarnet.functional.activation`).
``bn_dx_act`` also writes the gradient of the residual (``dres``, the gradient after the ReLU) when
``has_residual``; ``training`` 0 (eval mode: the running statistics, no batch terms) or 1.
"""
from __future__ import annotations

import numpy as np

from .base import THREADS, Kernel
from .batchnorm import _BLOCK_SUM
from .gelu_form import GELU_A, GELU_C

RELU, GELU = 1, 2

_SLOPE = r'''
/* dout times the activation's slope at element i of channel ch */
__device__ __forceinline__ real through_activation(real d, const real* x, const real* out, const real* mean,
                                                   const real* invstd, const real* gamma, const real* beta,
                                                   long i, long ch, long activation) {
    if (activation == 1) return d * (real)(out[i] > (real)0);
    real y = (x[i] - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
    real t = tanh((real)GELU_C * (y + (real)GELU_A * y * y * y));
    return d * ((real)0.5 * ((real)1 + t) + (real)0.5 * y * ((real)1 - t * t) * (real)GELU_C
                * ((real)1 + (real)3 * (real)GELU_A * y * y));
}
'''.replace("GELU_C", repr(GELU_C)).replace("GELU_A", repr(GELU_A))

BN_APPLY_ACT = r'''
extern "C" __global__ void bn_apply_act(const real* x, const real* mean, const real* invstd, const real* gamma,
                                        const real* beta, const real* residual, real* out, long size, long c,
                                        long activation, long has_residual) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < size; i += (long)blockDim.x * gridDim.x) {
        long ch = i % c;
        real y = (x[i] - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
        if (has_residual) y += residual[i];
        if (activation == 1) {
            out[i] = y > (real)0 ? y : (y != y ? y : (real)0);           /* NaN passes through */
        } else {
            real t = tanh((real)GELU_C * (y + (real)GELU_A * y * y * y));
            out[i] = (real)0.5 * y * ((real)1 + t);
        }
    }
}
'''.replace("GELU_C", repr(GELU_C)).replace("GELU_A", repr(GELU_A))


def _bn_out(x, mean, invstd, gamma, beta, c):
    return (x.reshape(-1, c) - mean) * invstd * gamma + beta


def _gelu(y):
    t = np.tanh(y.dtype.type(GELU_C) * (y + y.dtype.type(GELU_A) * y * y * y))
    return y.dtype.type(0.5) * y * (1 + t)


def _slope(dout, x, out, mean, invstd, gamma, beta, c, activation):
    """``dout`` through the activation's derivative, ``(rows, C)``."""
    d = dout.reshape(-1, c)
    if activation == RELU:
        return d * (out.reshape(-1, c) > 0)
    y = _bn_out(x, mean, invstd, gamma, beta, c)
    t_ = y.dtype.type
    t = np.tanh(t_(GELU_C) * (y + t_(GELU_A) * y * y * y))
    return d * (t_(0.5) * (1 + t) + t_(0.5) * y * (1 - t * t) * t_(GELU_C) * (1 + t_(3 * GELU_A) * y * y))


def bn_apply_act_twin(x, mean, invstd, gamma, beta, residual, out, size, c, activation, has_residual) -> None:
    y = _bn_out(x, mean, invstd, gamma, beta, c)
    if has_residual:
        y = y + residual.reshape(-1, c)
    out.reshape(-1, c)[...] = np.maximum(y, y.dtype.type(0)) if activation == RELU else _gelu(y)


bn_apply_act = Kernel("bn_apply_act", BN_APPLY_ACT, bn_apply_act_twin)

BN_GRAD_SUMS_ACT = _BLOCK_SUM + _SLOPE + r'''
extern "C" __global__ void bn_grad_sums_act(const real* dout, const real* x, const real* out, const real* mean,
                                            const real* invstd, const real* gamma, const real* beta, real* dbeta,
                                            real* dgamma, long rows, long c, long activation) {
    __shared__ real part[''' + str(THREADS) + r'''];
    long ch = blockIdx.x;
    real s = 0, p = 0;
    for (long r = threadIdx.x; r < rows; r += blockDim.x) {
        long i = r * c + ch;
        real d = through_activation(dout[i], x, out, mean, invstd, gamma, beta, i, ch, activation);
        s += d;
        p += d * (x[i] - mean[ch]);
    }
    BLOCK_SUM(part, s)
    if (threadIdx.x == 0) dbeta[ch] = part[0];
    __syncthreads();
    BLOCK_SUM(part, p)
    if (threadIdx.x == 0) dgamma[ch] = part[0] * invstd[ch];
}
'''


def bn_grad_sums_act_twin(dout, x, out, mean, invstd, gamma, beta, dbeta, dgamma, rows, c, activation) -> None:
    d = _slope(dout, x, out, mean, invstd, gamma, beta, c, activation)
    dbeta[...] = d.sum(axis=0)
    dgamma[...] = (d * (x.reshape(rows, c) - mean)).sum(axis=0) * invstd


bn_grad_sums_act = Kernel("bn_grad_sums_act", BN_GRAD_SUMS_ACT, bn_grad_sums_act_twin, per_block=True)

BN_DX_ACT = _SLOPE + r'''
extern "C" __global__ void bn_dx_act(const real* dout, const real* x, const real* out, const real* mean,
                                     const real* invstd, const real* gamma, const real* beta, const real* dbeta,
                                     const real* dgamma, real* dx, real* dres, long size, long c, long rows,
                                     long activation, long training, long has_residual) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < size; i += (long)blockDim.x * gridDim.x) {
        long ch = i % c;
        real d = through_activation(dout[i], x, out, mean, invstd, gamma, beta, i, ch, activation);
        if (has_residual) dres[i] = d;
        if (training) {
            real xhat = (x[i] - mean[ch]) * invstd[ch];
            dx[i] = gamma[ch] * invstd[ch] * (d - dbeta[ch] / (real)rows - xhat * (dgamma[ch] / (real)rows));
        } else {
            dx[i] = gamma[ch] * invstd[ch] * d;
        }
    }
}
'''


def bn_dx_act_twin(dout, x, out, mean, invstd, gamma, beta, dbeta, dgamma, dx, dres, size, c, rows, activation,
                   training, has_residual) -> None:
    d = _slope(dout, x, out, mean, invstd, gamma, beta, c, activation)
    if has_residual:
        dres.reshape(-1, c)[...] = d
    t = d.dtype.type
    if training:
        xhat = (x.reshape(-1, c) - mean) * invstd
        dx.reshape(-1, c)[...] = gamma * invstd * (d - dbeta / t(rows) - xhat * (dgamma / t(rows)))
    else:
        dx.reshape(-1, c)[...] = gamma * invstd * d


bn_dx_act = Kernel("bn_dx_act", BN_DX_ACT, bn_dx_act_twin)
