"""One rank of a shared-memory world (:mod:`cifarnet.distributed.shm`), started by ``tests/test_shm.py``
with the world in its environment: ``python tests/shm_scenarios.py SCENARIO OUT_FOLDER``.

``exchanges``: every exchange once, the results written to ``OUT_FOLDER/rank<N>.npz``;
``die``: rank 1 exits before the first exchange, rank 0 waits in it; ``abort``: rank 1 aborts, rank 0
waits; ``orphan``: rank 0 of 2, alone, waits for rank 1 while the process that started it exits. A rank that gets
:class:`cifarnet.distributed.shm.WorldBroken` writes its message to ``OUT_FOLDER/rank<N>.broken``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from cifarnet.distributed.shm import SharedMemoryCommunicator, WorldBroken


def values(rank: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rank)
    return {"f32": rng.standard_normal(70_001).astype(np.float32), "f64": rng.standard_normal((3, 501))}


def exchanges(comm: SharedMemoryCommunicator, out: Path) -> None:
    mine = values(comm.rank)
    f32, f64 = mine["f32"].copy(), mine["f64"].copy()
    comm.allreduce(f32)
    comm.allreduce(f64)
    total, count, moments = comm.sum(np.float32(comm.rank + 0.25), comm.rank + 1, np.arange(3.0) * comm.rank)
    shared = np.full(40_000, float(comm.rank))
    comm.broadcast(shared, root=comm.size - 1)
    everyone = comm.gather_objects({"rank": comm.rank, "pid": os.getpid()})
    told = comm.broadcast_object({"from": "rank 0"} if comm.rank == 0 else None)
    comm.barrier()
    np.savez(out / f"rank{comm.rank}.npz", f32=f32, f64=f64, total=total, count=count, moments=moments,
             shared=shared, ranks=[e["rank"] for e in everyone], told=told["from"])


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    if scenario == "orphan" and os.fork():          # the parent stands for the launcher: it exits while
        time.sleep(1.0)                             # the rank (the child) waits for rank 1, which never comes
        os._exit(0)
    try:
        comm = SharedMemoryCommunicator.from_environment()
        if scenario == "exchanges":
            exchanges(comm, out)
        elif scenario == "die" and comm.rank == 1:
            os._exit(3)
        elif scenario == "abort" and comm.rank == 1:
            comm.abort(1)
        else:
            comm.barrier()
    except WorldBroken as err:
        (out / f"rank{os.environ['CIFARNET_RANK']}.broken").write_text(str(err))
        sys.exit(1)


if __name__ == "__main__":
    main()
