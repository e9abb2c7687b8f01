"""One optimisation step, its forward and backward split across threads where that pays."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from signal import SIGINT, SIGTERM
from typing import Any

import numpy as np

from ..backend import array_module, to_numpy
from ..comm import LOCAL, Communicator
from ..functional import step_summary
from ..layers import TRAIN, Mode
from ..losses import SoftmaxCrossEntropy
from ..optim import Optimizer
from ..parallel import MIN_IMAGES_PER_PART, ThreadGroup, fork_generators, part_edges, parts_for, run_parts
from ..store import FlatStore
from .overlap import GradientBuckets
from .plan import TrainingPlan


@dataclass
class StepResult:
    """What one forward and backward produced: the 0-d ``loss``, the ``(N, K)`` ``logits`` and
    ``grads`` (dotted parameter name -> gradient, summed over the parts of a split batch): the
    gradient views of the model's flat store (:mod:`cifarnet.store`)."""

    loss: Any
    logits: Any
    grads: dict[str, Any]


def thread_group(share: int, workers: int | None, xp, comm: Communicator = LOCAL,
                 sync_batchnorm: bool = True, min_per_part: int = MIN_IMAGES_PER_PART) -> ThreadGroup | None:
    """The communicator of the threads a batch share of ``share`` images is split between, reaching
    across ``comm``'s processes for batch norm if ``sync_batchnorm``; None for one thread in one process."""
    parts = parts_for(share, workers, xp, min_per_part)
    if parts == 1 and comm.size == 1:
        return None
    return ThreadGroup(parts, comm if sync_batchnorm else LOCAL)


@dataclass
class StepSummary:
    """A step as the host sees it: the batch's mean ``loss``, the number ``correct``, whether every
    gradient is ``finite``, the ``images`` in the (global) batch, and whether any process asked to
    ``stop`` (the signal's number, or None)."""

    loss: float
    correct: float
    finite: bool
    images: int
    stop: int | None = None


def forward_backward(model, loss_fn: SoftmaxCrossEntropy, x, y, workers: int | None = None,
                     mode: Mode = TRAIN, group: ThreadGroup | None = None, comm: Communicator = LOCAL,
                     total: int | None = None, overlap: bool = True,
                     min_per_part: int = MIN_IMAGES_PER_PART, static_buffers: bool = False) -> StepResult:
    """Forward, loss and backward on one batch; the images get no gradient. The gradients are
    written into the model's flat store (``model.store.grads``). The model runs as its training
    plan (:class:`cifarnet.training.plan.TrainingPlan`: traced once, batch norm fused with the
    activation after it), which computes what ``model.forward`` and ``model.backward`` do.

    With NumPy, the batch is split between ``workers`` threads (:mod:`cifarnet.parallel`; None:
    one per core) when it is large enough: each part runs the same model with its own contexts
    and its own gradient buffer, and talks to the others through its member of ``group`` (a
    :class:`ThreadGroup` of that many parts, made here if not given): batch norm adds its
    statistics across the parts, the loss is taken on the whole batch on this thread, and the
    parts' gradient buffers are summed by the group's ``allreduce``. The result equals the
    one-thread step up to rounding.

    With ``comm`` a group of processes (:mod:`cifarnet.distributed`), ``x`` and ``y`` are this
    process's share of a global batch of ``total`` images: batch norm's sums reach across the
    processes too (if ``group.outer`` is ``comm``), the loss gradient is scaled to the global mean,
    and the gradient buffer is summed over the processes: with one thread per process, bucket by
    bucket while the backward pass runs (:mod:`cifarnet.training.overlap`), else once, after the
    threads. The parts of
    every process together are the parts of the global batch: ``comm.size * parts`` of them, with
    the dropout generators a one-process run with that many threads would use.

    Args:
        x: ``(N, H, W, C)`` images on the model's backend;  y: ``(N,)`` integer labels.
        total: the global batch (``N`` if None); ``StepResult.loss`` stays this share's mean.
        overlap: reduce the gradients over the processes bucket by bucket during the backward
            pass (one thread per process); False: in one blocking ``allreduce`` after it.
        min_per_part: the fewest images a thread's part may have (:func:`cifarnet.parallel.parts_for`).
        static_buffers: each part computes in its workspace of the plan (:meth:`TrainingPlan.workspace`):
            buffers planned from the first step and reused, at the same addresses, by every later
            one; the returned logits and gradients are not among them.
    """
    n = x.shape[0]
    store = FlatStore.of(model)
    parts = parts_for(n, workers, array_module(x), min_per_part)
    scale = None if total is None or total == n else n / total
    plan = TrainingPlan.of(model)
    if parts < 2 and comm.size == 1:
        workspace = plan.workspace(0) if static_buffers else None
        logits, tape = plan.forward(x, mode, workspace=workspace)
        loss, loss_ctx = loss_fn.forward(logits, y)
        plan.backward(tape, loss_fn.backward(loss_ctx, scale), into=store.grad_views, workspace=workspace)
        return StepResult(loss, logits, store.grad_views)
    edges = part_edges(n, parts)
    workspaces = [plan.workspace(rank) if static_buffers else None for rank in range(parts)]
    if group is None or group.size != parts:                  # e.g. a last, smaller batch
        group = ThreadGroup(parts, comm if group is None else group.outer)
    members = [group.member(rank) for rank in range(parts)]
    forks = fork_generators(model, comm.size * parts, first=comm.rank * parts, count=parts)
    modes = [mode.part(member, generators) for member, generators in zip(members, forks, strict=True)]
    forwards = run_parts([partial(plan.forward, x[a:b], m, workspace=workspace)
                          for (a, b), m, workspace in zip(edges, modes, workspaces, strict=True)], on_error=group.abort)
    logits = array_module(x).concatenate([out for out, _ in forwards])
    loss, loss_ctx = loss_fn.forward(logits, y)
    dlogits = loss_fn.backward(loss_ctx, scale)

    buckets = GradientBuckets(store, comm) if overlap and parts == 1 and comm.size > 1 else None

    def backward(rank: int, tape, a: int, b: int) -> None:
        buffer, views = store.part_grads(parts)[rank]
        plan.backward(tape, dlogits[a:b], into=views, on_ready=None if buckets is None else buckets.ready,
                      workspace=workspaces[rank], defer_weights=workspaces[rank] is None)
        members[rank].allreduce(buffer)                # every part's buffer now holds the sum

    run_parts([partial(backward, rank, ctx, a, b) for rank, ((a, b), (_, ctx)) in enumerate(zip(edges, forwards,
                                                                                               strict=True))],
              on_error=group.abort)
    if buckets is not None:
        buckets.finish()                               # reduced over the processes during the backward pass
    else:
        comm.allreduce(store.grads)                    # over the processes (nothing crosses for one)
    return StepResult(loss, logits, store.grad_views)


def read_back(result: StepResult, y, grads, comm: Communicator = LOCAL, stop: int | None = None) -> StepSummary:
    """What a step did, read from the device in one transfer (one host sync on a GPU): the values
    are reduced there and stacked first. Across processes (``comm``) they are summed in one more
    exchange, so every process sees the global batch's loss and count, and a stop any of them asked
    for (the number of a signal it received, ``stop``: SIGINT wins over SIGTERM)."""
    n = len(y)
    summary, _ = step_summary.forward(result.loss, result.logits, y, grads)
    loss, correct, finite = (float(v) for v in to_numpy(summary))
    if comm.size == 1:
        return StepSummary(loss, correct, bool(finite), n, stop)
    loss_sum, correct, finite, images, interrupts, terminations = comm.sum(np.asarray(
        [loss * n, correct, finite, n, stop == SIGINT, stop == SIGTERM], dtype=np.float64))[0].tolist()
    agreed = SIGINT if interrupts else SIGTERM if terminations else None
    return StepSummary(loss_sum / images, correct, finite == comm.size, int(images), agreed)

def train_step(model, loss_fn: SoftmaxCrossEntropy, optimizer: Optimizer, x, y, workers: int | None = None,
               min_per_part: int = MIN_IMAGES_PER_PART, static_buffers: bool = False) -> tuple:
    """Forward, loss, backward and update on one batch (see :func:`forward_backward`).

    Returns:
        ``(loss, logits)``: the 0-d loss array and the ``(N, K)`` logits, both before the update.
    """
    result = forward_backward(model, loss_fn, x, y, workers, min_per_part=min_per_part, static_buffers=static_buffers)
    optimizer.step(model, result.grads)
    return result.loss, result.logits


def accuracy(logits, y) -> float:
    """Fraction of rows of ``logits`` ``(N, K)`` whose arg-max equals ``y`` ``(N,)``."""
    return float((logits.argmax(axis=1) == y).mean())
