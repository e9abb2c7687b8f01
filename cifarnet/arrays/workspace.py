"""Arrays that live from one step to the next: the buffers a training plan allocates once.

An op that is given a :class:`Workspace` takes its arrays from it instead of allocating them: the
first step allocates, every later step with the same shapes gets the very same arrays back, at the
same addresses (what CUDA graphs need, and what keeps a step's transient memory small on the
CPU). Without a workspace (``None``) the functions below allocate, as every op did before. Three
kinds of array, by how long they live:

* :func:`pooled`: a node's output or an input gradient, alive from the pass that writes it until
  the plan finds it dead: a buffer of the size asked for from a pool shared by every scope, busy
  until :meth:`Workspace.release` (the training plan releases a node's output after the node's
  backward, and a gradient once no pending gradient shares its memory) or
  :meth:`Workspace.release_all` (at the start of each forward). A buffer an output held is handed
  out again for a gradient later in the backward pass, so the pool holds about what the most
  arrays alive at once need, as the allocator did before.
* :func:`take`: the scope's own array (what a node keeps for its backward besides its output): one
  per scope and name. Asked for with another shape or dtype than last time, it is replaced (the
  last, smaller batch of an epoch), so a scope never holds one per batch size.
* :func:`scratch`: a temporary that dies when the op returns (a chunk's column matrix, a padded
  copy): a slice of one arena shared by every scope, handed out from its start again after
  :meth:`Workspace.reset_scratch` (the training plan resets before each node), so the arena is as
  large as the most one op asks for at once, not the sum over ops. Within an op a name asked for
  again gets its slice back (a loop over chunks asks once per chunk); an op must not hold two
  uses of one name at once. Its contents are whatever the last op left (a padded buffer zeroes
  its own border, :func:`cifarnet.arrays.windows.zero_border`).

Names are per scope: :meth:`Workspace.scope` gives one node of a plan names of its own. Whoever
takes an array must not hand it out beyond the step that filled it: the next step writes it again.
The training plan keeps its last node's output (the logits) out of the workspace for that reason.
"""
from __future__ import annotations

from math import prod
from typing import Any

import numpy as np


class _Store:
    """What the scopes of one workspace share."""

    def __init__(self):
        self.named: dict[tuple, Any] = {}
        self.pool: dict[tuple, list[list]] = {}        # (size, dtype, module) -> [[flat array, busy]], oldest first
        self.busy: dict[int, list] = {}                # id of a busy pool array -> its entry
        self.scopes: dict[tuple, Any] = {}
        self.arena = None                              # flat bytes, scratch slices cut from it
        self.used = 0                                  # bytes of the arena handed out since the reset
        self.slices: dict[tuple, tuple[int, int]] = {}   # name -> (offset, bytes) since the reset
        self.allocations = 0


ALIGN = 64          # scratch slices start on cache-line boundaries


def _address(a) -> int:
    """Where ``a``'s first element lives (NumPy or CuPy)."""
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def _owner(a):
    """The array that owns ``a``'s memory (NumPy and CuPy point a view's ``base`` at it)."""
    return a if a.base is None else a.base


def _matches(found, shape: tuple, dtype, xp) -> bool:
    return found.shape == shape and found.dtype == dtype and isinstance(found, xp.ndarray)


class Workspace:
    """Named arrays, scratch arrays and a gradient pool, shared by the scopes of one store (see the
    module docstring).

    Attributes:
        allocations: how many arrays the store allocated so far (replacements included): constant
            across steady-state steps.
    """

    def __init__(self, prefix: tuple = (), store: _Store | None = None):
        self._prefix = prefix
        self._store = _Store() if store is None else store

    def scope(self, key) -> Workspace:
        """The workspace of one part (a node): its own names, the shared scratch arrays and pool
        (made once per key)."""
        prefix = self._prefix + (key,)
        found = self._store.scopes.get(prefix)
        if found is None:
            found = self._store.scopes[prefix] = Workspace(prefix, self._store)
        return found

    def _make(self, shape, dtype, xp, zeroed: bool):
        self._store.allocations += 1
        return xp.zeros(shape, dtype=dtype) if zeroed else xp.empty(shape, dtype=dtype)

    def take(self, name: str, shape: tuple, dtype, xp=np, zeroed: bool = False):
        """This scope's array ``name`` (see :func:`take`)."""
        key = self._prefix + (name,)
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        found = self._store.named.get(key)
        if found is not None and _matches(found, shape, dtype, xp):
            return found
        self._store.named.pop(key, None)                # let the old one go before making the new one
        made = self._store.named[key] = self._make(shape, dtype, xp, zeroed)
        return made

    def scratch(self, name: str, shape: tuple, dtype, xp=np):
        """The shared temporary ``name`` of this shape and dtype (see :func:`scratch`)."""
        dtype = np.dtype(dtype)
        store = self._store
        nbytes = prod(shape) * dtype.itemsize
        offset, room = store.slices.get(name, (0, -1))
        if room < nbytes:                               # a new slice after the ones handed out
            offset = -(-store.used // ALIGN) * ALIGN
            room = nbytes
            store.used = offset + nbytes
            if store.arena is None or store.arena.nbytes < store.used or not isinstance(store.arena, xp.ndarray):
                # too small: a larger arena from here on (slices already handed out keep the old one alive)
                size = max(store.used, 0 if store.arena is None else store.arena.nbytes)
                raw = self._make((size + ALIGN,), np.uint8, xp, False)
                shift = -_address(raw) % ALIGN
                store.arena = raw[shift:shift + size]
            store.slices[name] = (offset, room)
        return store.arena[offset:offset + nbytes].view(dtype).reshape(shape)

    def reset_scratch(self) -> None:
        """The scratch arrays handed out so far are dead: hand the arena out from its start again."""
        self._store.used = 0
        self._store.slices.clear()

    def pooled(self, shape: tuple, dtype, xp=np):
        """A free pool buffer of this many elements and dtype, now busy, seen through ``shape``
        (a new one if none is free)."""
        dtype = np.dtype(dtype)
        size = prod(shape)
        entries = self._store.pool.setdefault((size, dtype.str, xp.__name__), [])
        for entry in entries:                           # the oldest free one: the same one every step
            if not entry[1]:
                break
        else:
            entry = [self._make((size,), dtype, xp, False), False]
            entries.append(entry)
        entry[1] = True
        self._store.busy[id(entry[0])] = entry
        return entry[0].reshape(shape)

    def release(self, array) -> None:
        """Free the pool buffer ``array`` is a whole view of; any other array (or a part of one):
        nothing."""
        if array is None:
            return
        entry = self._store.busy.get(id(_owner(array)))
        if entry is not None and entry[0].size == array.size:
            entry[1] = False
            del self._store.busy[id(entry[0])]

    def release_all(self) -> None:
        for entry in self._store.busy.values():
            entry[1] = False
        self._store.busy.clear()

    @property
    def allocations(self) -> int:
        return self._store.allocations

    def arrays(self) -> list:
        """Every array of the store: named, zeroed scratch, the arena and the pooled."""
        arena = [] if self._store.arena is None else [self._store.arena]
        pooled = [entry[0] for entries in self._store.pool.values() for entry in entries]
        return list(self._store.named.values()) + arena + pooled

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays())


def take(workspace: Workspace | None, name: str, shape: tuple, dtype, xp=np, zeroed: bool = False):
    """``workspace``'s own array ``name`` for this shape and dtype, or a new array without one."""
    if workspace is None:
        return xp.zeros(shape, dtype=dtype) if zeroed else xp.empty(shape, dtype=dtype)
    return workspace.take(name, shape, dtype, xp, zeroed)


def scratch(workspace: Workspace | None, name: str, shape: tuple, dtype, xp=np, zeroed: bool = False):
    """A temporary from ``workspace``'s arena (whatever it holds), or a new array without one
    (zeros if ``zeroed``: a caller with a workspace zeroes what it needs itself)."""
    if workspace is None:
        return xp.zeros(shape, dtype=dtype) if zeroed else xp.empty(shape, dtype=dtype)
    return workspace.scratch(name, shape, dtype, xp)


def pooled(workspace: Workspace | None, shape: tuple, dtype, xp=np):
    """A buffer from ``workspace``'s pool (a node's output, an input gradient), or a new array."""
    if workspace is None:
        return xp.empty(shape, dtype=dtype)
    return workspace.pooled(shape, dtype, xp)


def scope_of(workspace: Workspace | None, key) -> Workspace | None:
    return None if workspace is None else workspace.scope(key)
