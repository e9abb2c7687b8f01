"""Softmax cross-entropy in one launch (the reference takes sixteen, and two more backward).

``softmax_xent`` runs one block: each thread takes every ``blockDim``-th row of the ``(N, K)``
logits, computes its log-softmax through log-sum-exp (the row's maximum subtracted, as the
reference does), its loss against the smoothed target ``(1 - eps) * onehot + eps / K`` and its
gradient ``(softmax - target) / N``; the block adds the rows' losses in a tree (shared memory, no
atomics) into the mean. The gradient of the mean loss is then ready with the forward pass: the
backward launches nothing unless it is scaled.
"""
from __future__ import annotations

import numpy as np

from .base import THREADS, Kernel
from .batchnorm import _BLOCK_SUM

SOFTMAX_XENT = _BLOCK_SUM + r'''
extern "C" __global__ void softmax_xent(const real* logits, const long* labels, real* dlogits, real* loss,
                                        long n, long k, real smoothing) {
    __shared__ real part[''' + str(THREADS) + r'''];
    real total = 0;
    for (long row = threadIdx.x; row < n; row += blockDim.x) {
        const real* z = logits + row * k;
        real top = z[0];
        for (long j = 1; j < k; ++j) top = z[j] > top ? z[j] : top;
        real s = 0;
        for (long j = 0; j < k; ++j) s += exp(z[j] - top);
        real log_s = log(s);
        long label = labels[row];
        real row_loss = 0;
        for (long j = 0; j < k; ++j) {
            real log_p = (z[j] - top) - log_s;
            real t = smoothing / (real)k + (j == label ? (real)1 - smoothing : (real)0);
            row_loss += t * log_p;
            dlogits[row * k + j] = (exp(log_p) - t) / (real)n;
        }
        total -= row_loss;
    }
    BLOCK_SUM(part, total)
    if (threadIdx.x == 0) loss[0] = part[0] / (real)n;
}
'''


def softmax_xent_twin(logits, labels, dlogits, loss, n, k, smoothing) -> None:
    """The reference's formulas, row by row in NumPy: ``loss[0]`` the mean loss, ``dlogits`` its gradient."""
    t = logits.dtype.type
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    target = np.full((n, k), t(smoothing) / t(k), dtype=logits.dtype)
    target[np.arange(n), labels] += t(1) - t(smoothing)
    loss[0] = -(target * log_p).sum(axis=1).sum() / t(n)
    dlogits[...] = (np.exp(log_p) - target) / t(n)


softmax_xent = Kernel("softmax_xent", SOFTMAX_XENT, softmax_xent_twin, per_block=True)
