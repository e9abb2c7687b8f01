"""Batch norm in training: four launches (the reference takes about thirty).

A batch ``x`` of ``rows`` values per channel is viewed as ``(rows, C)`` (NHWC's last axis, contiguous).
``bn_stats`` and ``bn_grad_sums`` run one block per channel: each thread sums a strided part of the
channel's rows, then the block adds the threads' sums in a tree (shared memory), so the result does
not depend on scheduling (no atomics): the same on every run. The statistics take two passes (the
mean, then the squared deviations from it), as the reference does, for accuracy.
"""
from __future__ import annotations

import numpy as np

from .base import THREADS, Kernel

_BLOCK_SUM = r'''
/* the block's threads' values summed into part[0] (blockDim.x a power of two, at most THREADS) */
#define BLOCK_SUM(part, value)                                                          \
    part[threadIdx.x] = (value);                                                        \
    __syncthreads();                                                                    \
    for (long k = blockDim.x / 2; k > 0; k >>= 1) {                                     \
        if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];                \
        __syncthreads();                                                                \
    }
'''.replace("THREADS", str(THREADS))

BN_STATS = _BLOCK_SUM + r'''
extern "C" __global__ void bn_stats(const real* x, real* mean, real* invstd, real* running_mean,
                                    real* running_var, long rows, long c, real eps, real momentum,
                                    long update) {
    __shared__ real part[''' + str(THREADS) + r'''];
    long ch = blockIdx.x;
    real s = 0;
    for (long r = threadIdx.x; r < rows; r += blockDim.x) s += x[r * c + ch];
    BLOCK_SUM(part, s)
    real mu = part[0] / (real)rows;
    __syncthreads();
    real q = 0;
    for (long r = threadIdx.x; r < rows; r += blockDim.x) { real d = x[r * c + ch] - mu; q += d * d; }
    BLOCK_SUM(part, q)
    if (threadIdx.x == 0) {
        real var = part[0] / (real)rows;                                   /* biased, for normalising */
        mean[ch] = mu;
        invstd[ch] = (real)1 / sqrt(var + eps);
        if (update) {                                                /* unbiased, for the running estimate */
            running_mean[ch] = ((real)1 - momentum) * running_mean[ch] + momentum * mu;
            running_var[ch] = ((real)1 - momentum) * running_var[ch] + momentum * ((real)rows / (real)(rows - 1)) * var;
        }
    }
}
'''


def bn_stats_twin(x, mean, invstd, running_mean, running_var, rows, c, eps, momentum, update) -> None:
    r = x.reshape(rows, c)
    mu = r.sum(axis=0) / r.dtype.type(rows)
    var = ((r - mu) ** 2).sum(axis=0) / r.dtype.type(rows)
    mean[...] = mu
    invstd[...] = 1 / np.sqrt(var + r.dtype.type(eps))
    if update:
        t = r.dtype.type
        running_mean[...] = (t(1) - t(momentum)) * running_mean + t(momentum) * mu
        running_var[...] = (t(1) - t(momentum)) * running_var + t(momentum) * (t(rows) / t(rows - 1)) * var


bn_stats = Kernel("bn_stats", BN_STATS, bn_stats_twin, per_block=True)

BN_APPLY = r'''
extern "C" __global__ void bn_apply(const real* x, const real* mean, const real* invstd, const real* gamma,
                                    const real* beta, real* out, long size, long c) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < size; i += (long)blockDim.x * gridDim.x) {
        long ch = i % c;
        out[i] = (x[i] - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
    }
}
'''


def bn_apply_twin(x, mean, invstd, gamma, beta, out, size, c) -> None:
    r = x.reshape(-1, c)
    out.reshape(-1, c)[...] = (r - mean) * invstd * gamma + beta


bn_apply = Kernel("bn_apply", BN_APPLY, bn_apply_twin)

BN_GRAD_SUMS = _BLOCK_SUM + r'''
extern "C" __global__ void bn_grad_sums(const real* dout, const real* x, const real* mean, const real* invstd,
                                        real* dbeta, real* dgamma, long rows, long c) {
    __shared__ real part[''' + str(THREADS) + r'''];
    long ch = blockIdx.x;
    real s = 0, p = 0;
    for (long r = threadIdx.x; r < rows; r += blockDim.x) {
        real d = dout[r * c + ch];
        s += d;
        p += d * (x[r * c + ch] - mean[ch]);
    }
    BLOCK_SUM(part, s)
    if (threadIdx.x == 0) dbeta[ch] = part[0];
    __syncthreads();
    BLOCK_SUM(part, p)
    if (threadIdx.x == 0) dgamma[ch] = part[0] * invstd[ch];
}
'''


def bn_grad_sums_twin(dout, x, mean, invstd, dbeta, dgamma, rows, c) -> None:
    d, r = dout.reshape(rows, c), x.reshape(rows, c)
    dbeta[...] = d.sum(axis=0)
    dgamma[...] = (d * (r - mean)).sum(axis=0) * invstd


bn_grad_sums = Kernel("bn_grad_sums", BN_GRAD_SUMS, bn_grad_sums_twin, per_block=True)

BN_DX = r'''
extern "C" __global__ void bn_dx(const real* dout, const real* x, const real* mean, const real* invstd,
                                 const real* gamma, const real* dbeta, const real* dgamma, real* dx, long size, long c,
                                 long rows) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < size; i += (long)blockDim.x * gridDim.x) {
        long ch = i % c;
        real xhat = (x[i] - mean[ch]) * invstd[ch];
        dx[i] = gamma[ch] * invstd[ch] * (dout[i] - dbeta[ch] / (real)rows - xhat * (dgamma[ch] / (real)rows));
    }
}
'''


def bn_dx_twin(dout, x, mean, invstd, gamma, dbeta, dgamma, dx, size, c, rows) -> None:
    d, r = dout.reshape(-1, c), x.reshape(-1, c)
    t = r.dtype.type
    xhat = (r - mean) * invstd
    dx.reshape(-1, c)[...] = gamma * invstd * (d - dbeta / t(rows) - xhat * (dgamma / t(rows)))


bn_dx = Kernel("bn_dx", BN_DX, bn_dx_twin)
