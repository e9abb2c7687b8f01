"""The shared-memory communicator (:mod:`cifarnet.distributed.shm`) between real processes: every
exchange gives each rank the same result, in rank order, the sums of a one-rank-at-a-time reference;
a rank that dies or aborts, or a launcher that goes, releases the ranks waiting for it in one line.
Each test starts its ranks with a timeout (``tests/shm_scenarios.py``, ``tests/mpi_steps.py``)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cifarnet.distributed.local import run_local
from cifarnet.distributed.shm import (
    SharedMemoryCommunicator,
    create_world,
    remove_world,
    world_bytes,
    world_environment,
)

TESTS = Path(__file__).resolve().parent


def start(size: int, args: list[str], world: Path, ranks: range | None = None) -> list[subprocess.Popen]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return [subprocess.Popen([sys.executable, *args], env=dict(env, **world_environment(world, rank, size)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank in (ranks if ranks is not None else range(size))]


def finish(processes: list[subprocess.Popen], timeout: float = 60) -> list[int]:
    try:
        return [p.wait(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize("size, slot_bytes", [(2, 4 << 20), (2, 4096), (3, 8192)])
def test_every_exchange_gives_every_rank_the_rank_order_result(tmp_path, size, slot_bytes):
    """Two ranks with slots that hold the buffers whole and in 4 KB chunks, three ranks (on two cores:
    they take turns): ``allreduce`` in float32 and float64 equals the sum in rank order to the bit on
    every rank; ``sum`` hands numbers back as numbers and arrays as arrays; ``broadcast`` and the objects'
    exchanges carry the root's and every rank's values."""
    sys.path.insert(0, str(TESTS))
    from shm_scenarios import values

    world = create_world(size, slot_bytes)
    try:
        codes = finish(start(size, [str(TESTS / "shm_scenarios.py"), "exchanges", str(tmp_path)], world))
    finally:
        remove_world(world)
    assert codes == [0] * size
    want = {key: values(0)[key].copy() for key in ("f32", "f64")}
    for r in range(1, size):
        for key in want:
            want[key] += values(r)[key]                       # in rank order, in each dtype
    for rank in range(size):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert got["f32"].dtype == np.float32 and np.array_equal(got["f32"], want["f32"])
        assert np.array_equal(got["f64"], want["f64"])
        assert got["total"] == sum(r + 0.25 for r in range(size))             # a number, summed in float64
        assert got["count"] == sum(range(1, size + 1))
        assert np.array_equal(got["moments"], np.arange(3.0) * sum(range(size)))
        assert np.all(got["shared"] == size - 1)
        assert list(got["ranks"]) == list(range(size)) and str(got["told"]) == "rank 0"


@pytest.mark.parametrize("scenario, says", [("die", "rank 1 of 2 (pid {pid}) has ended"),
                                            ("abort", "another rank failed (its message is above)")])
def test_a_rank_that_dies_or_aborts_releases_the_rank_waiting_for_it(tmp_path, scenario, says):
    world = create_world(2)
    try:
        ranks = start(2, [str(TESTS / "shm_scenarios.py"), scenario, str(tmp_path)], world)
        began = time.monotonic()
        codes = finish(ranks, timeout=30)
        waited = time.monotonic() - began
    finally:
        remove_world(world)
    assert codes[0] == 1 and codes[1] == (3 if scenario == "die" else 1)
    assert (tmp_path / "rank0.broken").read_text() == says.format(pid=ranks[1].pid)
    assert waited < 5                                          # found at the next look (every 0.5 s)


def test_a_rank_whose_launcher_has_gone_stops_waiting(tmp_path):
    world = create_world(2)
    try:
        (parent,) = start(2, [str(TESTS / "shm_scenarios.py"), "orphan", str(tmp_path)], world, ranks=range(1))
        assert finish([parent]) == [0]
        deadline = time.monotonic() + 15
        while not (tmp_path / "rank0.broken").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        remove_world(world)
    assert (tmp_path / "rank0.broken").read_text() == "the launcher has ended"


def test_two_ranks_on_shared_memory_take_the_steps_of_one_process_with_two_threads(tmp_path):
    """As ``tests/test_mpi.py`` checks MPI's ranks: ResNet-20, 3 steps, global batch 32, float64."""
    sys.path.insert(0, str(TESTS))
    from mpi_steps import steps

    world = create_world(2)
    try:
        codes = finish(start(2, [str(TESTS / "mpi_steps.py"), "resnet20", str(tmp_path / "two.npz"), "1", "32", "3",
                                 "float64"], world), timeout=120)
    finally:
        remove_world(world)
    assert codes == [0, 0]
    losses, weights = steps("resnet20", workers=2, dtype="float64")
    two = np.load(tmp_path / "two.npz")
    np.testing.assert_allclose(two["losses"], losses, rtol=1e-10)
    for name, value in weights.items():
        np.testing.assert_allclose(two[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_the_launcher_s_ranks_end_together_and_leave_no_world_behind(tmp_path, monkeypatch):
    """:func:`run_local` with a rank that fails: the others are ended at once (they would wait for it),
    the status and the first rank are reported, and the world file is gone; all succeeding: 0."""
    import cifarnet.distributed.local as local

    made = []
    monkeypatch.setattr(local, "create_world", lambda n: made.append(create_world(n)) or made[-1])
    script = tmp_path / "rank.py"
    script.write_text("import os, sys, time\nfrom cifarnet.distributed.shm import SharedMemoryCommunicator\n"
                      "comm = SharedMemoryCommunicator.from_environment()\n"
                      "if comm.rank == 1 and sys.argv[1] == 'fail':\n    os._exit(7)\ncomm.barrier()\n")
    for outcome, want in (("fail", 7), ("pass", 0)):
        monkeypatch.setattr(local, "local_command", lambda spec, o=outcome: [sys.executable, str(script), o])
        began = time.monotonic()
        status, first = run_local(tmp_path / "spec.json", 3, dict(os.environ))
        assert status == want and time.monotonic() - began < 20
        assert [rank for rank, _ in first] == ([1] if outcome == "fail" else [])
        assert not made[-1].exists()


def test_a_world_refuses_what_it_cannot_hold():
    world = create_world(1, 4096)
    try:
        assert world.stat().st_size == world_bytes(1, 4096)
        comm = SharedMemoryCommunicator(world, 0, 1)
        assert not world.exists()                                   # mapped by every rank: its name is gone
        data = np.arange(5000.0)                                    # 1 rank: its own values back, in chunks
        comm.allreduce(data)
        assert np.array_equal(data, np.arange(5000.0))
        with pytest.raises(TypeError, match="contiguous NumPy arrays"):
            comm.allreduce(np.zeros((4, 4))[:, ::2])
        with pytest.raises(ValueError, match="does not fit a slot"):
            comm.broadcast_object(b"x" * 5000)
        with pytest.raises(ValueError, match="rank 1 of 1"):
            SharedMemoryCommunicator(world, 1, 1)
        comm.close()
    finally:
        remove_world(world)


def test_a_memory_file_system_without_room_refuses_the_world_in_one_line(monkeypatch, tmp_path):
    """``/dev/shm`` too small (a container's 64 MB, mostly taken): the world is refused when it is made,
    nothing is left behind, instead of a rank dying of SIGBUS at its first exchange."""
    import errno

    from cifarnet.distributed import shm

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = set(Path("/dev/shm").glob("cifarnet-world-*")) if Path("/dev/shm").is_dir() else set()
    monkeypatch.setattr(shm.os, "posix_fallocate", full)
    with pytest.raises(shm.WorldBroken, match=r"no room for the ranks' shared memory \(16 MB in .*No space left on "
                                              r"device\); free some, or use trainer.transport=mpi"):
        create_world(2)
    after = set(Path("/dev/shm").glob("cifarnet-world-*")) if Path("/dev/shm").is_dir() else set()
    assert after == before
