"""Data-parallel training on one machine: a batch split between threads, batch norm synchronised.

NumPy runs batch norm, ReLU, residual additions, padding and im2col copies on one core, and
those take about half of a ResNet-32 step. Splitting the batch between threads, each with one
BLAS thread and a replica of the model (:meth:`Layer.replica`: the same parameter arrays, its
own gradients and caches), puts every core to work on all of it. Batch norm must still see the
whole batch: the replicas' batch norms add their per-channel sums across threads
(:class:`ReplicaGroup`) before normalising, so the result is the single-thread step's up to
rounding. The loss is computed on the whole batch, so each replica's parameter gradients are
its share of the batch gradient, and the shares are added into the model's ``grads``.

Used on NumPy when OpenBLAS's thread count can be set (:mod:`cifarnet.blas`), with at least
``MIN_IMAGES_PER_WORKER`` images per part; otherwise forward and backward run as usual.
Dropout replicas draw from generators seeded by the model's own, so masks depend on the number
of workers as well as the seed.

Measured on a 2-core machine (paired, the same process): a ResNet-32 step at batch 128 took 0.75x
to 0.84x the unsplit time; SimpleCNN at batch 64, whose 12 ms step is mostly products that BLAS
already runs on both cores, took 1.4x, so its config trains it on one thread (``trainer.workers``).
"""
from __future__ import annotations

import threading
from functools import partial, reduce
from operator import add
from typing import Any

import numpy as np

from ..backend import array_module
from ..blas import blas_threads, limited_blas_threads
from ..layers import BatchNorm
from ..threads import default_workers, run_side_by_side

MIN_IMAGES_PER_WORKER = 32


class ReplicaGroup:
    """Adds up values across the threads of one data-parallel step (an all-reduce).

    Each thread calls :meth:`link` once for its rank, then ``sum`` in the same order as the
    others. Two sets of slots alternate, so one barrier per sum suffices: a thread can only
    write a set again after every thread has passed the next barrier, hence read this one.
    """

    def __init__(self, size: int):
        self._barrier = threading.Barrier(size)
        self._slots: list[list[Any]] = [[None] * size, [None] * size]
        self._calls = [0] * size

    def link(self, rank: int) -> "ReplicaLink":
        return ReplicaLink(self, rank)

    def abort(self) -> None:
        """Release every thread waiting in ``sum`` with ``threading.BrokenBarrierError``."""
        self._barrier.abort()

    def _sum(self, rank: int, values: tuple) -> tuple:
        slots = self._slots[self._calls[rank] % 2]
        self._calls[rank] += 1
        slots[rank] = values
        self._barrier.wait()
        return tuple(reduce(add, (part[i] for part in slots)) for i in range(len(values)))


class ReplicaLink:
    """One thread's handle on a :class:`ReplicaGroup`; what :attr:`BatchNorm.sync` expects."""

    def __init__(self, group: ReplicaGroup, rank: int):
        self.group, self.rank = group, rank
        self.leader = rank == 0                  # only one replica updates the running statistics

    def sum(self, *values):
        """Each of ``values`` (arrays or numbers) summed over all threads, in rank order."""
        return self.group._sum(self.rank, values)


class DataParallel:
    """``forward`` and ``backward`` of ``model`` in training, the batch split across threads.

    Args:
        model: the model; its parameters are used in place and its ``grads`` receive the sum of
            the replicas' gradients after ``backward``.
        workers: parts per batch; default :func:`cifarnet.threads.default_workers`.
        min_images: the smallest part worth a thread; smaller batches run unsplit.
    Raises:
        ValueError: ``workers`` below 1.
    """

    def __init__(self, model, workers: int | None = None, min_images: int = MIN_IMAGES_PER_WORKER):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 (or None for one per core), got {workers}")
        self.model, self.workers, self.min_images = model, workers, min_images
        self._pending: tuple | None = None        # (group, replicas, edges) between forward and backward

    def parts(self, batch: int, xp=np) -> int:
        """How many parts a batch of ``batch`` images on array module ``xp`` is split into
        (1: not split)."""
        workers = default_workers() if self.workers is None else self.workers
        workers = min(workers, batch // max(1, self.min_images))
        if xp is not np or workers < 2 or blas_threads() is None:
            return 1
        return workers

    def forward(self, x):
        """``model.forward(x)`` in training mode. ``x``: ``(N, ...)``; returns ``(N, ...)``."""
        self._pending = None
        parts = self.parts(x.shape[0], array_module(x))
        if parts < 2:
            return self.model.forward(x)
        n = x.shape[0]
        edges = [n * i // parts for i in range(parts + 1)]
        group = ReplicaGroup(parts)
        replicas = [self.model.replica() for _ in range(parts)]
        for rank, replica in enumerate(replicas):
            link = group.link(rank)
            for layer in replica.all_layers():
                if isinstance(layer, BatchNorm):
                    layer.sync = link
        outputs = self._run(group, [partial(r.forward, x[a:b]) for r, a, b in zip(replicas, edges, edges[1:])])
        self._pending = (group, replicas, edges)
        return array_module(x).concatenate(outputs)

    def backward(self, dout):
        """``model.backward(dout)``: fills ``model``'s ``grads``; returns ``dx`` or None if the
        model computes no input gradient."""
        if self._pending is None:
            return self.model.backward(dout)
        group, replicas, edges = self._pending
        self._pending = None
        dxs = self._run(group, [partial(r.backward, dout[a:b]) for r, a, b in zip(replicas, edges, edges[1:])])
        for original, *twins in zip(self.model.all_layers(), *(r.all_layers() for r in replicas)):
            for key in twins[0].grads:
                original.grads[key] = reduce(add, (twin.grads[key] for twin in twins))
        return None if dxs[0] is None else array_module(dout).concatenate(dxs)

    @staticmethod
    def _run(group: ReplicaGroup, tasks: list) -> list:
        with limited_blas_threads(1):
            return run_side_by_side(tasks, on_error=group.abort)
