"""Fully connected: ``out = relu?(x @ W + b)``.

Shapes: x ``(N, D_in)``;  W ``(D_in, D_out)``;  b ``(D_out,)`` or None;  out ``(N, D_out)``.
``forward(x, W, b, relu=False, keep=True) -> (out, ctx)`` (the ReLU serves inference, with
``keep=False``); ``backward(ctx, dout, need_dx=True, grads_out=None) -> (dx, {"W": dW, "b": db})`` (``grads_out``: see
:mod:`cifarnet.functional.destination`).
"""
from __future__ import annotations

import numpy as np

from ..arrays.workspace import pooled
from ..backend import array_module
from .destination import product_into, sum_into, target
from .dispatch import Op

linear = Op("linear")


@linear.reference
class LinearReference:
    @staticmethod
    def forward(x, W, b=None, *, relu: bool = False, keep: bool = True):
        _check(x, W, relu, keep)
        out = x @ W
        if b is not None:
            out += b
        if relu:
            array_module(out).maximum(out, out.dtype.type(0), out=out)
        return out, ((x, W, b is not None) if keep else None)

    @staticmethod
    def backward(saved, dout, need_dx: bool = True, grads_out=None):
        x, W, has_bias = saved
        grads = {"W": product_into(x.T, dout, target(grads_out, "W"), W.shape)}
        if has_bias:
            grads["b"] = sum_into(dout, 0, target(grads_out, "b"))
        return (dout @ W.T if need_dx else None), grads


@linear.implementation("numpy")
class LinearNumpy:
    """The reference's products, written into given arrays: with a ``workspace``
    (:mod:`cifarnet.arrays.workspace`) the output and the input gradient are its pooled arrays, the
    same every step."""

    takes_workspace = True

    @staticmethod
    def forward(x, W, b=None, *, relu: bool = False, keep: bool = True, workspace=None):
        _check(x, W, relu, keep)
        out = np.matmul(x, W, out=pooled(workspace, (x.shape[0], W.shape[1]), np.result_type(x, W)))
        if b is not None:
            out += b
        if relu:
            np.maximum(out, out.dtype.type(0), out=out)
        return out, ((x, W, b is not None, workspace) if keep else None)

    @staticmethod
    def backward(saved, dout, need_dx: bool = True, grads_out=None):
        x, W, has_bias, workspace = saved
        _, grads = LinearReference.backward((x, W, has_bias), dout, False, grads_out)
        if not need_dx:
            return None, grads
        return np.matmul(dout, W.T, out=pooled(workspace, x.shape, dout.dtype)), grads


def _check(x, W, relu: bool, keep: bool) -> None:
    if x.ndim != 2 or x.shape[1] != W.shape[0]:
        raise ValueError(f"Linear expects (N, {W.shape[0]}) input, got {x.shape}")
    if keep and relu:
        raise ValueError("linear: relu is for inference (keep=False); backward does not undo it")
