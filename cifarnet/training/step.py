"""One optimisation step, its forward and backward split across threads where that pays."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..backend import array_module, to_numpy
from ..layers import TRAIN, Mode
from ..losses import SoftmaxCrossEntropy
from ..optim import Optimizer
from ..parallel import ThreadGroup, fork_generators, part_edges, parts_for, run_parts
from ..store import FlatStore


@dataclass
class StepResult:
    """What one forward and backward produced: the 0-d ``loss``, the ``(N, K)`` ``logits`` and
    ``grads`` (dotted parameter name -> gradient, summed over the parts of a split batch): the
    gradient views of the model's flat store (:mod:`cifarnet.store`)."""

    loss: Any
    logits: Any
    grads: dict[str, Any]


def forward_backward(model, loss_fn: SoftmaxCrossEntropy, x, y, workers: int | None = None,
                     mode: Mode = TRAIN, group: ThreadGroup | None = None) -> StepResult:
    """Forward, loss and backward on one batch; the images get no gradient. The gradients are
    written into the model's flat store (``model.store.grads``).

    With NumPy, the batch is split between ``workers`` threads (:mod:`cifarnet.parallel`; None:
    one per core) when it is large enough: each part runs the same model with its own contexts
    and its own gradient buffer, and talks to the others through its member of ``group`` (a
    :class:`ThreadGroup` of that many parts, made here if not given): batch norm adds its
    statistics across the parts, the loss is taken on the whole batch on this thread, and the
    parts' gradient buffers are summed by the group's ``allreduce``. The result equals the
    one-thread step up to rounding.

    Args:
        x: ``(N, H, W, C)`` images on the model's backend;  y: ``(N,)`` integer labels.
    """
    n = x.shape[0]
    store = FlatStore.of(model)
    parts = parts_for(n, workers, array_module(x))
    if parts < 2:
        logits, ctx = model.forward(x, mode)
        loss, loss_ctx = loss_fn.forward(logits, y)
        model.backward(ctx, loss_fn.backward(loss_ctx), need_dx=False, into=store.grad_views)
        return StepResult(loss, logits, store.grad_views)
    edges = part_edges(n, parts)
    group = group if group is not None and group.size == parts else ThreadGroup(parts)
    members = [group.member(rank) for rank in range(parts)]
    modes = [mode.part(member, generators) for member, generators in zip(members, fork_generators(model, parts),
                                                                        strict=True)]
    forwards = run_parts([partial(model.forward, x[a:b], m) for (a, b), m in zip(edges, modes, strict=True)],
                         on_error=group.abort)
    logits = array_module(x).concatenate([out for out, _ in forwards])
    loss, loss_ctx = loss_fn.forward(logits, y)
    dlogits = loss_fn.backward(loss_ctx)

    def backward(rank: int, ctx, a: int, b: int) -> None:
        buffer, views = store.part_grads(parts)[rank]
        model.backward(ctx, dlogits[a:b], need_dx=False, into=views)
        members[rank].allreduce(buffer)                # every part's buffer now holds the sum

    run_parts([partial(backward, rank, ctx, a, b) for rank, ((a, b), (_, ctx)) in enumerate(zip(edges, forwards,
                                                                                               strict=True))],
              on_error=group.abort)
    return StepResult(loss, logits, store.grad_views)


def read_back(result: StepResult, y, grads) -> tuple[float, float, bool]:
    """``(loss, number correct, whether every gradient is finite)`` of a step, read from the device in
    one transfer (one host sync on a GPU): the three are reduced there and stacked first."""
    xp = array_module(result.logits)
    summary = xp.stack([xp.asarray(result.loss, dtype=np.float64),
                        (result.logits.argmax(axis=1) == y).sum().astype(np.float64),
                        xp.isfinite(grads).all().astype(np.float64)])
    loss, correct, finite = (float(v) for v in to_numpy(summary))
    return loss, correct, bool(finite)


def train_step(model, loss_fn: SoftmaxCrossEntropy, optimizer: Optimizer, x, y, workers: int | None = None) -> tuple:
    """Forward, loss, backward and update on one batch (see :func:`forward_backward`).

    Returns:
        ``(loss, logits)``: the 0-d loss array and the ``(N, K)`` logits, both before the update.
    """
    result = forward_backward(model, loss_fn, x, y, workers)
    optimizer.step(model, result.grads)
    return result.loss, result.logits


def accuracy(logits, y) -> float:
    """Fraction of rows of ``logits`` ``(N, K)`` whose arg-max equals ``y`` ``(N,)``."""
    return float((logits.argmax(axis=1) == y).mean())
