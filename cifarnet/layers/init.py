"""Weight initialisation on the host, from a seeded generator (same seed, same weights).

Schemes, by the name a model description's ``init`` gives (``fan_in`` = inputs feeding one output:
``KH*KW*C_in`` for a convolution, ``D_in`` for a linear layer):

* ``he_normal``: weights from N(0, 2 / fan_in), biases 0 (Kaiming/He for layers before a ReLU);
* ``he_uniform``: weights uniform in +-sqrt(6 / fan_in) (the same variance), biases 0;
* ``pytorch``: what PyTorch's ``Conv2d`` and ``Linear`` do by default: weights Kaiming-uniform
  with ``a = sqrt(5)``, which is uniform in +-1/sqrt(fan_in), and biases uniform in the same range;
* ``pytorch_dirac``: ``pytorch``'s weights, then the first ``C_in`` output filters of a
  convolution set to the identity (PyTorch's ``dirac_``: 1 at the kernel's centre from input
  channel i to output channel i, 0 elsewhere), biases 0 (airbench's convolutions).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..registry import Registry

INITS = Registry("initialisation")


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype: Any) -> np.ndarray:
    """N(0, 2 / fan_in) for a weight of ``shape``."""
    std = np.sqrt(2.0 / fan_in)
    return (rng.standard_normal(shape) * std).astype(dtype)


def _uniform(rng: np.random.Generator, shape, bound: float, dtype: Any) -> np.ndarray:
    return rng.uniform(-bound, bound, shape).astype(dtype)


@INITS.register("he_normal")
def _he_normal(rng, shape, fan_in, bias: int | None, dtype):
    out = {"W": he_normal(rng, shape, fan_in, dtype)}
    if bias is not None:
        out["b"] = np.zeros(bias, dtype=dtype)
    return out


@INITS.register("he_uniform")
def _he_uniform(rng, shape, fan_in, bias: int | None, dtype):
    out = {"W": _uniform(rng, shape, np.sqrt(6.0 / fan_in), dtype)}
    if bias is not None:
        out["b"] = np.zeros(bias, dtype=dtype)
    return out


@INITS.register("pytorch")
def _pytorch(rng, shape, fan_in, bias: int | None, dtype):
    bound = 1.0 / np.sqrt(fan_in)        # kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3) * sqrt(3/fan_in)
    out = {"W": _uniform(rng, shape, bound, dtype)}
    if bias is not None:
        out["b"] = _uniform(rng, (bias,), bound, dtype)
    return out


@INITS.register("pytorch_dirac")
def _pytorch_dirac(rng, shape, fan_in, bias: int | None, dtype):
    out = _pytorch(rng, shape, fan_in, bias, dtype)
    W = out["W"]
    if W.ndim == 4:
        kh, kw, c_in, c_out = W.shape
        first = min(c_in, c_out)
        W[..., :first] = 0
        W[kh // 2, kw // 2, np.arange(first), np.arange(first)] = 1
    if bias is not None:
        out["b"] = np.zeros(bias, dtype=dtype)
    return out


def draw_weights(scheme: str, rng: np.random.Generator, shape: tuple[int, ...], fan_in: int,
                 bias: int | None, dtype: Any) -> dict[str, np.ndarray]:
    """``{"W": ..., "b": ...}`` (no ``b`` when ``bias`` is None) drawn by ``scheme`` from ``rng``."""
    return INITS.get(scheme)(rng, shape, fan_in, bias, dtype)
