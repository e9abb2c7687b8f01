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

from ..comm import LOCAL, Communicator, rank_zeros
from ..losses import SoftmaxCrossEntropy
from ..schedules import set_dropout_rate
from ..schedules.lr import total_steps
from ..store import FlatStore
from .average import WeightAverage
from .evaluate import evaluate
from .guard import NonFiniteGuard
from .hooks import Hook
from .keeper import CheckpointKeeper, pack_run
from .metrics import EpochBar, accumulate, epoch_line, epoch_row, statistics_note, write_metrics
from .settings import TrainerSettings, epochs_to_run, out_of_time
from .signals import StopRequest, TrainingInterrupted, announce_stop
from .state import TrainState
from .step import StepSummary, forward_backward, read_back, thread_group

log = logging.getLogger(__name__)


class Trainer:
    """Train ``model`` with ``optimizer`` over ``train_loader`` for ``settings.epochs`` epochs.

    Args: ``lr_schedule`` (step -> rate); ``dropout_schedule`` (fractional epoch -> rate, or None);
    ``eval_loaders`` (``{"val": ..., "test": ...}``, either may be absent; selection uses ``val``
    if present); ``run_dir`` (gets ``metrics.csv`` and ``checkpoints/``); ``meta`` (static checkpoint
    metadata); ``resume_command`` (path -> the command that continues the run); ``hooks`` (told of
    every step, epoch and checkpoint: :class:`Hook`); ``comm`` (the processes of a data-parallel run,
    :mod:`cifarnet.distributed`: they agree on every step, stop and time limit; rank 0 writes files).
    """

    def __init__(self, model, optimizer, lr_schedule: Callable[[int], float],
                 dropout_schedule: Callable[[float], float] | None, train_loader, eval_loaders: dict[str, Any],
                 num_classes: int, run_dir: str | Path, settings: TrainerSettings, meta: dict[str, Any],
                 resume_command: Callable[[Path], str] | None = None, hooks: Sequence[Hook] = (),
                 comm: Communicator = LOCAL):
        self.model, self.optimizer, self.lr_schedule, self.dropout_schedule = model, optimizer, lr_schedule, \
            dropout_schedule
        self.train_loader, self.eval_loaders, self.num_classes = train_loader, eval_loaders, num_classes
        self.run_dir, self.settings, self.meta, self.hooks = Path(run_dir), settings, meta, list(hooks)
        self.loss_fn = SoftmaxCrossEntropy(settings.label_smoothing, settings.loss_reduction)
        self.total_steps = total_steps(settings.epochs, len(train_loader))     # batches, fractional epochs too
        self.epochs = epochs_to_run(settings.epochs)
        self.comm, self.writes, self.bar_shown = comm, comm.rank == 0, settings.progress and comm.rank == 0
        self.keeper = CheckpointKeeper(self.run_dir / "checkpoints", meta.get("backend", "numpy"), settings.keep_last,
                                       self.hooks, writes=self.writes)
        self.guard, self.stop = NonFiniteGuard(settings.nonfinite), StopRequest()
        self.resume_command = resume_command or (lambda p: f"python -m cifarnet resume={p}")
        self.group = thread_group(train_loader.share, settings.workers, FlatStore.of(model).backend.xp, comm,
                                  settings.sync_batchnorm)        # the threads' communicator, for every step
        self.state, self.stopped_early = TrainState(), False       # stopped_early: at stop_after_minutes
        self.average = WeightAverage(settings.ema_every, settings.ema_decay, settings.ema_power, settings.lookahead,
                                     self.total_steps) if settings.ema_every else None

    def fit(self, state: TrainState | None = None) -> TrainState:
        """Train from ``state`` (a fresh start if None) to the last epoch; returns the final state."""
        self.state, self.stopped_early, started = state or self.state, False, time.perf_counter()
        if self.average is not None and not self.average.average:      # not continued from a checkpoint
            self.average.start(self.model)
        self.keeper.clean()
        with self.stop.listening(self.settings.handle_signals):
            try:
                while self.state.epoch < self.epochs and not self.stopped_early:
                    epoch_started = time.perf_counter()
                    self._run_epoch()
                    epoch, epochs = self.state.epoch, self.epochs
                    self.stopped_early = rank_zeros(self.comm, epoch < epochs and out_of_time(
                        self.settings.stop_after_minutes, started, epoch_started, epoch, epochs))
                if self.stopped_early:
                    log.info("continue with: %s", self.resume_command(self.keeper.newest()))
            except KeyboardInterrupt:
                if self.stop.signum is None:
                    raise
                raise TrainingInterrupted(signal.SIGINT, self.keeper.newest(), aborted=True) from None
        return self.state

    def checkpoint_arrays(self) -> dict[str, np.ndarray]:
        """The checkpoint's entries (none on a process that does not write)."""
        if not self.writes:
            return {}
        extras = self.average.state() if self.average is not None else None
        return pack_run(self.model, self.optimizer, self.meta, self.state, extras)

    def _run_epoch(self) -> None:
        st, steps_per_epoch = self.state, len(self.train_loader)
        batches = min(steps_per_epoch, self.total_steps - st.epoch * steps_per_epoch)   # fewer in a fractional last
        self.optimizer.epoch = st.epoch
        if hasattr(self.model, "freeze_before"):            # no backward through layers that train nothing
            self.model.freeze_before(self.optimizer.frozen_names(self.model))
        sums = {"loss": 0.0, "correct": 0.0, "images": 0.0, "seconds": 0.0, **st.partial}
        bar = EpochBar(batches, st.batch, f"epoch {st.epoch + 1}/{self.settings.epochs:g}", self.bar_shown)
        tick = time.perf_counter()
        for x, y in self.train_loader.epoch(st.epoch, start_batch=st.batch, stop_batch=batches):
            self.optimizer.lr = lr = self.lr_schedule(st.step)
            self.optimizer.epoch = st.epoch
            if self.dropout_schedule is not None:
                set_dropout_rate(self.model, self.dropout_schedule(st.epoch + st.batch / steps_per_epoch))
            for hook in self.hooks:
                hook.log_step(st.step, lr)
            done = self._step(x, y)
            st.batch += 1
            if done.finite:
                st.step += 1
                accumulate(sums, done.loss, done.correct, done.images)
                if self.average is not None:
                    self.average.after_step(self.model, st.step)
            bar.advance(sums, lr, sums["seconds"] + time.perf_counter() - tick)
            if done.stop is not None:
                bar.close()
                self._interrupt(dict(sums, seconds=sums["seconds"] + time.perf_counter() - tick), done.stop)
        bar.close()
        sums["seconds"] += time.perf_counter() - tick
        self._finish_epoch(sums)

    def _step(self, x, y) -> StepSummary:
        """One optimisation step, one read-back (:func:`read_back`); a skipped batch comes back not ``finite``."""
        st = self.state
        self.guard.before(self.model)
        with np.errstate(over="ignore", invalid="ignore"):     # overflow is caught by the guard, by name
            result = forward_backward(self.model, self.loss_fn, x, y, self.settings.workers, group=self.group,
                                      comm=self.comm, total=self.train_loader.batch_size,
                                      static_buffers=self.settings.static_buffers)
            done = read_back(result, y, self.model.store.grads, self.comm,       # the step's one host sync
                             stop=self.stop.signum)
        where = f"epoch {st.epoch + 1}, step {st.step + 1} (batch {st.batch + 1} of the epoch)"
        if not self.guard.check(self.model, done.loss, done.finite, where):
            st.skipped += 1
            done.finite = False
            return done
        self.optimizer.step(self.model, result.grads)
        return done

    def _finish_epoch(self, sums: dict[str, float]) -> None:
        st = self.state
        self.guard.check_epoch(sums["images"], st.epoch + 1, st.skipped)
        row = epoch_row(st, sums, self.optimizer.lr, self.model)
        for split, loader in self.eval_loaders.items():
            with np.errstate(over="ignore", invalid="ignore"):      # a non-finite loss is checked by the guard
                got = evaluate(self.model, loader, self.num_classes, self.bar_shown, self.settings.workers, self.comm)
            row[f"{split}_loss"], row[f"{split}_acc"] = got.loss, got.accuracy
            self.guard.check_evaluation(split, got.loss, st.epoch + 1, st.skipped)
        improved = st.close_epoch(row, row["val_acc"] if "val" in self.eval_loaders else row.get("test_acc", ""))
        if self.writes:
            write_metrics(self.run_dir, st.history)
        for hook in self.hooks:
            hook.log_epoch(st.epoch, st.step, row)
        self.keeper.end_of_epoch(st.epoch, self.checkpoint_arrays(), improved)
        log.info("%s", epoch_line(row, self.settings.epochs, list(self.eval_loaders), improved)
                 + statistics_note(self.model, st.step + int(self.meta.get("initial_steps", 0))))

    def _interrupt(self, sums: dict[str, float], stop: int) -> None:
        """Every process stops at this step (the stop went round with it) once rank 0's checkpoint is written."""
        st, st.partial = self.state, sums
        path = self.keeper.interrupt(st.epoch + 1, st.batch, self.checkpoint_arrays())
        self.comm.barrier()
        raise announce_stop(stop, st, len(self.train_loader), path, self.resume_command(path))
