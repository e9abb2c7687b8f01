"""What a training step reports to the host, reduced on the device in one launch (the reference
takes nine): ``out = [loss, correct, finite]`` in float64, read back in one transfer.

``step_summary`` runs one block: its threads count the rows whose first largest logit is at the
label and look at every gradient for a value that is not finite (a strided share each), the block
adds the counts in a tree (shared memory, no atomics). A logit row holding NaN counts as wrong.
"""
from __future__ import annotations

import numpy as np

from .base import THREADS, Kernel

STEP_SUMMARY = r'''
extern "C" __global__ void step_summary(const real* loss, const real* logits, const long* labels,
                                        const real* grads, double* out, long n, long k, long size) {
    __shared__ double correct[''' + str(THREADS) + r'''];
    __shared__ double bad[''' + str(THREADS) + r'''];
    double hits = 0, infinite = 0;
    for (long row = threadIdx.x; row < n; row += blockDim.x) {
        const real* z = logits + row * k;
        long best = 0;
        bool nan = z[0] != z[0];
        for (long j = 1; j < k; ++j) {                                    /* the first largest, as argmax */
            if (z[j] != z[j]) nan = true;
            else if (z[j] > z[best]) best = j;
        }
        hits += (!nan && best == labels[row]) ? 1.0 : 0.0;
    }
    for (long i = threadIdx.x; i < size; i += blockDim.x) {
        real g = grads[i];
        infinite += (g - g != (real)0) ? 1.0 : 0.0;                      /* NaN or infinity */
    }
    correct[threadIdx.x] = hits;
    bad[threadIdx.x] = infinite;
    __syncthreads();
    for (long s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            correct[threadIdx.x] += correct[threadIdx.x + s];
            bad[threadIdx.x] += bad[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[0] = (double)loss[0];
        out[1] = correct[0];
        out[2] = bad[0] == 0.0 ? 1.0 : 0.0;
    }
}
'''


def step_summary_twin(loss, logits, labels, grads, out, n, k, size) -> None:
    rows = logits.reshape(n, k)
    valid = ~np.isnan(rows).any(axis=1)
    out[0] = float(loss.reshape(-1)[0])
    out[1] = float(((rows.argmax(axis=1) == labels) & valid).sum())
    out[2] = float(np.isfinite(grads).all())


step_summary = Kernel("step_summary", STEP_SUMMARY, step_summary_twin, per_block=True)
