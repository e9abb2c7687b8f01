"""Batch normalisation with running statistics, for NHWC images and for feature vectors."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_module
from ..ops.channels import channel_products, channel_sums, rows, tile
from .base import Layer, Shape


class OwnBatch:
    """Batch statistics over the layer's own batch: the default :attr:`BatchNorm.sync`.

    Data-parallel training replaces it with a link to the other threads
    (:class:`cifarnet.training.data_parallel.ReplicaGroup`), whose ``sum`` adds each argument
    over all parts of the batch and whose ``leader`` alone updates the running statistics.
    """

    leader = True

    @staticmethod
    def sum(*values):
        return values


class BatchNorm(Layer):
    """Normalise each channel (last axis) over all other axes, then scale and shift.

    Works for ``(N, H, W, C)`` images (statistics over N, H, W per channel) and ``(N, C)``
    features (statistics over N per feature).

    Training mode normalises with the batch's mean and biased variance and updates the running
    statistics (``running = (1 - momentum) * running + momentum * batch``, the running variance
    using the unbiased batch variance, as PyTorch). Eval mode normalises with the running
    statistics only, so one image's output does not depend on the rest of its batch.

    The arithmetic runs on ``(N*H, W*C)`` row views with per-channel vectors tiled along a row
    (see :mod:`cifarnet.ops.channels`): the same formulas, with long inner loops. Training caches
    the centred input; eval mode scales and shifts in two passes and caches its input.

    In data-parallel training each thread's replica sums its per-channel statistics with the
    others' through ``sync`` (forward: sums, then squared deviations; backward: the sums behind
    ``dbeta`` and ``dgamma``), so every part is normalised with the whole batch's statistics,
    as one thread would (up to rounding). ``grads`` then hold this part's share; the runner adds
    them up.

    Shapes:
        x, out: ``(N, ..., C)``;  gamma, beta, running_mean, running_var: ``(C,)``
    """

    sync = OwnBatch()

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
        x = xp.ascontiguousarray(x)
        r = rows(x)                                            # R, W*C
        m = x.size // c                                        # values per channel
        width = r.shape[1]
        gamma, beta = self.params["gamma"], self.params["beta"]
        if self.training:
            sums, m = self.sync.sum(channel_sums(r, c), m)     # C; values per channel in the batch
            if m < 2:
                raise ValueError("BatchNorm in training mode needs more than one value per channel "
                                 f"(got input of shape {x.shape}); use a larger batch or eval()")
            mean = sums / m                                    # C
            centred = r - tile(mean, width)                    # R, W*C
            (squares,) = self.sync.sum(channel_products(centred, centred, c))
            var = squares / m                                  # C, biased
            invstd = 1.0 / xp.sqrt(var + self.eps)
            if self.sync.leader:
                mom = self.momentum
                self.buffers["running_mean"] *= 1.0 - mom
                self.buffers["running_mean"] += mom * mean
                self.buffers["running_var"] *= 1.0 - mom
                self.buffers["running_var"] += (mom * m / (m - 1)) * var
            out = centred * tile(gamma * invstd, width)        # = gamma * xhat
            out += tile(beta, width)
            self._cache = (centred, invstd, m)
        else:
            invstd = 1.0 / xp.sqrt(self.buffers["running_var"] + self.eps)
            scale = gamma * invstd
            out = r * tile(scale, width)                       # two passes: scale, then shift
            out += tile(beta - self.buffers["running_mean"] * scale, width)
            self._cache = (r, invstd, None)
        return out.reshape(x.shape)

    def backward(self, dout):
        xp = array_module(dout)
        saved, invstd, m = self._take_cache("_cache")         # m: falsy in eval mode
        c = self.num_features
        d = rows(xp.ascontiguousarray(dout))                   # R, W*C
        width = d.shape[1]
        if m:
            centred = saved                                    # x - batch mean
        else:
            centred = saved - tile(self.buffers["running_mean"], width)
        dbeta = channel_sums(d, c)
        dgamma = channel_products(d, centred, c) * invstd      # sum(dout * xhat)
        self.grads["beta"], self.grads["gamma"] = dbeta, dgamma   # this part's share
        scale = self.params["gamma"] * invstd                  # C
        if m:
            dbeta, dgamma = self.sync.sum(dbeta, dgamma)       # over the whole batch
            # d/dx of gamma * (x - mean) / std with mean and std depending on the batch:
            # scale * (dout - dbeta/m - xhat * dgamma/m),  xhat = centred * invstd
            dx = centred * tile(invstd * dgamma / m, width)
            xp.subtract(d, dx, out=dx)
            dx -= tile(dbeta / m, width)
            dx *= tile(scale, width)
        else:
            dx = d * tile(scale, width)
        return dx.reshape(dout.shape)

    def folded(self):
        """``(scale, shift)``, each ``(C,)``: eval mode computes ``x * scale + shift``."""
        xp = array_module(self.params["gamma"])
        scale = self.params["gamma"] / xp.sqrt(self.buffers["running_var"] + self.eps)
        return scale, self.params["beta"] - self.buffers["running_mean"] * scale

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"
