"""A resumed run's record, kept aside until the resumed training starts.

``resume=<run>`` continues in the run's own directory: Hydra writes the continuation's record
(``.hydra-resume/``) before the job starts, and its log goes on in the run's ``cifarnet.log``. A
resume that fails before training starts (``trainer.epochs`` below what was trained, missing data,
a bad value) must leave both as they were, as a failed evaluation does. So Hydra writes the record
to ``.hydra-resume.pending/`` (the run guard points it there), and the log lines go to a buffer;
when the first step is about to run, :meth:`PendingRecord.commit` moves the record into place and
writes the buffered lines to the log. On failure :meth:`PendingRecord.discard` drops both.
"""
from __future__ import annotations

import logging
import shutil
from logging.handlers import MemoryHandler
from pathlib import Path

from ..run_dir import PENDING_RESUME, RESUME_RECORD
from ..training.hooks import Hook


class PendingRecord(Hook):
    """Holds back a resumed run's record and log lines; a hook that commits them at the first step."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.done = Path(run_dir), False
        root = logging.getLogger()
        self.file = next((h for h in root.handlers if isinstance(h, logging.FileHandler)), None)
        self.buffer = None
        if self.file is not None:
            self.buffer = MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1, target=self.file,
                                        flushOnClose=False)
            self.buffer.setLevel(self.file.level)
            self.buffer.setFormatter(self.file.formatter)
            root.removeHandler(self.file)
            root.addHandler(self.buffer)

    def _restore(self, keep: bool) -> None:
        """Back to logging into the run's log (``keep``: with the held lines), or, after a failure,
        to no log file at all: the error is reported on stderr only."""
        if self.buffer is None:
            return
        root = logging.getLogger()
        if keep:
            self.buffer.flush()
            root.addHandler(self.file)
        else:
            self.file.close()
        self.buffer.buffer.clear()
        root.removeHandler(self.buffer)
        self.buffer = None

    def commit(self) -> None:
        """The resumed run has started: its record replaces the previous continuation's, its log
        lines go into the run's log."""
        if self.done:
            return
        self.done = True
        pending, record = self.run_dir / PENDING_RESUME, self.run_dir / RESUME_RECORD
        if pending.is_dir():
            shutil.rmtree(record, ignore_errors=True)
            pending.rename(record)
        self._restore(keep=True)

    def discard(self) -> None:
        """The resume failed before training: the run's records stay as they were. Nothing is done
        once the record was committed: a failure after the start is the run's to log."""
        if self.done:
            return
        self.done = True
        shutil.rmtree(self.run_dir / PENDING_RESUME, ignore_errors=True)
        self._restore(keep=False)

    def log_step(self, step: int, lr: float) -> None:
        self.commit()
