"""Batch normalisation with running statistics, for NHWC images and for feature vectors."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_module
from .base import Layer, Shape


class BatchNorm(Layer):
    """Normalise each channel (last axis) over all other axes, then scale and shift.

    Works for ``(N, H, W, C)`` images (statistics over N, H, W per channel) and ``(N, C)``
    features (statistics over N per feature): both are viewed as ``(M, C)``.

    Training mode normalises with the batch's mean and biased variance and updates the running
    statistics (``running = (1 - momentum) * running + momentum * batch``, the running variance
    using the unbiased batch variance, as PyTorch). Eval mode normalises with the running
    statistics only, so one image's output does not depend on the rest of its batch.

    Shapes:
        x, out: ``(N, ..., C)``;  gamma, beta, running_mean, running_var: ``(C,)``
    """

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
    def build(cls, in_shape: Shape, rng, dtype, **options) -> "BatchNorm":
        return cls(in_shape[-1], dtype=dtype, **options)

    def forward(self, x):
        xp = array_module(x)
        c = self.num_features
        if x.shape[-1] != c or x.ndim not in (2, 4):
            raise ValueError(f"BatchNorm({c}) expects (N, {c}) or (N, H, W, {c}) input, got {x.shape}")
        x2 = x.reshape(-1, c)                                  # M, C
        m = x2.shape[0]
        if self.training:
            if m < 2:
                raise ValueError("BatchNorm in training mode needs more than one value per channel "
                                 f"(got input of shape {x.shape}); use a larger batch or eval()")
            mean = x2.mean(axis=0)
            centred = x2 - mean
            var = (centred * centred).mean(axis=0)
            invstd = 1.0 / xp.sqrt(var + self.eps)
            xhat = centred * invstd
            mom = self.momentum
            self.buffers["running_mean"] *= 1.0 - mom
            self.buffers["running_mean"] += mom * mean
            self.buffers["running_var"] *= 1.0 - mom
            self.buffers["running_var"] += (mom * m / (m - 1)) * var
        else:
            invstd = 1.0 / xp.sqrt(self.buffers["running_var"] + self.eps)
            xhat = (x2 - self.buffers["running_mean"]) * invstd
        out = xhat * self.params["gamma"] + self.params["beta"]
        self._cache = (xhat, invstd, self.training)
        return out.reshape(x.shape)

    def backward(self, dout):
        xhat, invstd, batch_stats = self._take_cache("_cache")
        c = self.num_features
        d2 = dout.reshape(-1, c)                               # M, C
        dbeta = d2.sum(axis=0)
        dgamma = (d2 * xhat).sum(axis=0)
        self.grads["beta"], self.grads["gamma"] = dbeta, dgamma
        scale = self.params["gamma"] * invstd                  # C
        if batch_stats:
            m = d2.shape[0]
            # d/dx of gamma * (x - mean) / std with mean and std depending on the batch
            dx = (scale / m) * (m * d2 - dbeta - xhat * dgamma)
        else:
            dx = d2 * scale
        return dx.reshape(dout.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"
