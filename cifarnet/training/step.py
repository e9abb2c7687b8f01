"""One optimisation step, its forward and backward split across threads where that pays."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial, reduce
from operator import add
from typing import Any

from ..backend import array_module
from ..layers import TRAIN, Mode
from ..losses import SoftmaxCrossEntropy
from ..optim import Optimizer
from ..parallel import ThreadSums, fork_generators, part_edges, parts_for, run_parts


@dataclass
class StepResult:
    """What one forward and backward produced: the 0-d ``loss``, the ``(N, K)`` ``logits`` and
    ``grads`` (dotted parameter name -> gradient, summed over the parts of a split batch)."""

    loss: Any
    logits: Any
    grads: dict[str, Any]


def forward_backward(model, loss_fn: SoftmaxCrossEntropy, x, y, workers: int | None = None,
                     mode: Mode = TRAIN) -> StepResult:
    """Forward, loss and backward on one batch; the images get no gradient.

    With NumPy, the batch is split between ``workers`` threads (:mod:`cifarnet.parallel`; None:
    one per core) when it is large enough: each part runs the same model with its own contexts,
    batch norm adds its statistics across the parts, the loss is taken on the whole batch on
    this thread, and the parts' gradients are added up. The result equals the one-thread step up
    to rounding.

    Args:
        x: ``(N, H, W, C)`` images on the model's backend;  y: ``(N,)`` integer labels.
    """
    n = x.shape[0]
    parts = parts_for(n, workers, array_module(x))
    if parts < 2:
        logits, ctx = model.forward(x, mode)
        loss, loss_ctx = loss_fn.forward(logits, y)
        _, grads = model.backward(ctx, loss_fn.backward(loss_ctx), need_dx=False)
        return StepResult(loss, logits, grads)
    edges = part_edges(n, parts)
    sums = ThreadSums(parts)
    modes = [mode.part(sums.reducer(rank), generators) for rank, generators in enumerate(fork_generators(model, parts))]
    forwards = run_parts([partial(model.forward, x[a:b], m) for (a, b), m in zip(edges, modes, strict=True)],
                         on_error=sums.abort)
    logits = array_module(x).concatenate([out for out, _ in forwards])
    loss, loss_ctx = loss_fn.forward(logits, y)
    dlogits = loss_fn.backward(loss_ctx)
    backwards = run_parts([partial(model.backward, ctx, dlogits[a:b], need_dx=False)
                           for (a, b), (_, ctx) in zip(edges, forwards, strict=True)], on_error=sums.abort)
    shares = [grads for _, grads in backwards]
    return StepResult(loss, logits, {name: reduce(add, (share[name] for share in shares)) for name in shares[0]})


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
