"""Batch normalisation layer: owns gamma, beta and the running statistics; the math is
:data:`cifarnet.functional.batch_norm`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..functional import batch_norm
from ..functional.batchnorm import fold
from .base import EVAL, Layer, Mode, Shape, deliver


class BatchNorm(Layer):
    """Normalise each channel (last axis) over all other axes, then scale and shift.

    Works for ``(N, H, W, C)`` images (statistics over N, H, W per channel) and ``(N, C)``
    features (statistics over N per feature). Training mode normalises with the batch's mean and
    biased variance and updates the running statistics (unbiased variance, as PyTorch); eval mode
    uses the running statistics only, so one image's output does not depend on its batch.

    Shapes:
        x, out: ``(N, ..., C)``;  gamma, beta, running_mean, running_var: ``(C,)``
    """

    kind = "batchnorm"

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, *,
                 dtype: Any = np.float32):
        super().__init__()
        if num_features < 1 or not 0.0 <= momentum <= 1.0 or eps <= 0:
            raise ValueError(f"BatchNorm needs num_features >= 1, 0 <= momentum <= 1, eps > 0; "
                             f"got {num_features}, {momentum}, {eps}")
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.params["gamma"] = np.ones(num_features, dtype=dtype)
        self.params["beta"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, **options) -> BatchNorm:
        return cls(in_shape[-1], dtype=dtype, **options)

    def forward(self, x, mode: Mode = EVAL):
        p, b = self.params, self.buffers
        return batch_norm.forward(x, p["gamma"], p["beta"], b["running_mean"], b["running_var"],
                                  training=mode.training, momentum=self.momentum, eps=self.eps,
                                  reducer=mode.reducer, keep=mode.keep)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        dx, grads = batch_norm.backward(ctx, dout)
        return dx, deliver(grads, into)

    def folded(self):
        """``(scale, shift)``, each ``(C,)``: eval mode computes ``x * scale + shift``."""
        p, b = self.params, self.buffers
        return fold(p["gamma"], p["beta"], b["running_mean"], b["running_var"], self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"
