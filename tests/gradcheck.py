"""Centred finite differences, weighted by a random upstream gradient, against backward().

For a layer ``f`` and a fixed random ``dout`` the scalar ``L = sum(f(x) * dout)`` has
``dL/dx = backward(dout)``; each entry of ``x`` (and of every parameter) is nudged by ``+-h`` and
``(L(+h) - L(-h)) / 2h`` compared with the analytic value.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cifarnet.backend import backend_of, to_numpy
from cifarnet.layers import TRAIN


def relative_error(analytic: np.ndarray, numeric: np.ndarray, scale: float = 0.0) -> float:
    """Element-wise relative error ``max_i |a_i - n_i| / max(|a_i|, |n_i|, floor)``.

    ``floor = max(1e-3 * max_i |n_i|, 1e-4 * scale)``, ``scale`` being the largest gradient entry of
    any array in the check. An entry at least a thousandth of its array's largest is held to its
    own relative error; smaller entries, and arrays whose true gradient is zero (a bias before
    batch norm, where finite differences return only rounding noise), are held to an absolute
    error of ``tol * floor``.
    """
    a, n = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    floor = max(1e-3 * float(np.max(np.abs(n), initial=0.0)), 1e-4 * scale, 1e-300)
    return float(np.max(np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor), initial=0.0))


def numeric_gradient(loss: Callable[[], float], array, h: float = 1e-5, indices=None) -> np.ndarray:
    """Centred differences of ``loss()`` with respect to ``array`` (perturbed in place, restored).

    Args:
        indices: flat indices to probe (all when None); unprobed entries are returned as NaN.
    """
    grad = np.full(array.shape, np.nan)
    probe = range(array.size) if indices is None else indices
    for i in probe:
        idx = np.unravel_index(i, array.shape)
        old = float(array[idx])
        array[idx] = old + h
        up = loss()
        array[idx] = old - h
        down = loss()
        array[idx] = old
        grad[idx] = (up - down) / (2 * h)
    return grad


def check_gradients(forward: Callable, backward: Callable, x, params: dict, seed: int = 0,
                    h: float = 1e-5, max_probes: int | None = None,
                    before_forward: Callable[[], None] | None = None) -> dict[str, float]:
    """Relative error of the analytic gradient of ``x`` and of every array in ``params``.

    Args:
        forward: ``x -> (out, ctx)``;  backward: ``(ctx, dout) -> (dx, grads)``, ``grads`` keyed
            by the names of ``params``.
        params: name -> array (perturbed in place by the finite differences).
        max_probes: probe at most this many randomly chosen entries per array (all if None).
        before_forward: called before every forward (e.g. to replay a dropout mask).
    Returns:
        name -> relative error, with ``"x"`` for the input.
    """
    rng = np.random.default_rng(seed)
    be = backend_of(x)
    if before_forward:
        before_forward()
    out, _ = forward(x)
    dout = be.asarray(rng.standard_normal(out.shape), dtype=out.dtype)

    def loss() -> float:
        if before_forward:
            before_forward()
        return float((forward(x)[0] * dout).sum())

    if before_forward:
        before_forward()
    _, ctx = forward(x)
    dx, grads = backward(ctx, dout)
    analytic = {"x": to_numpy(dx).copy()}
    analytic.update({name: to_numpy(grads[name]).copy() for name in params})

    numerics = {}
    for name, array in [("x", x)] + list(params.items()):
        indices = None
        if max_probes is not None and array.size > max_probes:
            indices = rng.choice(array.size, size=max_probes, replace=False)
        numerics[name] = numeric_gradient(loss, array, h, indices)
    scale = max(float(np.nanmax(np.abs(n), initial=0.0)) for n in numerics.values())
    errors = {}
    for name, numeric in numerics.items():
        probed = ~np.isnan(numeric)
        errors[name] = relative_error(analytic[name][probed], numeric[probed], scale)
    return errors


def check_layer(layer, x, seed: int = 0, mode=TRAIN, **kwargs) -> dict[str, float]:
    """:func:`check_gradients` for a layer in ``mode``: its input and every parameter of it and
    of the layers inside it."""
    return check_gradients(lambda z: layer.forward(z, mode), layer.backward, x, dict(layer.named_parameters()),
                           seed=seed, **kwargs)
