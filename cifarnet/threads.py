"""Worker threads for splitting a batch across cores (evaluation and data-parallel training).

NumPy and OpenBLAS release the GIL inside their loops, so plain threads run side by side. Each
part runs with one BLAS thread (:func:`cifarnet.blas.limited_blas_threads`), so the cores are
not oversubscribed.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}
_inside = threading.local()            # set while this thread runs a task of run_side_by_side


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def side_by_side() -> bool:
    """Whether this thread runs one of several tasks of :func:`run_side_by_side` now. Its NumPy
    calls then share the interpreter lock with the others': every call that releases the lock may
    wait to take it back (tens of microseconds on a virtual machine's idle core), so work that
    could be done in fewer, larger calls should be (docs/performance.md, "Winograd's transforms
    by rows and columns")."""
    return getattr(_inside, "shared", False)


def helper_pool(helpers: int) -> ThreadPoolExecutor:
    """A long-lived pool of ``helpers`` threads (the caller's own thread does the first part)."""
    pool = _pools.get(helpers)
    if pool is None:
        pool = _pools[helpers] = ThreadPoolExecutor(helpers, thread_name_prefix="cifarnet-worker")
    return pool


def run_side_by_side(tasks: Sequence[Callable[[], T]], on_error: Callable[[], None] | None = None) -> list[T]:
    """Run ``tasks`` at once: the first on this thread, the others on helper threads.

    Every task runs under this thread's NumPy error settings (``np.errstate`` does not carry
    over to other threads by itself). All tasks are waited for, even when one fails.

    Args:
        on_error: called as soon as any task raises, e.g. to break a barrier the others wait at.
    Returns:
        The tasks' results, in order.
    Raises:
        The first task's exception (in task order) that is not a ``threading.BrokenBarrierError``,
        else the first ``BrokenBarrierError``. RuntimeError when called from inside a task: the
        nested tasks would queue behind their callers on the same helper threads and never run.
    """
    if getattr(_inside, "active", False):
        raise RuntimeError("run_side_by_side cannot be nested: a task may not split its own work again")
    settings = np.geterr()

    def guarded(task):
        _inside.active, _inside.shared = True, len(tasks) > 1
        try:
            with np.errstate(**settings):
                return task()
        except BaseException:
            if on_error is not None:
                on_error()
            raise
        finally:
            _inside.active = _inside.shared = False

    futures = [helper_pool(len(tasks) - 1).submit(guarded, task) for task in tasks[1:]] if len(tasks) > 1 else []
    outcomes: list[tuple[bool, object]] = []
    try:
        outcomes.append((True, guarded(tasks[0])))
    except BaseException as error:              # noqa: BLE001 (re-raised below, after the others finish)
        outcomes.append((False, error))
    for future in futures:
        error = future.exception()
        outcomes.append((False, error) if error is not None else (True, future.result()))
    errors = [value for ok, value in outcomes if not ok]
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0]
    return [value for _, value in outcomes]


class HandoffBarrier:
    """A reusable barrier for ``parties`` threads, as ``threading.Barrier`` (``wait``, ``abort``,
    ``threading.BrokenBarrierError``) with the waiting done in C: a waiter blocks on a lock of its
    own, which the last thread to arrive releases. ``threading.Barrier`` waits on a condition
    variable in Python code, holding the interpreter lock through more bytecode per wait; a
    data-parallel training step crosses a barrier at every batch norm (70 times a ResNet-32 step),
    and while one thread holds that lock the other cannot continue after its own NumPy call.
    """

    def __init__(self, parties: int):
        if parties < 1:
            raise ValueError(f"a barrier needs at least one party, got {parties}")
        self.parties = parties
        self._mutex = threading.Lock()
        self._arrived = 0
        self._waiting: list = []
        self._broken = False
        self._own = threading.local()

    @property
    def broken(self) -> bool:
        return self._broken

    def wait(self) -> None:
        """Block until all ``parties`` threads have called it (then all go on); raises
        ``threading.BrokenBarrierError`` if the barrier is, or becomes, aborted."""
        self.finish(self.arrive())

    def arrive(self):
        """The first half of :meth:`wait`: count this thread in and return at once, with what
        :meth:`finish` blocks on (None for the last to arrive, who has opened every waiter's lock).
        Between the two a thread may do work of its own instead of idling until the others come."""
        with self._mutex:
            if self._broken:
                raise threading.BrokenBarrierError
            self._arrived += 1
            if self._arrived == self.parties:           # the last one opens every waiter's lock
                self._arrived = 0
                waiting, self._waiting = self._waiting, []
                for lock in waiting:
                    lock.release()
                return None
            lock = getattr(self._own, "lock", None)
            if lock is None:                            # closed: acquired by this thread, opened by another
                lock = self._own.lock = threading.Lock()
                lock.acquire()
            self._waiting.append(lock)
            return lock

    def finish(self, arrival) -> None:
        """The second half of :meth:`wait`: block until every party has arrived (``arrival``: what
        :meth:`arrive` returned)."""
        if arrival is not None:
            arrival.acquire()                           # released by the last arrival (or by abort)
        if self._broken:
            raise threading.BrokenBarrierError

    def abort(self) -> None:
        """Break the barrier: every thread waiting now, and every later ``wait``, raises
        ``threading.BrokenBarrierError``."""
        with self._mutex:
            self._broken = True
            waiting, self._waiting = self._waiting, []
            for lock in waiting:
                lock.release()
