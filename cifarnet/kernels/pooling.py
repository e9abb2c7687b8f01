"""Global average pooling in one launch each way (the reference takes two each).

``gap_forward``: one thread per ``(n, c)`` output, the mean of its channel over the ``hw`` pixels
of image ``n``, added in pixel order. ``gap_backward``: one thread per input element, ``dout[n, c]
/ hw``. Shapes: x, dx ``(N, HW, C)``; out, dout ``(N, C)``.
"""
from __future__ import annotations

import numpy as np

from .base import Kernel

GAP_FORWARD = r'''
extern "C" __global__ void gap_forward(const real* x, real* out, long n, long hw, long c) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n * c; i += (long)blockDim.x * gridDim.x) {
        long img = i / c, ch = i % c;
        const real* p = x + img * hw * c + ch;
        real s = 0;
        for (long q = 0; q < hw; ++q) s += p[q * c];
        out[i] = s / (real)hw;
    }
}
'''


def gap_forward_twin(x, out, n, hw, c) -> None:
    s = np.zeros((n, c), dtype=out.dtype)
    for q in range(hw):                                   # in pixel order, as the kernel adds
        s += x.reshape(n, hw, c)[:, q]
    out.reshape(n, c)[...] = s / out.dtype.type(hw)


gap_forward = Kernel("gap_forward", GAP_FORWARD, gap_forward_twin)

GAP_BACKWARD = r'''
extern "C" __global__ void gap_backward(const real* dout, real* dx, long n, long hw, long c) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n * hw * c; i += (long)blockDim.x * gridDim.x)
        dx[i] = dout[(i / (hw * c)) * c + i % c] / (real)hw;
}
'''


def gap_backward_twin(dout, dx, n, hw, c) -> None:
    dx.reshape(n, hw, c)[...] = (dout.reshape(n, 1, c) / dout.dtype.type(hw))


gap_backward = Kernel("gap_backward", GAP_BACKWARD, gap_backward_twin)
