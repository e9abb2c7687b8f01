"""Where an op's backward writes its parameter gradients.

Every backward that returns parameter gradients takes ``grads_out``: None (it allocates them), or
a mapping from gradient name (``"W"``, ``"b"``, ``"gamma"``, ``"beta"``) to the array each is to be
written into: in training, the views of the flat store's gradient buffer (:mod:`cifarnet.store`).
A name missing from ``grads_out`` (a batch norm whose scale does not train) is allocated. The
backward then returns those very arrays, so a layer hands them on without a copy
(:func:`cifarnet.layers.base.deliver` counts the copies it still has to make: none in a step).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..backend import array_module


def target(grads_out: Mapping[str, Any] | None, name: str):
    """The array gradient ``name`` is to be written into, or None (the op allocates it)."""
    if grads_out is None:
        return None
    try:
        return grads_out[name]
    except KeyError:
        return None


def target_or_new(grads_out: Mapping[str, Any] | None, name: str, like, size: int):
    """The array gradient ``name`` is to be written into, or a new ``(size,)`` one of ``like``'s
    array module and dtype (for a kernel that writes its output in place)."""
    found = target(grads_out, name)
    return array_module(like).empty(size, dtype=like.dtype) if found is None else found


def product_into(a, b, out, shape: tuple[int, ...]):
    """``(a @ b).reshape(shape)``, written into ``out`` (shape ``shape``, C-contiguous) if given."""
    xp = array_module(a)
    if out is None:
        return xp.matmul(a, b).reshape(shape)
    xp.matmul(a, b, out=out.reshape(a.shape[0], b.shape[-1]))
    return out


def sum_into(x, axis, out):
    """``x.sum(axis=axis)``, written into ``out`` if given."""
    if out is None:
        return x.sum(axis=axis)
    x.sum(axis=axis, out=out)
    return out
