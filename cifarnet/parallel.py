"""One batch split between threads, for training and for inference alike.

NumPy runs batch norm, ReLU, residual additions, padding and im2col copies on one core, and those
take about half of a ResNet-32 step. Splitting a batch into parts that run side by side, each on
its own thread with one BLAS thread (:mod:`cifarnet.blas`), puts every core to work on all of
it; NumPy and OpenBLAS release the GIL inside their loops, so plain threads suffice. Layers keep
nothing about a call, so the parts run the very same model, each with its own contexts.

In training, batch norm must still see the whole batch: each part's :class:`Mode` carries its
member of a :class:`ThreadGroup` (a communicator, :mod:`cifarnet.comm`), which adds the parts'
per-channel sums before normalising, and the parts' gradient buffers are summed by the same
group's ``allreduce``, so a split step equals the one-thread step up to rounding; and each
part's dropout layers draw from generators derived from the layers' own
(:func:`fork_generators`), in a fixed order, so masks depend on the seed and the number of
parts only.

Splitting applies to NumPy arrays where OpenBLAS's thread count can be set, with at least
``MIN_IMAGES_PER_PART`` images per part (``min_per_part``). It pays for ResNets, not for SimpleCNN,
whose config trains it on one thread (``trainer.workers``); the measurements behind these defaults
are in ``docs/performance.md``, "Measurements behind the defaults".
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import reduce
from operator import add
from typing import Any

import numpy as np

from .blas import blas_threads, limited_blas_threads
from .comm import LOCAL, Communicator
from .errors import InvalidValue
from .threads import HandoffBarrier, default_workers, run_side_by_side

MIN_IMAGES_PER_PART = 16
# OpenBLAS threads per worker thread while a run trains and evaluates (cifarnet.experiment.training):
# a run's threads are its workers (x its processes, at most the cores), each computing with one
# BLAS thread, also when there is one worker: OpenBLAS's own threads, left to their default (one
# per core), wait for each other at every product, which beside another job costs a multiple of
# the idle time (docs/performance.md, "BLAS threads").
BLAS_THREADS_PER_WORKER = 1


def parts_for(batch: int, workers: int | None = None, xp=np, min_per_part: int = MIN_IMAGES_PER_PART) -> int:
    """How many parts a batch of ``batch`` examples on array module ``xp`` is split into
    (1: not split). ``workers``: at most this many (None: one per core); each part gets at least
    ``min_per_part`` examples (tests split small batches with 1).

    Raises:
        InvalidValue: ``workers`` below 1.
    """
    if workers is not None and workers < 1:
        raise InvalidValue(f"workers must be >= 1 (or None for one per core), got {workers}")
    workers = default_workers() if workers is None else workers
    workers = min(workers, batch // max(1, min_per_part))
    if xp is not np or workers < 2 or blas_threads() is None:
        return 1
    return workers


_OFFERED = threading.local()


def offer_work(tasks: list[Callable[[], Any]]) -> None:
    """Hand ``tasks`` to this thread's next exchange in a :class:`ThreadGroup`, which runs them
    after this thread has arrived and before it waits for the others: the time a later part takes
    to arrive goes into them instead of idling. Tasks no exchange ran stay offered:
    :func:`take_offered_work` gives them back, to run now."""
    _OFFERED.tasks = list(tasks)


def take_offered_work() -> list[Callable[[], Any]]:
    """This thread's offered tasks, no longer offered (an empty list if none)."""
    tasks = getattr(_OFFERED, "tasks", None) or []
    _OFFERED.tasks = None
    return tasks


def part_edges(n: int, parts: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each part of ``n`` examples, as even as possible."""
    edges = [n * i // parts for i in range(parts + 1)]
    return list(zip(edges, edges[1:], strict=False))


def run_parts(tasks: Sequence[Callable[[], Any]], on_error: Callable[[], None] | None = None) -> list:
    """Run one task per part side by side, each with one BLAS thread; results in part order."""
    with limited_blas_threads(1):
        return run_side_by_side(tasks, on_error=on_error)


class ThreadGroup:
    """The parts of one split batch as a communication group (:mod:`cifarnet.comm`), one thread each.

    Each part's thread uses :meth:`member` for its rank and makes the same calls in the same order
    as the others. Two sets of slots alternate, so one barrier per sum suffices: a thread can only
    write a set again after every thread has passed the next barrier, hence read this one.
    """

    def __init__(self, parts: int, outer: Communicator = LOCAL):
        self.size, self.outer = parts, outer
        self._barrier = HandoffBarrier(parts)
        self._slots: list[list[Any]] = [[None] * parts, [None] * parts]
        self._calls = [0] * parts
        self._shared: list[Any] = [None, None]

    def member(self, rank: int) -> ThreadMember:
        return ThreadMember(self, rank)

    def abort(self) -> None:
        """Release every thread waiting in a collective with ``threading.BrokenBarrierError``."""
        self._barrier.abort()

    def _gather(self, rank: int, values: tuple) -> list[tuple]:
        slots = self._slots[self._calls[rank] % 2]
        self._calls[rank] += 1
        slots[rank] = values
        work = take_offered_work()
        if not work:
            self._barrier.wait()
            return slots
        arrival = self._barrier.arrive()                # the others may still be on their way:
        for task in work:                               # do this thread's offered work meanwhile
            task()
        self._barrier.finish(arrival)
        return slots

    def _sum(self, rank: int, values: tuple) -> tuple:
        """The parts' sum; with an ``outer`` group of processes around the threads, that sum summed
        over the processes by part 0 alone, which hands it to the others (one more barrier)."""
        which = self._calls[rank] % 2
        slots = self._gather(rank, values)
        total = tuple(reduce(add, (part[i] for part in slots)) for i in range(len(values)))
        if self.outer.size == 1:
            return total
        if rank == 0:
            self._shared[which] = self.outer.sum(*total)
        self._barrier.wait()
        return self._shared[which]


class ThreadMember(Communicator):
    """One part's communicator; its ``leader`` (rank 0) alone updates the shared model's running
    statistics. ``sum`` reaches across the group's ``outer`` processes too (batch norm over the global
    batch); ``allreduce`` and ``broadcast`` stay among the threads (the process's gradient buffer is
    reduced over the processes once, after the threads: :func:`cifarnet.training.step.forward_backward`)."""

    def __init__(self, group: ThreadGroup, rank: int):
        self.group, self.rank, self.size = group, rank, group.size
        self.leader = rank == 0

    @property
    def batch_parts(self) -> int:
        """The parts of the batch ``sum`` adds over: this group's threads times its ``outer`` processes."""
        return self.size * self.group.outer.batch_parts

    @property
    def statistics_exchanges(self) -> int:
        return self.group.outer.statistics_exchanges

    def sum(self, *values):
        """Each of ``values`` (arrays or numbers) summed over all parts, in part order."""
        return self.group._sum(self.rank, values)

    def allreduce(self, buffer) -> None:
        """``buffer`` replaced by the sum of every part's, in part order. Each part sums one slice
        of the buffers (along their first axis: into the first part's slice, then copied into the
        others'), so the work is shared rather than repeated and nothing is allocated; the slices
        are disjoint, and the closing barrier keeps every buffer from being used before all slices
        are in."""
        slots = self.group._gather(self.rank, (buffer,))
        a, b = part_edges(buffer.shape[0], self.size)[self.rank]
        if b > a:
            total = slots[0][0][a:b]                   # summed in place, in part order: no new array
            for part in slots[1:]:
                total += part[0][a:b]
            for part in slots[1:]:
                part[0][a:b] = total
        self.group._barrier.wait()

    def broadcast(self, buffer, root: int = 0) -> None:
        slots = self.group._gather(self.rank, (buffer,))
        source = slots[root][0].copy() if self.rank != root else None
        self.group._barrier.wait()
        if source is not None:
            buffer[...] = source

    def barrier(self) -> None:
        self.group._barrier.wait()


class PartGenerators:
    """The dropout generators of one part of a split batch, by the dotted name of their layer (a
    name means the same layer in every process; an ``id`` would not)."""

    def __init__(self, by_name: dict[str, np.random.Generator], names: dict[int, str]):
        self.by_name, self._names = by_name, names

    def of(self, layer) -> np.random.Generator | None:
        """``layer``'s generator for this part, or None if it has none here."""
        name = self._names.get(id(layer))
        return None if name is None else self.by_name.get(name)


def fork_generators(model, parts: int, first: int = 0, count: int | None = None) -> list[PartGenerators]:
    """For each of ``parts`` parts of a global batch, a generator per layer of ``model`` that draws
    random numbers (``layer.rng``), seeded from the layer's own generator, which advances: part by
    part, layers in model order. Parts ``first .. first + count - 1`` are returned (a process of a
    data-parallel group keeps its own parts; every process advances the layers' generators alike)."""
    layers = [(name or "dropout", layer) for name, layer in model.walk() if getattr(layer, "rng", None) is not None]
    names = {id(layer): name for name, layer in layers}
    forks = [PartGenerators({name: np.random.default_rng(layer.rng.integers(2**63)) for name, layer in layers}, names)
             for _ in range(parts)]
    return forks[first:first + (parts - first if count is None else count)]
