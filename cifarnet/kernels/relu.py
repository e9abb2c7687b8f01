"""ReLU forward and backward, one launch each (the reference takes three and one)."""
from __future__ import annotations

import numpy as np

from .base import Kernel

RELU_FORWARD = r'''
extern "C" __global__ void relu_forward(const real* x, real* out, long size) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < size; i += (long)blockDim.x * gridDim.x)
        out[i] = x[i] > (real)0 ? x[i] : (x[i] != x[i] ? x[i] : (real)0);     /* NaN passes through */
}
'''


def relu_forward_twin(x, out, size) -> None:
    np.maximum(x, x.dtype.type(0), out=out)


relu_forward = Kernel("relu_forward", RELU_FORWARD, relu_forward_twin)

RELU_BACKWARD = r'''
extern "C" __global__ void relu_backward(const real* out, const real* dout, real* dx, long size) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < size; i += (long)blockDim.x * gridDim.x)
        dx[i] = dout[i] * (real)(out[i] > (real)0);              /* NaN * 0 stays NaN, as in the reference */
}
'''


def relu_backward_twin(out, dout, dx, size) -> None:
    np.multiply(dout, out > 0, out=dx)


relu_backward = Kernel("relu_backward", RELU_BACKWARD, relu_backward_twin)
