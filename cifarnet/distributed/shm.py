"""Ranks on one machine that exchange through shared memory (``trainer.transport=shm``): no MPI.

The launcher (:mod:`.launch`) makes a *world*, one file in ``/dev/shm`` (a memory-backed file
system; another temporary folder where there is none) that every rank maps, then starts the ranks
with its path, their rank and their number in the environment; once every rank has mapped it, rank
0 removes its name (the memory lives on in the mappings, and nothing is left behind even if every
process is killed). The file holds:

- a header of 64-bit integers: the abort flag, each rank's arrival count (a cache line each, so
  two ranks never write one line) and each rank's pid;
- two halves of slots, one slot per rank in each: a reduction writes this rank's values into its
  slot of the half it is on, arrives, and sums every rank's slot into its own buffer in rank order,
  so every rank computes the same sum to the bit. Consecutive exchanges take the halves in turn,
  so one arrival per exchange is enough: a rank writes a half again only after every rank has
  arrived at the exchange in between, which each does after reading that half.

An *arrival* (:meth:`SharedMemoryCommunicator._arrive`) raises this rank's count and waits until
every rank's count has reached it: spinning for the first :data:`SPIN_S` (an exchange in a step
waits microseconds: each rank has a core of its own), then sleeping in steps that grow to
:data:`MAX_NAP_S` (rank 0 writing a checkpoint keeps the others waiting for seconds). While it
sleeps it looks, every :data:`CHECK_S`, for a reason never to be released: the abort flag (a rank
failed), a rank's process gone, or the launcher gone; then it raises :class:`WorldBroken` (one line).

The order of writes relies on the processor keeping stores in program order as other cores see
them (x86-64's total store order): the slot's values are stored before the arrival count.
"""
from __future__ import annotations

import mmap
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..comm import Communicator, packed_sum
from ..errors import CifarnetError

SLOT_BYTES = 4 << 20            # a rank's slot in each half; larger buffers go in chunks of this
ALIGN = 4096
LINE = 8                        # int64s per cache line (64 bytes)
SPIN_S = 50e-6                  # spin this long before sleeping
MAX_NAP_S = 1e-3
CHECK_S = 0.5                   # while sleeping, look for a failed rank or launcher this often
WORLD_VARIABLE, RANK_VARIABLE, SIZE_VARIABLE = "CIFARNET_WORLD", "CIFARNET_RANK", "CIFARNET_SIZE"


class WorldBroken(CifarnetError, RuntimeError):
    """A rank failed, a rank's process or the launcher ended: no exchange can complete (one line)."""


def _header_ints(size: int) -> int:
    return LINE * (1 + 2 * size)          # abort flag; arrival counts; pids (a line each)


def _data_offset(size: int) -> int:
    return -(-_header_ints(size) * 8 // ALIGN) * ALIGN


def world_bytes(size: int, slot_bytes: int = SLOT_BYTES) -> int:
    return _data_offset(size) + 2 * size * slot_bytes


def create_world(size: int, slot_bytes: int = SLOT_BYTES) -> Path:
    """A new world file for ``size`` ranks, its pages reserved now (a memory file system that is too
    small refuses here, in one line, instead of killing a rank with SIGBUS at its first exchange).
    The caller removes it when the ranks have ended (:func:`remove_world`).

    Raises:
        WorldBroken: no room for it."""
    folder = Path("/dev/shm") if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
    fd, name = tempfile.mkstemp(prefix="cifarnet-world-", dir=folder)
    nbytes = world_bytes(size, slot_bytes)
    try:
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, nbytes)
            else:                                           # (macOS) sparse: the pages come as written
                os.ftruncate(fd, nbytes)
        except OSError as err:
            os.close(fd)
            fd = -1
            remove_world(Path(name))
            raise WorldBroken(f"no room for the ranks' shared memory ({nbytes / 2**20:.0f} MB in "
                              f"{Path(name).parent}: {err.strerror}); free some, or use "
                              "trainer.transport=mpi") from None
        header = np.zeros(2, dtype=np.int64)
        header[:] = (0, slot_bytes)                         # abort flag; the slot size, read by the ranks
        os.pwrite(fd, header.tobytes(), 0)
    finally:
        if fd >= 0:
            os.close(fd)
    return Path(name)


def remove_world(path: Path) -> None:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def world_environment(path: Path, rank: int, size: int) -> dict[str, str]:
    """The variables that tell a started rank its world (read by :meth:`SharedMemoryCommunicator.from_environment`)."""
    return {WORLD_VARIABLE: str(path), RANK_VARIABLE: str(rank), SIZE_VARIABLE: str(size)}


def in_shared_world() -> bool:
    return WORLD_VARIABLE in os.environ


class SharedMemoryCommunicator(Communicator):
    """Rank ``rank`` of ``size`` ranks of one machine, exchanging through the world file at ``path``
    (see the module docstring). The interface of :class:`cifarnet.comm.Communicator`: ``sum`` packs
    its values into one float64 buffer (as :class:`cifarnet.distributed.mpi.MPICommunicator` does),
    ``allreduce`` sums a contiguous buffer in place in its own dtype, ``iallreduce`` is the blocking
    one (the ranks are a core each: an exchange takes microseconds, nothing to overlap).

    Attributes: ``rank``, ``size``, ``local_size`` (= ``size``).
    """

    leader = True

    def __init__(self, path: str | Path, rank: int, size: int):
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} of {size}")
        self.rank, self.size, self.local_size, self.path = rank, size, size, Path(path)
        with open(self.path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), 0)
        ints = np.frombuffer(self._map, dtype=np.int64, count=_header_ints(size))
        self._abort = ints[0:1]
        self.slot_bytes = int(ints[1])
        if len(self._map) < world_bytes(size, self.slot_bytes):
            raise WorldBroken(f"the world file {self.path} is too small for {size} ranks")
        self._counts = ints[LINE:LINE * (1 + size)].reshape(size, LINE)[:, 0]           # a line each
        self._pids = ints[LINE * (1 + size):].reshape(size, LINE)[:, 0]
        self._mine = self._counts[rank:rank + 1]
        self._data = np.frombuffer(self._map, dtype=np.uint8, offset=_data_offset(size))
        self._arrivals = 0
        self._parent = os.getppid()
        self._pids[rank] = os.getpid()
        self._arrive()                       # every rank has mapped the world and written its pid
        if rank == 0:                        # so its name can go: the mappings stay, and nothing is left in
            remove_world(self.path)          # /dev/shm however the ranks and the launcher end

    @classmethod
    def from_environment(cls) -> SharedMemoryCommunicator:
        return cls(os.environ[WORLD_VARIABLE], int(os.environ[RANK_VARIABLE]), int(os.environ[SIZE_VARIABLE]))

    # -- arrivals --------------------------------------------------------------------------------
    def _arrive(self) -> None:
        """Count this rank in at the next exchange; return once every rank has."""
        self._arrivals += 1
        target = self._arrivals
        self._mine[0] = target
        counts = self._counts
        if counts.min() >= target:
            return
        began = time.perf_counter()
        while time.perf_counter() - began < SPIN_S:
            if counts.min() >= target:
                return
        nap, checked = 5e-6, time.perf_counter()
        while counts.min() < target:
            time.sleep(nap)
            nap = min(2 * nap, MAX_NAP_S)
            if time.perf_counter() - checked > CHECK_S:
                self._check(target)
                checked = time.perf_counter()

    def _check(self, target: int) -> None:
        if self._abort[0]:
            raise WorldBroken("another rank failed (its message is above)")
        if os.getppid() != self._parent:
            raise WorldBroken("the launcher has ended")
        for rank, (pid, count) in enumerate(zip(self._pids.tolist(), self._counts.tolist(), strict=True)):
            if count < target and pid and not _alive(pid):
                raise WorldBroken(f"rank {rank} of {self.size} (pid {pid}) has ended")

    def _half(self) -> int:
        return self._arrivals % 2            # the half the next exchange writes

    def _slot(self, half: int, rank: int) -> np.ndarray:
        start = (half * self.size + rank) * self.slot_bytes
        return self._data[start:start + self.slot_bytes]

    def _chunks(self, flat: np.ndarray):
        step = max(1, self.slot_bytes // flat.itemsize)
        for start in range(0, flat.size, step):
            yield flat[start:start + step]

    # -- the interface ---------------------------------------------------------------------------
    def allreduce(self, buffer) -> None:
        flat = _flat(buffer)
        for part in self._chunks(flat):
            half, n = self._half(), part.nbytes
            self._slot(half, self.rank)[:n].view(part.dtype)[...] = part
            self._arrive()
            slots = [self._slot(half, r)[:n].view(part.dtype) for r in range(self.size)]
            if self.size > 1:
                np.add(slots[0], slots[1], out=part)
            for other in slots[2:]:
                part += other

    def sum(self, *values) -> tuple:
        return packed_sum(values, self.allreduce)

    def broadcast(self, buffer, root: int = 0) -> None:
        flat = _flat(buffer)
        for part in self._chunks(flat):
            half, n = self._half(), part.nbytes
            if self.rank == root:
                self._slot(half, root)[:n].view(part.dtype)[...] = part
            self._arrive()
            if self.rank != root:
                part[...] = self._slot(half, root)[:n].view(part.dtype)

    def barrier(self) -> None:
        self._arrive()

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank (small objects: a slot each)."""
        half = self._half()
        self._put_object(self._slot(half, self.rank), value)
        self._arrive()
        return [self._get_object(self._slot(half, r)) for r in range(self.size)]

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        half = self._half()
        if self.rank == root:
            self._put_object(self._slot(half, root), value)
        self._arrive()
        return value if self.rank == root else self._get_object(self._slot(half, root))

    def abort(self, status: int = 1) -> None:
        """End this rank now and tell the others (they stop at their next exchange; the launcher
        stops any that do not)."""
        self._abort[0] = 1
        os._exit(status)

    def close(self) -> None:
        """Unmap the world (this object's exchanges end here)."""
        self._abort = self._counts = self._pids = self._mine = self._data = None
        self._map.close()

    # -- objects ---------------------------------------------------------------------------------
    def _put_object(self, slot: np.ndarray, value: Any) -> None:
        data = pickle.dumps(value)
        if len(data) + 8 > slot.size:
            raise ValueError(f"an object of {len(data)} bytes does not fit a slot of {slot.size}")
        slot[:8].view(np.int64)[0] = len(data)
        slot[8:8 + len(data)] = np.frombuffer(data, dtype=np.uint8)

    @staticmethod
    def _get_object(slot: np.ndarray) -> Any:
        n = int(slot[:8].view(np.int64)[0])
        return pickle.loads(slot[8:8 + n].tobytes())         # written by a rank of this run


def _flat(buffer) -> np.ndarray:
    if not isinstance(buffer, np.ndarray) or not buffer.flags.c_contiguous:
        raise TypeError("the shared-memory communicator exchanges contiguous NumPy arrays")
    return buffer.reshape(-1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
