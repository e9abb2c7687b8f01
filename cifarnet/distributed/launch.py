"""``trainer.processes=N`` on one machine: start N ranks and wait for them.

The launcher is the Hydra job the user started: it has composed the config and made the run
directory. It writes the run's spec (:func:`cifarnet.distributed.rank.make_spec`) to a temporary
file and starts the ranks, ``python -m cifarnet.distributed.rank SPEC``, each in a session of its
own (so a Ctrl-C on the terminal reaches the launcher alone): with ``trainer.transport=shm`` (the
default) it starts them itself, after making the shared-memory world they exchange through
(:mod:`.shm`; :mod:`.local` watches them); with ``mpi``, through ``mpiexec -n N``. It passes SIGINT
and SIGTERM on to every rank, which stop together at the next step with rank 0's checkpoint
(:mod:`.rank`). On a terminal, rank 0 draws the progress bars. Its exit is the run's: 0, 130/143
after a signal, or 1 with one line when a rank failed: that rank's own line is above it; a rank
that died without one (killed by SIGKILL, say) is named with the signal, found by watching the
ranks' processes (and, under mpiexec, from its exit status). The line ends with the command that
resumes the run, as Ctrl-C's does.
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
from ..errors import CifarnetError
from ..threads import default_workers
from ..training.metrics import TERMINAL_VARIABLE
from ..training.signals import Terminated, TrainingInterrupted, resume_command
from .local import local_command, run_local

log = logging.getLogger("cifarnet")


class LaunchError(CifarnetError, RuntimeError):
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
        raise LaunchError("trainer.transport=mpi needs mpi4py and an MPI library with mpiexec: "
                          "pip install 'cifarnet[mpi]' (mpi4py and the mpich wheel), or "
                          "trainer.transport=shm on one machine")
    return found


def rank_command(mpiexec: str, processes: int, spec_file: Path) -> list[str]:
    return [mpiexec, "-n", str(processes), sys.executable, "-m", "cifarnet.distributed.rank", str(spec_file)]


POLL_S = 0.2                   # how often the launcher looks for ranks that have started


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie, ended but not yet reaped, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_watching(ranks: subprocess.Popen, folder: Path, each_look=None) -> tuple[int, list[tuple[int, int]]]:
    """Wait for ``mpiexec``; returns its exit status and ``(rank, pid)`` of the first rank to end
    while it still ran (empty if none did), or of every rank found ended at that first look (when
    this thread woke only after mpiexec had already stopped the others). The ranks write
    ``rank<N>.pid`` into ``folder``.

    mpiexec ends the other ranks within a millisecond of one dying, faster than any polling can
    tell them apart, so each rank is watched through a pidfd (Linux 5.3+): the kernel wakes this
    thread as the first one exits; on a machine whose cores are all busy it may still wake late.
    The first to exit is not always the one that failed: mpiexec stops the others as soon as the
    failed rank's connections close, which happens early in its exit, and a small rank stopped then
    can finish exiting before a large one killed a moment earlier. Where pidfds are missing,
    ``/proc`` is polled instead. ``each_look`` (if given) is called at every look (the launcher
    delivers a signal to ranks that started after it came)."""
    import select

    pids: dict[int, int] = {}
    fds: dict[int, int] = {}                       # pidfd -> rank
    poller = select.poll()
    first: list[tuple[int, int]] = []
    try:
        while True:
            if each_look is not None:
                each_look()
            try:
                return ranks.wait(timeout=0 if fds and not first else POLL_S), first   # pidfds wait below
            except subprocess.TimeoutExpired:
                pass
            for pid_file in folder.glob("rank*.pid"):
                rank = int(pid_file.stem.removeprefix("rank"))
                if rank in pids:
                    continue
                try:
                    pids[rank] = int(pid_file.read_text())
                except ValueError:                  # being written
                    continue
                try:
                    fd = os.pidfd_open(pids[rank])
                except (AttributeError, OSError):   # no pidfds here, or the rank has already ended
                    continue
                fds[fd] = rank
                poller.register(fd, select.POLLIN)
            if first:
                continue
            ready = [fds[fd] for fd, _ in poller.poll(1000 * POLL_S)] if fds else []
            ended = sorted(ready) or [rank for rank, pid in sorted(pids.items()) if _gone(pid)]
            first = [(rank, pids[rank]) for rank in ended]
    finally:
        for fd in fds:
            os.close(fd)


def failure_message(processes: int, status: int, first: list[tuple[int, int]], failed: list[int],
                    run_dir: Path, others: list[str], starter: str = "mpiexec") -> str:
    """The launcher's line for ranks that did not finish: which rank, why, and how to go on.

    ``failed``: ranks that reported an error (their own line is above); ``first``: ``(rank, pid)``
    of the first rank seen to end, or of the several found ended together (then the line names
    them all and does not guess which went first); ``status``: the exit status (``starter``'s,
    mpiexec's or the launcher's own reading of the ranks'), which for a rank killed by a signal is
    the signal's number (as MPICH reports it)."""
    exit_status = f"mpiexec exit status {status}" if starter == "mpiexec" else f"exit status {status}"
    names = {s.value: s.name for s in signal.Signals}
    killed = names.get(status) if status > signal.SIGINT else None     # 1 and 2 are more likely exit statuses
    cause = "; kill -9 or the out-of-memory killer" if status == signal.SIGKILL else ""
    if len(first) > 1:
        ranks = " and ".join(str(rank) for rank, _ in first)
        pids = " and ".join(str(pid) for _, pid in first)
        together = f"ranks {ranks} of {processes} (pids {pids}) were found ended together"
    if failed:
        what = f"rank {failed[0]} of {processes} failed (its message is above)"
    elif len(first) > 1 and killed:
        rest = "the other" if len(first) == 2 else "the others"
        what = f"{together}: one was killed by {killed} (signal {status}{cause}) and {starter} stopped {rest}"
    elif len(first) > 1:
        what = f"{together}, without a message ({exit_status})"
    elif first and killed:
        what = f"rank {first[0][0]} of {processes} (pid {first[0][1]}) was killed by {killed} (signal {status}{cause})"
    elif first:
        what = f"rank {first[0][0]} of {processes} (pid {first[0][1]}) ended without a message ({exit_status})"
    elif killed:
        what = f"the {processes} training processes failed: one was killed by {killed} ({exit_status})"
    else:
        what = f"the {processes} training processes failed ({exit_status})"
    if not any((run_dir / "checkpoints").glob("*.npz")):
        return f"{what}; the other ranks were stopped; no checkpoint was written yet"
    return (f"{what}; the other ranks were stopped; the checkpoints in {run_dir / 'checkpoints'} are intact; "
            f"resume with: {resume_command(run_dir, others)}")


def _interrupts(run_dir: Path) -> dict[str, int]:
    """The run's interrupt checkpoints (the ranks' agreed stops), by name, with their mtimes in ns."""
    return {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").glob("interrupt_*.npz")}


def launch(spec: dict[str, Any], processes: int) -> dict[str, Any]:
    """Run ``spec`` on ``processes`` ranks of this machine; returns rank 0's ``result.json``.

    Raises:
        LaunchError: an unknown transport, no MPI (``transport=mpi``), or a rank failed.
        TrainingInterrupted: a signal stopped the run (the resumable checkpoint is named).
    """
    transport = spec.get("cfg", {}).get("trainer", {}).get("transport", "shm")
    if transport not in ("shm", "mpi"):
        raise LaunchError(f"trainer.transport must be 'shm' or 'mpi', got {transport!r}")
    mpiexec = find_mpiexec() if transport == "mpi" else None
    run_dir = Path(spec["run_dir"])
    cores = default_workers()
    if processes > cores:
        log.warning("trainer.processes=%d on %d cores: the processes will share cores and each step will be "
                    "slower than with %d", processes, cores, cores)
    with tempfile.TemporaryDirectory(prefix="cifarnet-ranks-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(dict(spec, launcher_dir=tmp)))     # ranks leave their pids and failures there
        received: list[int] = []
        signalled: set[int] = set()

        def forward(signum, frame) -> None:
            received.append(signum)
            signalled.clear()                   # every rank gets this one
            deliver()

        def deliver() -> None:
            """The signal received, to each rank that has written its pid file (its handlers are
            in place from then on) and not had it yet: one that arrives while the ranks start up
            reaches each as soon as it is ready, instead of being lost."""
            if not received:
                return
            for pid_file in Path(tmp).glob("rank*.pid"):
                try:
                    pid = int(pid_file.read_text())
                except ValueError:              # being written: the next look finds it
                    continue
                if pid not in signalled:
                    signalled.add(pid)
                    try:
                        os.kill(pid, received[-1])
                    except ProcessLookupError:
                        pass

        command = rank_command("mpiexec", processes, spec_file) if mpiexec else local_command(spec_file)
        log.info("starting %d processes (%s): %s", processes, transport, " ".join(command))
        interrupts_before = _interrupts(run_dir)
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            terminal = {TERMINAL_VARIABLE: "1"} if sys.stderr.isatty() else {}     # rank 0 draws the bars
            env = dict(os.environ, **terminal)
            if mpiexec:
                ranks = subprocess.Popen(rank_command(mpiexec, processes, spec_file), stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)
                status, first = wait_watching(ranks, Path(tmp), deliver)
            else:
                status, first = run_local(spec_file, processes, env, deliver)
            failed = sorted(int(p.stem.removeprefix("rank")) for p in Path(tmp).glob("rank*.failed"))
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    # a signal to one rank also stops them all, with rank 0's interrupt checkpoint; an exit status of
    # 130/143 without that checkpoint is mpiexec ending the survivors of a failed rank
    agreed_stop = _interrupts(run_dir).items() - interrupts_before.items()      # written during this launch
    stopped = received[0] if received else (status - 128 if status in (130, 143) and agreed_stop else None)
    if stopped is not None:
        if not agreed_stop:                     # the ranks stopped before their training loop (which would
            raise KeyboardInterrupt if stopped == signal.SIGINT else Terminated()   # have said so): as one process
        newest = [p for p in (run_dir / "checkpoints").glob("*.npz") if ckpt.position(p)]
        raise TrainingInterrupted(stopped, max(newest, key=ckpt.position) if newest else None)
    if status != 0:
        raise LaunchError(failure_message(processes, status, first, failed, run_dir, spec.get("others", []),
                                          starter="mpiexec" if mpiexec else "the launcher"))
    return json.loads((run_dir / "result.json").read_text())
