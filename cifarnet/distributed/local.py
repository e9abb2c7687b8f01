"""The ranks of ``trainer.transport=shm``: started by the launcher itself, watched until they end.

:func:`run_local` makes the shared-memory world (:mod:`.shm`), starts ``processes`` ranks (each
``python -m cifarnet.distributed.rank SPEC`` in a session of its own, told its rank and world in
its environment) and waits. A rank that ends with a failure (any exit status but 0 and the
agreed stops 130 and 143, or a signal) ends the others at once (SIGKILL), as ``mpiexec`` does, so
none waits for it; the world file is removed however the ranks end. Returns what
:func:`cifarnet.distributed.launch.failure_message` reads: the exit status (a signal's number for
a rank killed by one, as MPICH reports it) and ``(rank, pid)`` of the rank that failed first (of
each, when several are found ended at one look).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from .shm import create_world, remove_world, world_environment

POLL_S = 0.02
STOPS = (128 + signal.SIGINT, 128 + signal.SIGTERM)     # the ranks' agreed stop after a signal


def local_command(spec_file: Path) -> list[str]:
    return [sys.executable, "-m", "cifarnet.distributed.rank", str(spec_file)]


def _status(returncode: int) -> int:
    return -returncode if returncode < 0 else returncode


def run_local(spec_file: Path, processes: int, env: dict[str, str],
              each_look=None) -> tuple[int, list[tuple[int, int]]]:
    """Start the ranks and wait for all of them; ``(status, first)`` as the module docstring says.
    ``each_look`` (if given) is called every :data:`POLL_S` while they run (the launcher delivers
    a signal to ranks that were not ready for it when it came)."""
    world = create_world(processes)
    ranks: list[subprocess.Popen] = []
    try:
        for rank in range(processes):
            ranks.append(subprocess.Popen(local_command(spec_file), stdin=subprocess.DEVNULL, start_new_session=True,
                                          env=dict(env, **world_environment(world, rank, processes))))
        return _wait(ranks, each_look)
    finally:
        for process in ranks:                 # an exception here (a signal's handler raised): end them all
            if process.poll() is None:
                process.kill()
                process.wait()
        remove_world(world)


def _wait(ranks: list[subprocess.Popen], each_look=None) -> tuple[int, list[tuple[int, int]]]:
    first: list[tuple[int, int]] = []
    status = 0
    while True:
        if each_look is not None:
            each_look()
        codes = [process.poll() for process in ranks]
        if not first:
            failed = [rank for rank, code in enumerate(codes) if code is not None and code != 0 and code not in STOPS]
            if failed:
                first = [(rank, ranks[rank].pid) for rank in failed]
                status = _status(codes[failed[0]])
                for process in ranks:
                    if process.poll() is None:
                        process.kill()
        if all(code is not None for code in codes):
            break
        time.sleep(POLL_S)
    if not first:
        status = max((_status(process.returncode) for process in ranks), default=0)    # 0, or the agreed stop
    for process in ranks:
        process.wait()
    return status, first

