"""Keep freed memory inside the process, so that each training step does not fault it back in.

A training step allocates and frees the same large arrays (column matrices, activations,
gradients) again and again. glibc's ``malloc`` hands blocks above its mmap threshold (at most
32 MiB by default) straight back to the operating system when they are freed, and trims the top of
its heap, so the next step's arrays arrive as fresh pages that the kernel must fault in and zero
(``docs/performance.md`` has what that cost).
Raising both thresholds keeps that memory in malloc's heap for reuse. Peak memory is unchanged
(the same arrays are live at the peak); resident memory simply stays at the peak after a step
instead of falling back.

The thresholds govern the main arena. A thread that allocates on its own (the second part of a
data-parallel step, an evaluation part) gets an arena of its own, made of separate 64 MiB heaps
that glibc shrinks and unmaps by rules of its own: in a two-thread ResNet-32 step at batch 128 the
worker thread faulted 84,000 to 92,000 pages (330 to 360 MB) back in, every step, in most
processes, and a few hundred in others, which made the step time swing by a quarter from process
to process. One arena for every thread (``M_ARENA_MAX`` = 1) puts all of them under the
thresholds: 2 faults a step. The lock the threads then share costs nothing measurable: a step
allocates a few hundred large arrays, not millions of small objects. The setting must come before
any other thread allocates (a thread that already has an arena keeps it, and later threads may be
handed that one), so the experiment runner makes its backend, which calls
:func:`keep_freed_memory`, before anything that starts threads (trackers, data loaders, the
training threads).

This touches the whole process, so it happens only when asked: the experiment runner and the
benchmark ask for it on the NumPy backend (``backend.keep_freed_memory``, default true).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1          # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
KEEP_BELOW = 1 << 30           # arrays up to 1 GiB come from the reusable heap
_INT_MAX = 2**31 - 1

_state = {"applied": None}


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed blocks up to 1 GiB for reuse, in one arena shared by
    every thread; idempotent.

    Returns:
        True when the setting is in force (glibc on Linux), False where there is nothing to tune
        (other C libraries and platforms), in which case nothing changed.
    """
    if _state["applied"] is not None:
        return _state["applied"]
    applied = False
    mallopt = _glibc("mallopt")
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        applied = all([mallopt(M_ARENA_MAX, 1), mallopt(M_MMAP_THRESHOLD, KEEP_BELOW),
                       mallopt(M_TRIM_THRESHOLD, _INT_MAX)])
    _state["applied"] = applied
    return applied


def _glibc(name: str):
    """glibc's function ``name`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def give_back_freed_memory() -> bool:
    """Return the pages of freed blocks to the operating system now (glibc's ``malloc_trim``), so
    that memory a one-off phase freed (a training plan's first, recorded step, before its buffers
    move into one arena) does not stay resident beside what replaced it. Returns whether glibc did
    it (False elsewhere: nothing to do)."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    trim(0)
    return True
