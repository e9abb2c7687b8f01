"""The training loop (checkpoint files: :mod:`.keeper`; non-finite steps: :mod:`.guard`; metrics.csv:
:mod:`.metrics`; signals: :mod:`.signals`; hooks: :mod:`.hooks`), from plain objects, no config."""
from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..losses import SoftmaxCrossEntropy
from ..parallel import ThreadGroup, parts_for
from ..schedules import set_dropout_rate
from ..store import FlatStore
from .evaluate import evaluate
from .guard import NonFiniteGuard
from .hooks import Hook
from .keeper import CheckpointKeeper, pack_run
from .metrics import EpochBar, epoch_line, epoch_row, statistics_note, write_metrics
from .settings import TrainerSettings, out_of_time
from .signals import StopRequest, TrainingInterrupted
from .state import TrainState
from .step import forward_backward, read_back

log = logging.getLogger(__name__)


class Trainer:
    """Train ``model`` with ``optimizer`` over ``train_loader`` for ``settings.epochs`` epochs.

    Args: ``lr_schedule`` (step -> rate); ``dropout_schedule`` (fractional epoch -> rate, or None);
    ``eval_loaders`` (``{"val": ..., "test": ...}``, either may be absent; selection uses ``val``
    if present); ``run_dir`` (gets ``metrics.csv`` and ``checkpoints/``); ``meta`` (static checkpoint
    metadata); ``resume_command`` (path -> the command that continues the run); ``hooks`` (told of
    every step, epoch and checkpoint: :class:`Hook`; trackers are hooks).
    """

    def __init__(self, model, optimizer, lr_schedule: Callable[[int], float],
                 dropout_schedule: Callable[[float], float] | None, train_loader, eval_loaders: dict[str, Any],
                 num_classes: int, run_dir: str | Path, settings: TrainerSettings, meta: dict[str, Any],
                 resume_command: Callable[[Path], str] | None = None, hooks: Sequence[Hook] = ()):
        self.model, self.optimizer, self.lr_schedule, self.dropout_schedule = model, optimizer, lr_schedule, \
            dropout_schedule
        self.train_loader, self.eval_loaders, self.num_classes = train_loader, eval_loaders, num_classes
        self.run_dir, self.settings, self.meta, self.hooks = Path(run_dir), settings, meta, list(hooks)
        self.loss_fn = SoftmaxCrossEntropy(settings.label_smoothing)
        self.keeper = CheckpointKeeper(self.run_dir / "checkpoints", meta.get("backend", "numpy"), settings.keep_last,
                                       self.hooks)
        self.guard, self.stop = NonFiniteGuard(settings.nonfinite), StopRequest()
        self.resume_command = resume_command or (lambda p: f"python -m cifarnet resume={p}")
        parts = parts_for(train_loader.batch_size, settings.workers, FlatStore.of(model).backend.xp)
        self.group = ThreadGroup(parts) if parts > 1 else None      # the parts' communicator, for every step
        self.state, self.stopped_early = TrainState(), False       # stopped_early: at stop_after_minutes

    def fit(self, state: TrainState | None = None) -> TrainState:
        """Train from ``state`` (a fresh start if None) to the last epoch; returns the final state."""
        self.state, self.stopped_early, started = state or self.state, False, time.perf_counter()
        self.keeper.clean()
        with self.stop.listening(self.settings.handle_signals):
            try:
                while self.state.epoch < self.settings.epochs and not self.stopped_early:
                    epoch_started = time.perf_counter()
                    self._run_epoch()
                    st, limit = self.state, self.settings.stop_after_minutes
                    self.stopped_early = st.epoch < self.settings.epochs and out_of_time(
                        limit, started, epoch_started, st.epoch, self.settings.epochs)
                if self.stopped_early:
                    log.info("continue with: %s", self.resume_command(self.keeper.newest()))
            except KeyboardInterrupt:
                if self.stop.signum is None:
                    raise
                raise TrainingInterrupted(signal.SIGINT, self.keeper.newest(), aborted=True) from None
        return self.state

    def checkpoint_arrays(self) -> dict[str, np.ndarray]:
        return pack_run(self.model, self.optimizer, self.meta, self.state)

    def best_checkpoint(self) -> Path | None:
        """The best checkpoint of this run, or None if there is none (yet)."""
        return self.keeper.best()

    def _run_epoch(self) -> None:
        st, steps_per_epoch = self.state, len(self.train_loader)
        sums = {"loss": 0.0, "correct": 0.0, "images": 0.0, "seconds": 0.0, **st.partial}
        bar = EpochBar(steps_per_epoch, st.batch, f"epoch {st.epoch + 1}/{self.settings.epochs}",
                       self.settings.progress)
        tick = time.perf_counter()
        for x, y in self.train_loader.epoch(st.epoch, start_batch=st.batch):
            self.optimizer.lr = lr = self.lr_schedule(st.step)
            if self.dropout_schedule is not None:
                set_dropout_rate(self.model, self.dropout_schedule(st.epoch + st.batch / steps_per_epoch))
            for hook in self.hooks:
                hook.log_step(st.step, lr)
            loss, correct = self._step(x, y)
            st.batch += 1
            if loss is not None:
                st.step += 1
                sums["loss"], sums["correct"], sums["images"] = sums["loss"] + loss * len(y), \
                    sums["correct"] + correct, sums["images"] + len(y)
            bar.advance(sums, lr, sums["seconds"] + time.perf_counter() - tick)
            if self.stop.signum is not None:
                bar.close()
                self._interrupt(dict(sums, seconds=sums["seconds"] + time.perf_counter() - tick))
        bar.close()
        sums["seconds"] += time.perf_counter() - tick
        self._finish_epoch(sums)

    def _step(self, x, y) -> tuple[float | None, float]:
        """One optimisation step with one read-back of (loss, correct, gradients finite); returns
        (loss, correct), or (None, 0) for a skipped batch."""
        st = self.state
        self.guard.before(self.model)
        with np.errstate(over="ignore", invalid="ignore"):     # overflow is caught by the guard, by name
            result = forward_backward(self.model, self.loss_fn, x, y, self.settings.workers, group=self.group)
            loss, correct, finite = read_back(result, y, self.model.store.grads)     # the step's one host sync
        where = f"epoch {st.epoch + 1}, step {st.step + 1} (batch {st.batch + 1} of the epoch)"
        if not self.guard.check(self.model, loss, bool(finite), where):
            st.skipped += 1
            return None, 0.0
        self.optimizer.step(self.model, result.grads)
        return loss, correct

    def _finish_epoch(self, sums: dict[str, float]) -> None:
        st = self.state
        self.guard.check_epoch(sums["images"], st.epoch + 1, st.skipped)
        row = epoch_row(st, sums, self.optimizer.lr, self.model)
        for split, loader in self.eval_loaders.items():
            with np.errstate(over="ignore", invalid="ignore"):      # a non-finite loss is checked by the guard
                result = evaluate(self.model, loader, self.num_classes, self.settings.progress, self.settings.workers)
            row[f"{split}_loss"], row[f"{split}_acc"] = result.loss, result.accuracy
            self.guard.check_evaluation(split, result.loss, st.epoch + 1, st.skipped)
        improved = st.close_epoch(row, row["val_acc"] if "val" in self.eval_loaders else row.get("test_acc", ""))
        write_metrics(self.run_dir, st.history)
        for hook in self.hooks:
            hook.log_epoch(st.epoch, st.step, row)
        self.keeper.end_of_epoch(st.epoch, self.checkpoint_arrays(), improved)
        log.info("%s", epoch_line(row, self.settings.epochs, list(self.eval_loaders), improved)
                 + statistics_note(self.model, st.step))

    def _interrupt(self, sums: dict[str, float]) -> None:
        st, signum, st.partial = self.state, self.stop.signum, sums
        path = self.keeper.interrupt(st.epoch + 1, st.batch, self.checkpoint_arrays())
        log.warning("%s received: stopped after step %d (epoch %d, batch %d of %d); checkpoint %s",
                    signal.Signals(signum).name, st.step, st.epoch + 1, st.batch, len(self.train_loader), path)
        log.warning("resume with: %s", self.resume_command(path))
        raise TrainingInterrupted(signum, path)
