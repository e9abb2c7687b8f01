"""Keeping a virtual machine's idle cores from halting while the threads of one training step wait.

The threads a batch is split between (:mod:`cifarnet.parallel`) hand Python's interpreter lock to
each other thousands of times a step: every NumPy call that releases it may have to wait to take it
back. A thread that waits sleeps, and on a KVM guest whose idle driver is ``haltpoll`` with
``guest_halt_poll_ns`` 0 (the machines these numbers come from) a core with nothing to run halts at
once: the host may give it to other work, and the waiter starts again 25-45 us late, its caches
cold. The two threads of a ResNet-32 step then use about a quarter more CPU time each than two
processes doing the same work (docs/performance.md, round eight).

The remedy where one has root is the guest's own setting (``guest_halt_poll_ns``, README). Without
it, :func:`keep_cores_awake` starts one process per thread (at most one per core) that spins at
the lowest priority Linux has (``SCHED_IDLE``): it runs only when its core would otherwise be
idle, so the core does not halt, and a woken thread takes the core back at once (a context switch
inside the guest). It is what OpenMP runtimes do with their own waiting threads
(``OMP_WAIT_POLICY=active``). It pays where the threads wait often: ResNet-32's two-thread step
took 0.958 of the time without, but airbench94's, whose calls are long and waits few, 1.028
(docs/performance.md, round eight), so it is off unless asked for. The spinners
import nothing of cifarnet, sit in a process group of their own and ignore SIGINT (a Ctrl-C at the
terminal is the trainer's to handle), stay in its session (with Linux's scheduling autogroups a new
session would be weighed as an equal of the trainer's, whatever the priority inside it), end when
they are stopped, and end by themselves when their parent does, however it ends
(``PR_SET_PDEATHSIG``, and a check of the parent's pid as a fallback).

``trainer.keep_cores_awake``: ``never`` (the default) starts none; ``auto`` starts them while a run
trains with its batch split between threads on a machine whose cores halt at once
(:func:`cores_halt_at_once`); ``always`` whenever the batch is split.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("cifarnet.idle_cores")

SETTINGS = ("auto", "always", "never")

# The whole program of a spinner (``python -S -c``): lowest priority, killed with its parent
# (prctl PR_SET_PDEATHSIG = 1 on Linux), and a check of the parent in case that is not available.
SPINNER = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
while os.getppid() == parent:
    for _ in range(1 << 20):
        pass
"""


def cores_halt_at_once(sys_root: Path = Path("/sys")) -> bool:
    """Whether this machine's idle cores halt without polling first: the ``haltpoll`` idle driver
    (a KVM guest) with ``guest_halt_poll_ns`` 0. False where either cannot be read."""
    try:
        driver = (sys_root / "devices/system/cpu/cpuidle/current_driver").read_text().strip()
        poll_ns = int((sys_root / "module/haltpoll/parameters/guest_halt_poll_ns").read_text())
    except (OSError, ValueError):
        return False
    return driver == "haltpoll" and poll_ns == 0


def wanted(setting: str, threads: int, sys_root: Path = Path("/sys")) -> bool:
    """Whether ``setting`` (one of :data:`SETTINGS`) starts spinners for a step split between
    ``threads`` threads: never for one thread (no thread waits for another)."""
    if setting not in SETTINGS:
        raise ValueError(f"keep_cores_awake must be one of {', '.join(SETTINGS)}, got {setting!r}")
    if threads < 2 or setting == "never" or not sys.platform.startswith("linux"):
        return False
    return setting == "always" or cores_halt_at_once(sys_root)


def start_spinners(count: int) -> list[subprocess.Popen]:
    """``count`` spinner processes (see the module docstring)."""
    command = [sys.executable, "-S", "-c", SPINNER, str(os.getpid())]
    # A process group of its own (a Ctrl-C at the terminal goes to the foreground group only), but
    # this session: a new session would be a new scheduling autogroup, which Linux weighs against
    # this one as an equal, whatever the priority inside it (the spinners then took half the CPU).
    spinners = [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, process_group=0) for _ in range(count)]
    for spinner in spinners:            # lowest priority at once (the spinner also sets it itself)
        with contextlib.suppress(OSError):
            os.sched_setscheduler(spinner.pid, os.SCHED_IDLE, os.sched_param(0))
    return spinners


def stop_spinners(spinners: list[subprocess.Popen]) -> None:
    """End ``spinners`` and reap them."""
    for spinner in spinners:
        if spinner.poll() is None:
            spinner.kill()
    for spinner in spinners:
        spinner.wait()


@contextlib.contextmanager
def keep_cores_awake(setting: str, threads: int, cores: int | None = None) -> Iterator[list[subprocess.Popen]]:
    """Run the block with one spinner per thread of the split batch, at most one per core
    (``cores``, default: those this process may run on), if :func:`wanted` says so; yields the
    spinners (an empty list when none). They are stopped when the block ends, however it ends."""
    if not wanted(setting, threads):
        yield []
        return
    count = min(threads, cores if cores is not None else len(os.sched_getaffinity(0)))
    spinners = start_spinners(count)
    log.info("keeping %d idle cores from halting while %d threads train (trainer.keep_cores_awake=%s: "
             "docs/performance.md, round eight)", count, threads, setting)
    try:
        yield spinners
    finally:
        stop_spinners(spinners)
