"""Image-parallel work on every core: a batch cut into groups of images, one thread per group,
with OpenBLAS limited to one thread per call while the groups run.

NumPy runs copies and element-wise operations on one core; only BLAS uses them all. Work on
independent images (a convolution's chunks, an eval-mode forward) can instead run one group of
images per core: the copies then use every core too, and each core's matrix products run on
their own. NumPy and OpenBLAS release the GIL inside their loops, so plain threads suffice.
Nothing nests: work started inside a group runs serially in that group's thread.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from .blas import limited_blas_threads

_local = threading.local()
_pools: dict[int, ThreadPoolExecutor] = {}


def default_workers() -> int:
    """One worker per available core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


WORKERS = default_workers()          # groups per batch; 1 turns image parallelism off


def group_bounds(n: int, per_chunk: int, groups: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into up to ``groups`` contiguous ranges whose starts are multiples of
    ``per_chunk`` (so each group is whole chunks), as even as possible; empty ranges dropped."""
    chunks = -(-n // per_chunk)
    edges = [min(n, per_chunk * (chunks * g // groups)) for g in range(groups + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def over_images(work: Callable[[int, int], Any], n: int, per_chunk: int, xp: Any = np,
                workers: int | None = None) -> list:
    """Call ``work(start, stop)`` for groups of images covering ``range(n)``; return the results.

    The groups run on ``workers`` threads (default :data:`WORKERS`) with OpenBLAS on one thread
    each, where that helps and is possible: NumPy arrays, more than one chunk of ``per_chunk``
    images, OpenBLAS's thread count settable, and not already inside a group. Otherwise
    ``work(0, n)`` runs here. ``work`` must write only to its own images.
    """
    workers = WORKERS if workers is None else workers
    bounds = group_bounds(n, per_chunk, workers) if xp is np and not getattr(_local, "inside", False) else []
    if len(bounds) < 2:
        return [work(0, n)]
    with limited_blas_threads(1) as limited:
        if not limited:                                   # BLAS would oversubscribe the cores
            return [work(0, n)]
        pool = _pools.setdefault(len(bounds) - 1,
                                 ThreadPoolExecutor(len(bounds) - 1, thread_name_prefix="cifarnet-images"))
        futures = [pool.submit(_in_group, work, a, b) for a, b in bounds[1:]]
        first = _in_group(work, *bounds[0])
        return [first] + [f.result() for f in futures]


def _in_group(work: Callable[[int, int], Any], start: int, stop: int):
    _local.inside = True
    try:
        return work(start, stop)
    finally:
        _local.inside = False
