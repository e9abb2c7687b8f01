"""Arrays that live from one step to the next: the buffers a training plan allocates once.

An op that is given a :class:`Workspace` takes its arrays from it instead of allocating them.
The first step allocates them one by one and is recorded; from the second step on, every array
is a view of one arena per workspace, at the same address every step (what CUDA graphs need, and
what keeps a step from allocating at all). Without a workspace (``None``) the functions below
allocate, as every op did before. Three kinds of array, by how long they live:

* :func:`pooled`: a node's output or an input gradient, alive from the pass that writes it until
  :meth:`Workspace.release` (the training plan releases a node's output after the node's backward,
  and a gradient once no pending gradient shares its memory) or :meth:`Workspace.release_all` (at
  the start of each forward: a step boundary).
* :func:`scratch`: a temporary that dies when the op returns (a chunk's column matrix, a padded
  copy): released together by :meth:`Workspace.reset_scratch` (the training plan resets before
  each node). Within an op a name asked for again gets its bytes back (a loop over chunks asks
  once per chunk); an op must not hold two uses of one name at once. Its contents are whatever was
  there before (a padded buffer zeroes its own border, :func:`cifarnet.arrays.windows.zero_border`).
* :func:`take`: the scope's own array (what a node keeps for its backward besides its output): one
  per scope and name, kept apart from the arena. Asked for with another shape or dtype than last
  time, it is replaced (the last, smaller batch of an epoch).

Where pooled and scratch arrays go is planned from the recorded step (:class:`_Plan`): two share
bytes only if one was released before the other was made, so the arena is about the most bytes
alive at once, what the allocator's peak was, and a later step gets the planned views as long as
its requests and releases repeat the record (a new batch size is recorded and planned anew).

Names are per scope: :meth:`Workspace.scope` gives one node of a plan names of its own. Whoever
takes an array must not hand it out beyond the step that filled it: the next step writes it again.
The training plan keeps its last node's output (the logits) out of the workspace for that reason.
"""
from __future__ import annotations

import logging
from math import prod
from typing import Any

import numpy as np

from ..memory import give_back_freed_memory

log = logging.getLogger("cifarnet.workspace")

REPLANS_TO_WARN = 3     # steps in a row that left the plan: a request that depends on the data


class _Store:
    """What the scopes of one workspace share: the named arrays, and the plan of the rest."""

    def __init__(self):
        self.named: dict[tuple, Any] = {}
        self.scopes: dict[tuple, Any] = {}
        self.allocations = 0
        self.plan = _Plan()
        self.slices: dict[str, Any] = {}               # scratch name -> its bytes, since the last reset
        self.makers: dict[Any, Any] = {}
        self.scratch_requests: list[int] = []


ALIGN = 64          # planned arrays start on cache-line boundaries
SKEW = 4096         # and at staggered offsets within a page: two arrays an element-wise op reads and
                    # writes at equal offsets modulo 4 KiB stall the CPU's loads (4K aliasing)


def _address(a) -> int:
    """Where ``a``'s first element lives (NumPy or CuPy)."""
    return a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr


def _matches(found, shape: tuple, dtype, xp) -> bool:
    return found.shape == shape and found.dtype == dtype and isinstance(found, xp.ndarray)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class _Plan:
    """Where each pooled and scratch array of a step lives, learned from the step before.

    A step is a sequence of events: requests (a size each, in order) and releases. The first step
    (and any step after one that did not follow the plan) allocates each request on its own and
    records the events; at the next step boundary the record becomes a plan: each request an
    offset into one arena, two requests sharing bytes only if one was released before the other
    was made (placed largest first, each at the lowest offset free for its lifetime), so the arena
    is about the most bytes alive at once. A later step whose events repeat the record one by one
    gets its requests' views of the arena, at the same addresses every step: repeating the record
    is what makes sharing bytes safe. The first event that differs (another size, a release out of
    order) ends the plan for the rest of the step: from there on requests are allocated on their
    own again, and the step is recorded for a new plan (a step whose first request is off the
    plan, a new batch size, lets the old arena go at once). Planning is quadratic in the requests of
    a step (a few hundred: a fraction of a second, once).
    """

    def __init__(self):
        self.offsets: list[int] = []          # the plan: each request's offset into the arena
        self.expected: list[tuple] = []       # the recorded events: ("made", bytes) or ("released", request)
        self.arena = None
        self.module = None
        self.events: list[tuple] = []         # this step's events so far
        self.sizes: list[int] = []            # this step's requests' bytes
        self.following = False                # this step repeats the record so far
        self.step_module = np                 # the array module of this step's requests
        self.live: dict[int, int] = {}        # address of a live array -> its request
        self.replans = 0                      # steps in a row planned anew (after the first two)
        self.warned = False

    def _event(self, event: tuple) -> None:
        if self.following and (len(self.events) >= len(self.expected) or self.expected[len(self.events)] != event):
            self.following = False            # off the plan: the rest of the step allocates
        self.events.append(event)

    def request(self, nbytes: int, xp, make, released_by_address: bool = True):
        """A ``uint8`` array of ``nbytes`` bytes: from the arena while the step follows the plan,
        else from ``make``; ``released_by_address``: it will be released through :meth:`release`
        (a scratch array is released by its index instead)."""
        i = len(self.sizes)
        self.sizes.append(nbytes)
        self.step_module = xp
        first = not self.events
        self._event(("made", nbytes))
        if self.following and self.module is not xp:
            self.following = False
        if self.following:
            buffer = self.arena[self.offsets[i]:self.offsets[i] + nbytes]
        else:
            if first and self.arena is not None:   # nothing handed out from the arena: let it go now
                self.arena = None                  # (a new batch size would otherwise hold both)
            buffer = make(nbytes)
        if nbytes and released_by_address:
            self.live[_address(buffer)] = i
        return buffer, i

    def release(self, array) -> None:
        where = _address(array)
        i = self.live.get(where)
        if i is None or self.sizes[i] != array.nbytes:   # not the pool's, or a part of one: alive
            return
        del self.live[where]
        self._event(("released", i))

    def release_request(self, i: int) -> None:
        self._event(("released", i))

    def end_step(self, make_arena) -> None:
        """Close the step: keep the plan if the step repeated the record to the end, else plan
        anew from this step's record (allocating the arena)."""
        followed = self.following and len(self.events) == len(self.expected)
        if not followed and self.events:
            self.replans = self.replans + 1 if self.arena is not None or self.expected else 0
            if self.replans >= REPLANS_TO_WARN and not self.warned:
                self.warned = True
                log.warning("static buffers: %d steps in a row asked for other arrays than the step before, so "
                            "each was planned anew (a new arena every step: slower than without static buffers); "
                            "an op's requests depend on its data", self.replans)
            self._plan(make_arena)
        elif followed:
            self.replans = 0
        self.events, self.sizes, self.live = [], [], {}
        self.following = self.arena is not None

    def _plan(self, make_arena) -> None:
        made, released = [], {}
        for clock, event in enumerate(self.events):
            if event[0] == "made":
                made.append(clock)
            else:
                released[event[1]] = clock
        end = len(self.events)
        spans = [(size, made[i], released.get(i, end)) for i, size in enumerate(self.sizes)]
        order = sorted(range(len(spans)), key=lambda i: (-spans[i][0], spans[i][1]))
        offsets = [0] * len(spans)
        placed: list[int] = []
        for i in order:
            size, start, stop = spans[i]
            taken = sorted((offsets[j], offsets[j] + spans[j][0] + SKEW) for j in placed
                           if spans[j][1] < stop and start < spans[j][2])          # alive at the same time
            offset = 0
            for low, high in taken:
                if offset + size + SKEW <= low:
                    break
                offset = max(offset, _aligned(high))
            offsets[i] = offset
            placed.append(i)
        self.offsets = [o + (i * 7 * ALIGN) % SKEW for i, o in enumerate(offsets)]   # staggered in 448-byte steps
        self.expected = list(self.events)
        size = max((o + s[0] for o, s in zip(self.offsets, spans, strict=True)), default=0)
        self.arena, self.module = make_arena(size, self.step_module), self.step_module


class Workspace:
    """Named arrays, and the planned pooled and scratch arrays, shared by the scopes of one store
    (see the module docstring).

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

    def _bytes(self, xp):
        """``nbytes -> new uint8 array`` on ``xp`` (made once per module)."""
        make = self._store.makers.get(xp)
        if make is None:
            def make(nbytes: int):
                return self._make((nbytes,), np.uint8, xp, False)
            self._store.makers[xp] = make
        return make

    def _arena(self, nbytes: int, xp):
        """``nbytes`` bytes starting on an :data:`ALIGN` boundary. On NumPy the memory the recorded
        step freed goes back to the system first (it would otherwise stay resident beside the arena)."""
        self._store.plan.arena = None                   # let the old arena go first
        if xp is np:
            give_back_freed_memory()
        raw = self._make((nbytes + ALIGN,), np.uint8, xp, False)
        shift = -_address(raw) % ALIGN
        return raw[shift:shift + nbytes]

    def scratch(self, name: str, shape: tuple, dtype, xp=np):
        """The temporary ``name`` of this shape and dtype (see :func:`scratch`)."""
        dtype = np.dtype(dtype)
        nbytes = prod(shape) * dtype.itemsize
        found = self._store.slices.get(name)
        if found is None or found.nbytes < nbytes:
            found, i = self._store.plan.request(nbytes, xp, self._bytes(xp), released_by_address=False)
            self._store.slices[name] = found
            self._store.scratch_requests.append(i)
        return found[:nbytes].view(dtype).reshape(shape)

    def reset_scratch(self) -> None:
        """The scratch arrays handed out since the last reset are dead (the op that took them returned)."""
        store = self._store
        for i in store.scratch_requests:
            store.plan.release_request(i)
        store.scratch_requests.clear()
        store.slices.clear()

    def pooled(self, shape: tuple, dtype, xp=np):
        """A buffer of this shape and dtype, alive until :meth:`release` (see :func:`pooled`)."""
        dtype = np.dtype(dtype)
        buffer, _ = self._store.plan.request(prod(shape) * dtype.itemsize, xp, self._bytes(xp))
        return buffer.view(dtype).reshape(shape)

    def release(self, array) -> None:
        """``array`` (a whole pooled array, in any shape) is dead; any other array: nothing."""
        if array is not None:
            self._store.plan.release(array)

    def release_all(self) -> None:
        """A step ends: every pooled and scratch array is dead. The step's record becomes the plan
        of the next steps unless it followed the plan already (see :class:`_Plan`)."""
        self.reset_scratch()
        self._store.plan.end_step(self._arena)

    @property
    def allocations(self) -> int:
        return self._store.allocations

    def arrays(self) -> list:
        """Every array the store holds between steps: the named ones and the plan's arena."""
        arena = [] if self._store.plan.arena is None else [self._store.plan.arena]
        return list(self._store.named.values()) + arena

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in self.arrays())


def take(workspace: Workspace | None, name: str, shape: tuple, dtype, xp=np, zeroed: bool = False):
    """``workspace``'s own array ``name`` for this shape and dtype, or a new array without one."""
    if workspace is None:
        return xp.zeros(shape, dtype=dtype) if zeroed else xp.empty(shape, dtype=dtype)
    return workspace.take(name, shape, dtype, xp, zeroed)


def scratch(workspace: Workspace | None, name: str, shape: tuple, dtype, xp=np, zeroed: bool = False):
    """A temporary of ``workspace``'s (whatever it holds; dead at the next reset), or a new array
    without one (zeros if ``zeroed``: a caller with a workspace zeroes what it needs itself)."""
    if workspace is None:
        return xp.zeros(shape, dtype=dtype) if zeroed else xp.empty(shape, dtype=dtype)
    return workspace.scratch(name, shape, dtype, xp)


def pooled(workspace: Workspace | None, shape: tuple, dtype, xp=np):
    """An array of ``workspace``'s, alive until released (a node's output, an input gradient), or a
    new array without one."""
    if workspace is None:
        return xp.empty(shape, dtype=dtype)
    return workspace.pooled(shape, dtype, xp)

