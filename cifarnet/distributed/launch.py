"""``trainer.processes=N`` on one machine: start N ranks through ``mpiexec`` and wait for them.

The launcher is the Hydra job the user started: it has composed the config and made the run
directory. It writes the run's spec (:func:`cifarnet.distributed.rank.make_spec`) to a temporary
file, starts ``mpiexec -n N python -m cifarnet.distributed.rank SPEC`` in a session of its
own (so a Ctrl-C on the terminal reaches the launcher alone), and passes SIGINT and SIGTERM on to
every rank, which stop together at the next step with rank 0's checkpoint (:mod:`.rank`). On a
terminal, rank 0 draws the progress bars (mpiexec passes them through). Its exit
is the run's: 0, 130/143 after a signal, or 1 with one line when a rank failed (that rank's line is
above it).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..threads import default_workers
from ..training.metrics import TERMINAL_VARIABLE
from ..training.signals import TrainingInterrupted

log = logging.getLogger("cifarnet")


class LaunchError(RuntimeError):
    """The ranks could not be started, or one of them failed (one line)."""


def find_mpiexec() -> str:
    """``mpiexec`` beside this Python (the mpich wheel's, in a virtual environment) or on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401 - the ranks need it; fail here, in one line, if it is missing
    except ImportError:
        found = None
    if found is None:
        raise LaunchError("trainer.processes > 1 needs mpi4py and an MPI library with mpiexec: "
                          "pip install 'cifarnet[mpi]' (mpi4py and the mpich wheel)")
    return found


def rank_command(mpiexec: str, processes: int, spec_file: Path) -> list[str]:
    return [mpiexec, "-n", str(processes), sys.executable, "-m", "cifarnet.distributed.rank", str(spec_file)]


def _interrupts(run_dir: Path) -> dict[str, int]:
    """The run's interrupt checkpoints (the ranks' agreed stops), by name, with their mtimes in ns."""
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").glob("interrupt_*.npz")}


def launch(spec: dict[str, Any], processes: int) -> dict[str, Any]:
    """Run ``spec`` on ``processes`` ranks of this machine; returns rank 0's ``result.json``.

    Raises:
        LaunchError: no MPI, or a rank failed.
        TrainingInterrupted: a signal stopped the run (the resumable checkpoint is named).
    """
    mpiexec = find_mpiexec()
    run_dir = Path(spec["run_dir"])
    cores = default_workers()
    if processes > cores:
        log.warning("trainer.processes=%d on %d cores: the processes will share cores and each step will be "
                    "slower than with %d", processes, cores, cores)
    with tempfile.TemporaryDirectory(prefix="cifarnet-ranks-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        received: list[int] = []

        def forward(signum, frame) -> None:
            received.append(signum)
            for pid_file in Path(tmp).glob("rank*.pid"):
                try:
                    os.kill(int(pid_file.read_text()), signum)
                except (ValueError, ProcessLookupError):
                    pass

        log.info("starting %d processes: %s", processes, " ".join(rank_command("mpiexec", processes, spec_file)))
        interrupts_before = _interrupts(run_dir)
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            terminal = {TERMINAL_VARIABLE: "1"} if sys.stderr.isatty() else {}     # rank 0 draws the bars
            ranks = subprocess.Popen(rank_command(mpiexec, processes, spec_file), stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=dict(os.environ, **terminal))
            status = ranks.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    # a signal to one rank also stops them all, with rank 0's interrupt checkpoint; an exit status of
    # 130/143 without that checkpoint is mpiexec ending the survivors of a failed rank
    agreed_stop = _interrupts(run_dir).items() - interrupts_before.items()      # written during this launch
    stopped = received[0] if received else (status - 128 if status in (130, 143) and agreed_stop else None)
    if stopped is not None:
        newest = [p for p in (run_dir / "checkpoints").glob("*.npz") if ckpt.position(p)]
        raise TrainingInterrupted(stopped, max(newest, key=ckpt.position) if newest else None)
    if status != 0:
        raise LaunchError(f"the {processes} training processes failed (mpiexec exit status {status}; the "
                          f"failing rank's message is above); the checkpoints in {run_dir / 'checkpoints'} "
                          "are intact")
    return json.loads((run_dir / "result.json").read_text())
