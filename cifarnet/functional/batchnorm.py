"""Batch normalisation over the last axis of NHWC images ``(N, H, W, C)`` or features ``(N, C)``.

``forward(x, gamma, beta, running_mean, running_var, training=, momentum=, eps=, reducer=LOCAL,
keep=True) -> (out, ctx)``. Training normalises with the batch's mean and biased variance and
updates the running statistics in place (``running = (1 - momentum) * running + momentum *
batch``, the variance unbiased, as PyTorch); eval mode uses the running statistics only.
``backward(ctx, dout, grads_out=None) -> (dx, {"gamma": dgamma, "beta": dbeta})`` (``grads_out``: see
:mod:`cifarnet.functional.destination`).

The batch may be split between threads (data-parallel training): ``reducer.sum(*values)`` then
adds each per-channel sum over all parts, so every part is normalised with the whole batch's
statistics, and only the part whose reducer is the ``leader`` updates the running statistics.
The gradients returned are this part's share of the batch's.

Shapes: x, out: ``(N, ..., C)``;  gamma, beta, running_mean, running_var: ``(C,)``
"""
from __future__ import annotations

import numpy as np

from ..arrays.rows import channel_products, channel_sums, rows, tile
from ..arrays.workspace import pooled, take
from ..backend import array_module
from ..comm import LOCAL
from ..errors import InvalidValue
from .destination import sum_into, target
from .dispatch import Op

batch_norm = Op("batch_norm")




def _update_running(running_mean, running_var, mean, var, m: int, momentum: float) -> None:
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean
    running_var *= 1.0 - momentum
    running_var += (momentum * m / (m - 1)) * var


def _check(x, gamma, m: int | None = None) -> None:
    c = gamma.shape[0]
    if x.shape[-1] != c or x.ndim not in (2, 4):
        raise ValueError(f"BatchNorm({c}) expects (N, {c}) or (N, H, W, {c}) input, got {x.shape}")
    if m is not None and m < 2:
        raise InvalidValue("BatchNorm in training mode needs more than one value per channel "
                         f"(got input of shape {x.shape}); use a larger batch or eval mode")


def train_statistics(x, r, gamma, reducer, eps: float, momentum: float, running_mean, running_var, out):
    """Batch norm's training statistics on the row view ``r`` ``(R, W*C)`` of ``x``: ``(centred,
    invstd, m, offset)``, with ``centred = r - mean_used`` written into ``out`` (may be ``r``), ``m``
    the values per channel over the whole batch (``reducer`` adds the parts' sums) and the running
    statistics updated by the reducer's leader. ``offset`` ``(C,)`` is the batch's mean minus the
    mean the rows were centred on (None: they were centred on the batch's mean): the rows centred on
    the batch's mean are ``centred - offset``, which the NumPy variants of batch norm, alone and fused
    with its activation, fold into their per-channel factors (:func:`gradient_sums`,
    :func:`input_gradient_rows`, the output's shift) instead of making one more pass.

    A batch in one part (``reducer.batch_parts`` 1) takes the two-pass statistics: the sums, then the squared
    deviations from the batch's mean. A batch split into parts, between threads or across processes,
    takes :func:`_statistics_in_one_exchange`: each exchange is a barrier every part waits at (across
    processes a latency-bound trip over the network), unless its reducer asks for the two passes
    (``statistics_exchanges`` 2, :mod:`cifarnet.comm`)."""
    if reducer.batch_parts > 1 and reducer.statistics_exchanges == 1:
        return _statistics_in_one_exchange(x, r, gamma, reducer, eps, momentum, running_mean, running_var, out)
    c = gamma.shape[0]
    sums, m = reducer.sum(channel_sums(r, c), x.size // c)     # C; values per channel in the batch
    _check(x, gamma, m)
    mean = sums / m                                            # C
    centred = np.subtract(r, tile(mean, r.shape[1]), out=out)  # R, W*C
    (squares,) = reducer.sum(channel_products(centred, centred, c))
    var = squares / m                                          # C, biased
    if reducer.leader:
        _update_running(running_mean, running_var, mean, var, m, momentum)
    return centred, 1.0 / np.sqrt(var + eps), m, None


def _statistics_in_one_exchange(x, r, gamma, reducer, eps: float, momentum: float, running_mean, running_var,
                                out):
    """:func:`train_statistics` with one exchange: each part sends its sums, the squared deviations
    from its own mean and, in float64, ``sums^2 / n`` (its ``n`` values per channel); the batch's
    squared deviations from its mean are then those of the parts plus ``sum_i n_i (mean_i -
    mean)^2 = sum_i sums_i^2 / n_i - (sum_i sums_i)^2 / n`` (Chan, Golub and LeVeque's combination).
    The rows stay centred on the part's own mean: ``offset = mean - own mean``."""
    c = gamma.shape[0]
    n = x.size // c
    width = r.shape[1]
    own_sums = channel_sums(r, c)                                           # C
    own_mean = own_sums / n
    centred = np.subtract(r, tile(own_mean, width), out=out)                # R, W*C
    own_squares = channel_products(centred, centred, c)
    wide = own_sums.astype(np.float64)
    sums, squares, between, m = reducer.sum(own_sums, own_squares, wide * wide / n, n)
    _check(x, gamma, m)
    total = np.asarray(sums, dtype=np.float64)
    spread = np.maximum(np.asarray(between, dtype=np.float64) - total * total / m, 0.0)   # C, >= 0 but for rounding
    mean = (total / m).astype(x.dtype)
    var = ((np.asarray(squares, dtype=np.float64) + spread) / m).astype(x.dtype)         # C, biased
    if reducer.leader:
        _update_running(running_mean, running_var, mean, var, m, momentum)
    return centred, 1.0 / np.sqrt(var + eps), m, (mean - own_mean).astype(x.dtype, copy=False)


def gradient_sums(d, centred, invstd, channels: int, grads_out=None, offset=None):
    """``(dgamma, dbeta)`` of this part, ``sum(d * xhat)`` and ``sum(d)`` per channel over the rows
    ``d`` and ``centred`` ``(R, W*C)``, into ``grads_out``'s arrays if given; ``offset`` as
    :func:`train_statistics` gives it (``xhat = (centred - offset) invstd``)."""
    dbeta = channel_sums(d, channels, out=target(grads_out, "beta"))
    dgamma = channel_products(d, centred, channels, out=target(grads_out, "gamma"))
    if offset is not None:
        dgamma -= offset * dbeta
    dgamma *= invstd
    return dgamma, dbeta


def input_gradient_rows(invstd, gamma, dgamma, dbeta, m: int, width: int, offset=None) -> tuple:
    """The per-channel factors of :func:`input_gradient_into` (the whole batch's ``dgamma``,
    ``dbeta``), tiled along a row of ``width = W*C`` values; with the ``offset`` of the rows'
    centre (:func:`train_statistics`) folded into the constant term."""
    k = invstd * dgamma / m
    constant = dbeta / m if offset is None else dbeta / m - offset * k
    return tile(k, width), tile(constant, width), tile(gamma * invstd, width)


def input_gradient_into(dx, d, centred, factors: tuple) -> None:
    """``dx = gamma invstd (d - dbeta/m - xhat dgamma/m)`` with ``xhat = (centred - offset) invstd``,
    for rows ``d``, ``centred``, ``dx`` ``(R, W*C)`` (``dx`` may be ``centred``'s memory), ``factors``
    from :func:`input_gradient_rows`; element by element, so a block of rows at a time gives the
    same bits."""
    k_row, mean_row, scale_row = factors
    np.multiply(centred, k_row, out=dx)
    np.subtract(d, dx, out=dx)
    dx -= mean_row
    dx *= scale_row


def fold(gamma, beta, running_mean, running_var, eps: float):
    """``(scale, shift)``, each ``(C,)``: eval mode computes ``x * scale + shift``."""
    xp = array_module(gamma)
    scale = gamma / xp.sqrt(running_var + eps)
    return scale, beta - running_mean * scale


@batch_norm.reference
class BatchNormReference:
    """The formulas as written, broadcasting per-channel vectors along the last axis."""

    @staticmethod
    def forward(x, gamma, beta, running_mean, running_var, *, training: bool, momentum: float = 0.1,
                eps: float = 1e-5, reducer=LOCAL, keep: bool = True):
        _check(x, gamma)
        xp = array_module(x)
        axes = tuple(range(x.ndim - 1))
        if training:
            sums, m = reducer.sum(x.sum(axis=axes), x.size // x.shape[-1])
            _check(x, gamma, m)
            centred = x - sums / m
            (squares,) = reducer.sum((centred * centred).sum(axis=axes))
            var = squares / m                                      # C, biased
            invstd = 1.0 / xp.sqrt(var + eps)
            if reducer.leader:
                _update_running(running_mean, running_var, sums / m, var, m, momentum)
        else:
            m = None
            invstd = 1.0 / xp.sqrt(running_var + eps)
            centred = x - running_mean
        xhat = centred * invstd
        out = gamma * xhat + beta
        return out, ((xhat, invstd, m, gamma, reducer) if keep else None)

    @staticmethod
    def backward(saved, dout, grads_out=None):
        xhat, invstd, m, gamma, reducer = saved
        axes = tuple(range(dout.ndim - 1))
        dbeta = sum_into(dout, axes, target(grads_out, "beta"))
        dgamma = sum_into(dout * xhat, axes, target(grads_out, "gamma"))
        grads = {"gamma": dgamma, "beta": dbeta}
        if m is None:
            return dout * (gamma * invstd), grads
        dbeta, dgamma = reducer.sum(dbeta, dgamma)                 # over the whole batch
        # d/dx of gamma * (x - mean) / std with mean and std depending on the batch
        return gamma * invstd * (dout - dbeta / m - xhat * (dgamma / m)), grads


@batch_norm.implementation("numpy")
class BatchNormNumpy:
    """The same formulas on ``(N*H, W*C)`` row views with per-channel vectors tiled along a row
    (:mod:`cifarnet.arrays.rows`): long inner loops, sums of products without temporaries.
    Training keeps the centred input; eval mode scales and shifts in two passes. With a
    ``workspace`` (:mod:`cifarnet.arrays.workspace`) the centred input is its own array and the
    output and the input gradient pooled ones (the same operations, into them)."""

    takes_workspace = True

    @staticmethod
    def forward(x, gamma, beta, running_mean, running_var, *, training: bool, momentum: float = 0.1,
                eps: float = 1e-5, reducer=LOCAL, keep: bool = True, workspace=None):
        _check(x, gamma)
        x = np.ascontiguousarray(x)
        r = rows(x)                                            # R, W*C
        width = r.shape[1]
        if training:
            centred, invstd, m, offset = train_statistics(x, r, gamma, reducer, eps, momentum, running_mean,
                                                          running_var, take(workspace, "centred", r.shape, r.dtype))
            scale = gamma * invstd
            out = np.multiply(centred, tile(scale, width), out=pooled(workspace, r.shape, r.dtype))
            out += tile(beta if offset is None else beta - offset * scale, width)   # = gamma * xhat + beta
            saved = (centred, invstd, m, gamma, None, reducer, workspace, offset)
        else:
            invstd = 1.0 / np.sqrt(running_var + eps)
            scale = gamma * invstd
            out = np.multiply(r, tile(scale, width), out=pooled(workspace, r.shape, r.dtype))   # scale,
            out += tile(beta - running_mean * scale, width)                                    # then shift
            saved = (r, invstd, None, gamma, running_mean, reducer, workspace, None)
        return out.reshape(x.shape), (saved if keep else None)

    @staticmethod
    def backward(saved, dout, grads_out=None):
        kept, invstd, m, gamma, running_mean, reducer, workspace, offset = saved
        c = gamma.shape[0]
        d = rows(np.ascontiguousarray(dout))                   # R, W*C
        width = d.shape[1]
        centred = kept if m is not None else kept - tile(running_mean, width)
        dgamma, dbeta = gradient_sums(d, centred, invstd, c, grads_out, offset)
        grads = {"gamma": dgamma, "beta": dbeta}               # this part's share
        if m is None:
            return (d * tile(gamma * invstd, width)).reshape(dout.shape), grads
        dbeta, dgamma = reducer.sum(dbeta, dgamma)             # over the whole batch
        dx = pooled(workspace, d.shape, d.dtype)
        input_gradient_into(dx, d, centred, input_gradient_rows(invstd, gamma, dgamma, dbeta, m, width, offset))
        return dx.reshape(dout.shape), grads
