"""Ops: pure functions with a reference implementation and, where it pays, one per backend.

Each op is a pair ``forward(x, ...) -> (out, ctx)`` and ``backward(ctx, dout) -> (dx, grads)``
(update ops: ``apply``); see :mod:`cifarnet.functional.dispatch`. Layers hold parameters and call
these; a GPU kernel is a new variant of an op (``@op.implementation("cupy")``), tested against the
op's reference by ``tests/test_variants.py``, with no layer code touched.
"""
from . import fused, fused_step  # noqa: F401,E402 - register the "cupy-fused" variants
from .activation import gelu, relu
from .batchnorm import LOCAL, batch_norm
from .batchnorm_act import batch_norm_act
from .conv import conv2d
from .dispatch import OPS, Ctx, Op
from .dropout import dropout
from .linear import linear
from .loss import softmax_cross_entropy
from .optim import adam_update, sgd_update
from .pooling import global_avg_pool, max_pool2d
from .shortcut import pad_shortcut
from .summary import step_summary

__all__ = ["LOCAL", "OPS", "Ctx", "Op", "adam_update", "batch_norm", "batch_norm_act", "conv2d", "dropout", "gelu",
           "global_avg_pool", "linear", "max_pool2d", "pad_shortcut", "relu", "sgd_update", "softmax_cross_entropy",
           "step_summary"]
