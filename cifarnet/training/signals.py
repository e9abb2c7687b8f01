"""SIGINT and SIGTERM during training: finish the step, write a resumable checkpoint, stop."""
from __future__ import annotations

import logging
import shlex
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("cifarnet.training.trainer")



class Terminated(BaseException):
    """SIGTERM outside training (while starting up, loading data, evaluating): like Ctrl-C's
    KeyboardInterrupt, it unwinds the job so that its cleanup runs, then exits 143."""

    signum = signal.SIGTERM


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler the command line (and an MPI rank) installs while no training loop has
    its own."""
    raise Terminated()

class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived; a resumable checkpoint was written first, unless a second SIGINT
    aborted at once (``aborted``).

    Attributes: ``signum`` (the signal), ``checkpoint`` (the resumable checkpoint: the one just
    written, or after an abort the newest complete one, or None), ``aborted``.
    """

    def __init__(self, signum: int, checkpoint: Path | None, aborted: bool = False):
        name = signal.Signals(signum).name
        if aborted:
            where = f"the newest complete checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written"
            message = f"second {name}: aborted at once, without an interrupt checkpoint; {where}"
        else:
            message = f"interrupted by {name}; resumable checkpoint at {checkpoint}"
        super().__init__(message)
        self.signum, self.checkpoint, self.aborted = signum, checkpoint, aborted


class StopRequest:
    """The signal that asked training to stop (``signum``), or None. While :meth:`listening`, the
    first SIGINT/SIGTERM sets it (the loop stops after the current step); a second SIGINT aborts
    at once (KeyboardInterrupt). The previous handlers are restored afterwards."""

    def __init__(self):
        self.signum: int | None = None

    @contextmanager
    def listening(self, enabled: bool = True):
        self.signum = None
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.signum is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt          # second Ctrl-C: abort now; files are written atomically
            self.signum = signum

        try:
            for s in previous:
                signal.signal(s, handler)
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def resume_command(run_dir: str | Path, others: list[str]) -> str:
    """The command that continues the run in ``run_dir`` from its newest checkpoint, with the
    command line's other overrides (``others``) repeated."""
    return shlex.join(["python", "-m", "cifarnet", f"resume={run_dir}", *others])


def announce_stop(signum: int, state, steps_per_epoch: int, path: Path, resume_command: str) -> TrainingInterrupted:
    """Log where a signal stopped training (``state``: the :class:`TrainState`) and how to go on; the
    exception to raise."""
    log.warning("%s received: stopped after step %d (epoch %d, batch %d of %d); checkpoint %s",
                signal.Signals(signum).name, state.step, state.epoch + 1, state.batch, steps_per_epoch, path)
    log.warning("resume with: %s", resume_command)
    return TrainingInterrupted(signum, path)
