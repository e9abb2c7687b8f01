"""The SGD update of the whole flat store in one launch (the reference takes six).

``sgd_step``, one thread per element, in the reference's order: ``g = grad + wd * p`` (``wd`` per
element from ``decay`` when ``per_element``, else the number ``wd``); with momentum ``v = g`` on the
first step, else ``v = momentum * v + g``; ``p -= lr * (g + momentum * v)`` with Nesterov, else
``p -= lr * v`` (``lr * g`` without momentum, when ``v`` is not read).
"""
from __future__ import annotations

from .base import Kernel

SGD_STEP = r'''
extern "C" __global__ void sgd_step(real* p, const real* grad, real* v, const real* decay, real wd,
                                    long per_element, real lr, real momentum, long nesterov, long first,
                                    long size) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < size; i += (long)blockDim.x * gridDim.x) {
        real w = per_element ? decay[i] : wd;
        real g = grad[i] + w * p[i];
        if (momentum != (real)0) {
            real vel = first ? g : v[i] * momentum + g;
            v[i] = vel;
            g = nesterov ? g + momentum * vel : vel;
        }
        p[i] -= lr * g;
    }
}
'''


def sgd_step_twin(p, grad, v, decay, wd, per_element, lr, momentum, nesterov, first, size) -> None:
    t = p.dtype.type
    g = grad + (decay if per_element else t(wd)) * p
    if momentum:
        if first:
            v[...] = g
        else:
            v *= t(momentum)
            v += g
        g = g + t(momentum) * v if nesterov else v
    p -= t(lr) * g


sgd_step = Kernel("sgd_step", SGD_STEP, sgd_step_twin)
