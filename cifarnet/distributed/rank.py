"""What each rank of a data-parallel run does (``python -m cifarnet.distributed.rank SPEC``).

A *spec* is the run as the process that composed the config settled it: the plain config, the run
directory, the checkpoint to resume from, the command-line overrides. The launcher
(:mod:`.launch`) writes it to a file every rank reads; under a user's own ``mpiexec -n N python -m
cifarnet ...`` rank 0 composes it with Hydra and broadcasts it (:func:`lead`, :func:`follow`), so
all ranks agree on the run directory and the config whatever their clocks and files say.

Rank 0 logs (to the console and, appending, to the run's ``cifarnet.log``), writes the checkpoints,
``metrics.csv`` and ``result.json`` and talks to the trackers; the others log errors only. A rank
that fails prints one line and aborts the job (``MPI_Abort``; on shared memory its launcher ends
the others), so no rank waits on a collective for one that has gone; rank 0 writes every file
atomically, so an abort leaves no partial file.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..comm import Communicator
from ..errors import expected_message
from ..experiment import train
from ..training.signals import Terminated, TrainingInterrupted, raise_terminated, resume_command
from .agreement import RankMismatch, check_agreement, identity
from .mpi import MPICommunicator
from .shm import SharedMemoryCommunicator, in_shared_world

log = logging.getLogger("cifarnet")

LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"     # Hydra's job logging, as in the launcher's log
FOLLOWER_DELAY_S = 2.0        # a failing rank other than 0 waits this long, so that rank 0's line comes first


def make_spec(cfg: dict, run_dir: Path, resume: Path | None, overrides: list[str], others: list[str]) -> dict:
    """The run every rank carries out (``others``: the overrides a resume command repeats)."""
    return {"cfg": cfg, "run_dir": str(run_dir), "resume": None if resume is None else str(resume),
            "overrides": list(overrides), "others": list(others)}


def setup_logging(rank: int, run_dir: Path) -> None:
    """Rank 0: INFO to stdout, warnings (a signal's stop, how to resume) to stderr as the command
    line has them, everything appended to ``cifarnet.log``; the others: errors only (stderr)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(LOG_FORMAT)
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(formatter)
        console.addFilter(lambda record: record.levelno < logging.WARNING)
        root.addHandler(console)
        warnings = logging.StreamHandler(sys.stderr)
        warnings.setLevel(logging.WARNING)
        warnings.setFormatter(logging.Formatter("cifarnet: %(message)s"))
        root.addHandler(warnings)
        run_dir.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(run_dir / "cifarnet.log", mode="a")
        file.setFormatter(formatter)
        root.addHandler(file)
        root.setLevel(logging.INFO)
    else:
        root.setLevel(logging.CRITICAL)


def run(spec: dict[str, Any], comm: Communicator) -> dict[str, Any]:
    """Train as ``spec`` says, as this rank."""
    run_dir = Path(spec["run_dir"])
    resume = ckpt.resolve(spec["resume"], prefer="newest") if spec["resume"] else None

    if comm.rank == 0:
        log.info("rank 0 of %d processes (%d on this machine); run directory %s", comm.size, comm.local_size, run_dir)
    return train(spec["cfg"], run_dir, resume, resume_command=lambda path: resume_command(run_dir, spec["others"]),
                 overrides=spec["overrides"], comm=comm)


def note_failure(folder: str | Path | None, rank: int) -> None:
    """Tell the launcher (its folder, ``spec["launcher_dir"]``) that ``rank`` failed with a message of
    its own; a rank that dies without one leaves no note (:func:`cifarnet.distributed.launch.failure_message`)."""
    if folder:
        (Path(folder) / f"rank{rank}.failed").touch()


def _stopped(err: BaseException, comm: Communicator) -> None:
    """A signal before the training loop had its handlers: exit 130/143 quietly (the launcher, which
    forwarded it to every rank, says so once). Under MPI through ``MPI_Abort``: another rank may be
    inside a collective, which no signal interrupts, waiting for this one; on shared memory the
    others' waits take their own signal."""
    status = 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
    if isinstance(comm, MPICommunicator):
        comm.abort(status)
    sys.exit(status)


def finish(spec: dict[str, Any], comm: Communicator, argv: list[str] | None = None) -> None:
    """Check that every rank runs the same code and command (:class:`RankMismatch`, raised on rank 0
    and a quiet exit 1 elsewhere), then :func:`run`, with every way out turned into this rank's exit:
    0 when done; 130/143 when a signal stopped the run (every rank at the same step, after rank 0's
    checkpoint); otherwise one line on stderr and an abort of the whole job."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        check_agreement(comm.gather_objects(identity(argv)))
    except RankMismatch:
        if comm.rank == 0:
            raise
        note_failure(spec.get("launcher_dir"), comm.rank)
        sys.exit(1)
    except (KeyboardInterrupt, Terminated) as err:
        _stopped(err, comm)
    try:
        run(spec, comm)
    except TrainingInterrupted as err:
        sys.exit(128 + err.signum)
    except (KeyboardInterrupt, Terminated) as err:     # a signal before the training loop had its handlers
        _stopped(err, comm)
    except BaseException as err:  # noqa: BLE001 - one line, then every rank ends
        message = expected_message(err)
        if message is None:
            import traceback

            message = "".join(traceback.format_exception(err)).rstrip()
        note_failure(spec.get("launcher_dir"), comm.rank)
        if comm.rank != 0:
            time.sleep(FOLLOWER_DELAY_S)
        prefix = "" if comm.rank == 0 else f"rank {comm.rank} of {comm.size}: "
        print(f"cifarnet: error: {prefix}{message}", file=sys.stderr, flush=True)
        comm.abort(1)


# -- a user's own mpiexec: rank 0 runs Hydra, the others follow -----------------------------------
_led = {"done": False}
FAILED = {"failed": True}          # what rank 0 hands over when it failed before the run began


def lead(spec: dict[str, Any] | None) -> MPICommunicator:
    """On rank 0, inside the Hydra job: hand ``spec`` to the other ranks (None: nothing to run, they
    exit 0; :data:`FAILED`: rank 0 failed, they exit 1). Once only."""
    comm = MPICommunicator()
    if not _led["done"]:
        _led["done"] = True
        comm.broadcast_object(spec)
    return comm


def release_followers(failed: bool) -> None:
    """On rank 0 of a user's ``mpiexec``, when it is about to exit without having handed a spec over
    (a bad command line, ``--cfg job``, an error before training): let the other ranks go, with exit
    status 1 if rank 0 failed, 0 otherwise, instead of waiting for it forever."""
    if not _led["done"]:
        lead(FAILED if failed else None)


def follow() -> None:
    """On ranks other than 0 of a user's ``mpiexec``: wait for rank 0's spec, then train with it."""
    comm = MPICommunicator()
    spec = comm.broadcast_object(None)
    if spec is None or spec == FAILED:
        sys.exit(1 if spec == FAILED else 0)            # rank 0 has said why
    setup_logging(comm.rank, Path(spec["run_dir"]))
    finish(spec, comm)
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    """``python -m cifarnet.distributed.rank SPEC_FILE``: the launcher's ranks, on its shared-memory
    world (:mod:`.shm`, told in the environment) or under its ``mpiexec``."""
    argv = sys.argv[1:] if argv is None else argv
    spec_file = Path(argv[0])
    spec = json.loads(spec_file.read_text())
    comm = SharedMemoryCommunicator.from_environment() if in_shared_world() else MPICommunicator()
    signal.signal(signal.SIGTERM, raise_terminated)       # before the launcher may signal it (its pid file)
    (spec_file.parent / f"rank{comm.rank}.pid").write_text(str(os.getpid()))     # for the launcher's signals
    try:
        setup_logging(comm.rank, Path(spec["run_dir"]))
        finish(spec, comm, argv)
    except (KeyboardInterrupt, Terminated) as err:
        _stopped(err, comm)
    except RankMismatch as err:
        note_failure(spec_file.parent, comm.rank)
        print(f"cifarnet: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
