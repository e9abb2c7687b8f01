"""The ``"cupy-fused"`` variants of a step's small ops: the loss, global average pooling, the SGD
update and the step's summary, each one kernel of :mod:`cifarnet.kernels` (see
:mod:`cifarnet.functional.dispatch` for when they run; :mod:`cifarnet.functional.fused` has the
convolution's and batch norm's).

Launches per call (counted by :mod:`cifarnet.counting`), against the reference's:

- ``softmax_cross_entropy``: forward 1 (16), backward 0 (2): the forward writes the gradient of
  the mean loss, which the backward returns (one multiplication when it is scaled);
- ``global_avg_pool``: 1 each way (2 and 2);
- ``sgd_update``: 1 for the whole flat store (6 with momentum and weight decay);
- ``step_summary``: 1 (9).

Each runs on NumPy arrays too (the kernels' twins), so the variant harness checks it on the CPU.
"""
from __future__ import annotations

import numpy as np

from ..arrays.workspace import pooled
from ..backend import array_module
from ..kernels.loss import softmax_xent
from ..kernels.pooling import gap_backward, gap_forward
from ..kernels.summary import step_summary as summary_kernel
from ..kernels.update import sgd_step
from .dispatch import FUSED
from .loss import check_labels, softmax_cross_entropy
from .optim import SGDReference, sgd_update
from .pooling import global_avg_pool
from .summary import step_summary


@softmax_cross_entropy.implementation(FUSED)
class SoftmaxCrossEntropyFused:
    @staticmethod
    def forward(logits, labels, *, label_smoothing: float = 0.0, keep: bool = True):
        xp = array_module(logits)
        n, k = check_labels(logits, labels)
        logits = xp.ascontiguousarray(logits)
        loss, dlogits = xp.empty(1, dtype=logits.dtype), xp.empty_like(logits)
        softmax_xent(xp, 1, logits, labels.astype(np.int64, copy=False), dlogits, loss, n, k,
                     float(label_smoothing))
        return loss.reshape(()), (dlogits if keep else None)

    @staticmethod
    def backward(dlogits, dloss=None):
        return (dlogits if dloss is None else dlogits * dloss), {}


@global_avg_pool.implementation(FUSED)
class GlobalAvgPoolFused:
    """With a ``workspace`` (:mod:`cifarnet.arrays.workspace`) the output and the input gradient are
    its pooled arrays, the same every step."""

    takes_workspace = True

    @staticmethod
    def forward(x, *, keep: bool = True, workspace=None):
        if x.ndim != 4:
            raise ValueError(f"global average pooling expects (N, H, W, C) input, got {x.shape}")
        xp = array_module(x)
        x = xp.ascontiguousarray(x)
        n, h, w, c = x.shape
        out = pooled(workspace, (n, c), x.dtype, xp)
        gap_forward(xp, n * c, x, out, n, h * w, c)
        return out, ((x.shape, workspace) if keep else None)

    @staticmethod
    def backward(saved, dout):
        shape, workspace = saved
        xp = array_module(dout)
        n, h, w, c = shape
        dout = xp.ascontiguousarray(dout)
        dx = pooled(workspace, shape, dout.dtype, xp)
        gap_backward(xp, dx.size, dout, dx, n, h * w, c)
        return dx, {}


@sgd_update.implementation(FUSED)
class SGDFused:
    """The reference's update (:class:`cifarnet.functional.optim.SGDReference`) in one kernel for a
    learning rate that is one number and a weight decay that is one number or an array like
    ``param`` (the flat store's); a learning rate per element (parameter groups) takes the
    reference's launches."""

    @staticmethod
    def apply(param, grad, state, *, lr: float, momentum: float = 0.0, nesterov: bool = False,
              weight_decay: float = 0.0) -> None:
        xp = array_module(param)
        per_element = getattr(weight_decay, "ndim", 0) > 0
        if getattr(lr, "ndim", 0) > 0 or (per_element and (weight_decay.shape != param.shape
                                                           or weight_decay.dtype != param.dtype)):
            SGDReference.apply(param, grad, state, lr=lr, momentum=momentum, nesterov=nesterov,
                               weight_decay=weight_decay)
            return
        decay = xp.ascontiguousarray(weight_decay) if per_element else param   # (not read when a number)
        first = bool(momentum) and "velocity" not in state
        if first:
            state["velocity"] = xp.empty_like(param)
        velocity = state.get("velocity", param)                # (not read without momentum)
        sgd_step(xp, param.size, param, grad, velocity, decay, 0.0 if per_element else float(weight_decay),
                 per_element, float(lr), float(momentum), bool(nesterov), first, param.size)


@step_summary.implementation(FUSED)
class StepSummaryFused:
    @staticmethod
    def forward(loss, logits, labels, grads, *, keep: bool = False):
        xp = array_module(logits)
        out = xp.empty(3, dtype=np.float64)
        n, k = logits.shape
        summary_kernel(xp, 1, xp.asarray(loss).reshape(1), xp.ascontiguousarray(logits),
                       labels.astype(np.int64, copy=False), xp.ascontiguousarray(grads).reshape(-1), out, n, k,
                       grads.size)
        return out, None
