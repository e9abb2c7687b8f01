"""The training loop: epochs of steps, evaluation, metrics, checkpoints, interruption.

Everything it needs is passed in as plain objects (model, optimizer, schedules, loaders, a run
directory), so it runs the same from the command line, a test or a notebook.
"""
from __future__ import annotations

import csv
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..backend import array_module
from ..files import replace_atomically
from ..layers import BatchNorm, Dropout
from ..losses import SoftmaxCrossEntropy
from ..schedules import set_dropout_rate
from ..store import FlatStore
from ..tracking import Tracker
from .evaluate import evaluate
from .step import forward_backward

log = logging.getLogger(__name__)

METRIC_FIELDS = ["epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "lr", "dropout", "epoch_seconds", "images_per_second", "skipped_batches"]


class NonFiniteError(RuntimeError):
    """A NaN or Inf loss or gradient; the message gives epoch, step and the tensor."""


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


@dataclass
class TrainerSettings:
    """Args:
        epochs: total epochs (a resumed run continues up to this number).
        label_smoothing: for the training loss.
        keep_last: epoch checkpoints kept (older ones are deleted; the best is kept separately).
        progress: draw a progress bar (tqdm) on an interactive terminal, for training and evaluation.
        nonfinite: ``"stop"`` raises :class:`NonFiniteError`; ``"skip"`` drops the batch and counts it.
        handle_signals: turn SIGINT/SIGTERM into a checkpoint and :class:`TrainingInterrupted`.
        workers: threads each training batch is split between, batch norm synchronised
            (:mod:`cifarnet.parallel`); None: one per core, 1: none.
        stop_after_minutes: end cleanly at the last epoch boundary before this much training time
            has passed (the next epoch is predicted to take as long as the last), so that a long
            run goes in pieces that each fit a time limit; None: no limit.
    """

    epochs: int
    label_smoothing: float = 0.0
    keep_last: int = 2
    progress: bool = True
    nonfinite: str = "stop"
    handle_signals: bool = True
    workers: int | None = None
    stop_after_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"trainer.epochs must be >= 1, got {self.epochs}")
        if self.keep_last < 1:
            raise ValueError(f"trainer.keep_last must be >= 1, got {self.keep_last}")
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"trainer.nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        if self.stop_after_minutes is not None and self.stop_after_minutes <= 0:
            raise ValueError(f"trainer.stop_after_minutes must be > 0 (or null), got {self.stop_after_minutes}")


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint's metadata.

    ``epoch`` counts completed epochs; ``batch`` is the number of batches of epoch ``epoch`` already
    done (non-zero only in a mid-epoch checkpoint); ``step`` counts optimizer steps.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    partial: dict[str, float] = field(default_factory=dict)   # running sums of an unfinished epoch

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class Trainer:
    """Train ``model`` with ``optimizer`` over ``train_loader`` for ``settings.epochs`` epochs.

    Args:
        lr_schedule: step -> learning rate.
        dropout_schedule: epoch (fractional) -> dropout rate, or None to leave rates alone.
        eval_loaders: ``{"val": loader, "test": loader}`` (either may be absent); model selection
            uses ``val`` when present, else ``test``.
        run_dir: gets ``metrics.csv`` and ``checkpoints/``.
        meta: static checkpoint metadata (model description, normalisation, class names, backend,
            dtype, config, ...); the trainer adds its :class:`TrainState` and RNG states.
        resume_command: path -> the command line that resumes from that checkpoint (for logs).
        trackers: told of every step's learning rate and every epoch's metrics
            (:mod:`cifarnet.tracking`); ``metrics.csv`` is written either way.
    """

    def __init__(self, model, optimizer, lr_schedule: Callable[[int], float],
                 dropout_schedule: Callable[[float], float] | None, train_loader, eval_loaders: dict[str, Any],
                 num_classes: int, run_dir: str | Path, settings: TrainerSettings, meta: dict[str, Any],
                 resume_command: Callable[[Path], str] | None = None, trackers: Sequence[Tracker] = ()):
        self.model, self.optimizer = model, optimizer
        self.lr_schedule, self.dropout_schedule = lr_schedule, dropout_schedule
        self.train_loader, self.eval_loaders = train_loader, eval_loaders
        self.num_classes, self.settings, self.meta = num_classes, settings, meta
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.loss_fn = SoftmaxCrossEntropy(settings.label_smoothing)
        self.backend_name = meta.get("backend", "numpy")
        self.resume_command = resume_command or (lambda p: f"python -m cifarnet resume={p}")
        self.trackers = list(trackers)
        self.state = TrainState()
        self.stopped_early = False          # the last fit ended at trainer.stop_after_minutes
        self._signal: int | None = None

    # -- public -------------------------------------------------------------------------------
    def fit(self, state: TrainState | None = None) -> TrainState:
        """Train from ``state`` (a fresh start if None) to the last epoch; returns the final state."""
        if state is not None:
            self.state = state
        if self.ckpt_dir.is_dir():
            for tmp in ckpt.remove_stale_temporaries(self.ckpt_dir):
                log.warning("removed %s, left by an interrupted checkpoint write", tmp)
        self.stopped_early = False
        started = time.perf_counter()
        with self._signals():
            try:
                while self.state.epoch < self.settings.epochs:
                    epoch_started = time.perf_counter()
                    self._run_epoch()
                    if self.state.epoch < self.settings.epochs and self._out_of_time(started, epoch_started):
                        break
            except KeyboardInterrupt:
                if self._signal is None:
                    raise
                raise TrainingInterrupted(signal.SIGINT, self._newest_checkpoint(), aborted=True) from None
        return self.state

    def _out_of_time(self, started: float, epoch_started: float) -> bool:
        """Whether another epoch (as long as the last) would overrun ``stop_after_minutes``; if so,
        say where the run stands and how to continue it."""
        limit = self.settings.stop_after_minutes
        now = time.perf_counter()
        if limit is None or (now - started) + (now - epoch_started) <= 60 * limit:
            return False
        self.stopped_early = True
        newest = self._newest_checkpoint()
        log.info("stopping after epoch %d of %d: trainer.stop_after_minutes=%g would be passed by the next epoch "
                 "(%.1f minutes so far, the last epoch %.1f)", self.state.epoch, self.settings.epochs, limit,
                 (now - started) / 60, (now - epoch_started) / 60)
        log.info("continue with: %s", self.resume_command(newest))
        return True

    def checkpoint_meta(self) -> dict[str, Any]:
        return dict(self.meta, state=asdict(self.state), rng=ckpt.rng_states(self.model))

    def checkpoint_arrays(self) -> dict[str, np.ndarray]:
        """The checkpoint's entries. Raises :class:`NonFiniteError` rather than pack NaN or Inf."""
        broken = _first_nonfinite(list(self.model.named_parameters()) + list(self.model.named_buffers()))
        if broken is not None:
            raise NonFiniteError(f"the model holds non-finite values at epoch {self.state.epoch + 1}, step "
                                 f"{self.state.step} ({broken}); no checkpoint was written, earlier ones are "
                                 "untouched")
        return ckpt.pack(self.model.state_dict(), self.optimizer.state_dict(), self.checkpoint_meta())

    def save_checkpoint(self, path: Path) -> Path:
        return ckpt.write_atomic(path, self.checkpoint_arrays())

    # -- one epoch ----------------------------------------------------------------------------
    def _run_epoch(self) -> None:
        st, loader = self.state, self.train_loader
        epoch = st.epoch                                     # 0-based index of the running epoch
        steps_per_epoch = len(loader)
        sums = {"loss": 0.0, "correct": 0.0, "images": 0.0, "seconds": 0.0, **st.partial}
        bar = tqdm(total=steps_per_epoch, initial=st.batch, desc=f"epoch {epoch + 1}/{self.settings.epochs}",
                   unit="batch", leave=False, disable=not (self.settings.progress and sys.stderr.isatty()))
        tick = time.perf_counter()
        for x, y in loader.epoch(epoch, start_batch=st.batch):
            lr = self.lr_schedule(st.step)
            self.optimizer.lr = lr
            if self.dropout_schedule is not None:
                set_dropout_rate(self.model, self.dropout_schedule(epoch + st.batch / steps_per_epoch))
            for tracker in self.trackers:
                tracker.log_step(st.step, lr)
            loss, correct = self._step(x, y, epoch)
            st.batch += 1
            if loss is not None:
                st.step += 1
                sums["loss"] += loss * len(y)
                sums["correct"] += correct
                sums["images"] += len(y)
            if not bar.disable:
                seen = max(sums["images"], 1)
                ips = sums["images"] / max(sums["seconds"] + time.perf_counter() - tick, 1e-9)
                bar.set_postfix_str(f"loss {sums['loss'] / seen:.3f} acc {sums['correct'] / seen:.1%} "
                                    f"lr {lr:.3g} {ips:,.0f} img/s", refresh=False)
                bar.update(1)
            if self._signal is not None:
                bar.close()
                sums["seconds"] += time.perf_counter() - tick
                self._interrupt(sums)
        bar.close()
        sums["seconds"] += time.perf_counter() - tick
        self._finish_epoch(sums)

    def _step(self, x, y, epoch: int) -> tuple[float | None, float]:
        """One optimisation step; returns (loss, correct) or (None, 0) for a skipped batch.

        In skip mode the batch-norm running statistics are copied before the forward pass and put
        back when the batch is skipped, so a poisoned batch leaves no trace in the model.
        """
        st = self.state
        skip = self.settings.nonfinite == "skip"
        saved = [b.copy() for _, b in self.model.named_buffers()] if skip else None
        with np.errstate(over="ignore", invalid="ignore"):     # overflow is caught below, by name
            result = forward_backward(self.model, self.loss_fn, x, y, self.settings.workers)
            loss = float(result.loss)
            bad = None if math.isfinite(loss) else "loss"
            store = FlatStore.of(self.model)
            grads = store.gather(result.grads)                 # every gradient in one buffer ...
            if bad is None and not bool(array_module(grads).isfinite(grads).all()):    # ... checked at once
                bad = f"gradient of {_first_nonfinite(store.grad_views.items())}"
        if bad is not None:
            where = f"epoch {epoch + 1}, step {st.step + 1} (batch {st.batch + 1} of the epoch)"
            if self.settings.nonfinite == "stop":
                raise NonFiniteError(f"non-finite {bad} at {where} (loss {loss}); training stopped, "
                                     "earlier checkpoints are untouched. Lower the learning rate or "
                                     "set trainer.nonfinite=skip to drop such batches.")
            for (_, buffer), before in zip(self.model.named_buffers(), saved, strict=True):
                buffer[...] = before                           # running statistics as before the batch
            broken = _first_nonfinite(self.model.named_parameters())
            if broken is not None:
                raise NonFiniteError(f"non-finite {bad} at {where}, and the weights themselves are non-finite "
                                     f"({broken}): an earlier update overflowed, so skipping batches cannot "
                                     "recover; training stopped, earlier checkpoints are untouched. Lower the "
                                     "learning rate.")
            st.skipped += 1
            log.warning("skipped batch with non-finite %s at %s", bad, where)
            return None, 0.0
        self.optimizer.step(self.model, store.grad_views)
        correct = float((result.logits.argmax(axis=1) == y).sum())
        return loss, correct

    def _finish_epoch(self, sums: dict[str, float]) -> None:
        st = self.state
        if sums["images"] == 0:
            raise NonFiniteError(f"every batch of epoch {st.epoch + 1} was non-finite ({st.skipped} skipped); "
                                 "nothing was learned and no checkpoint was written. Lower the learning rate "
                                 "or check the data.")
        row: dict[str, Any] = {k: "" for k in METRIC_FIELDS}
        images = sums["images"]                            # > 0: checked above
        row.update(epoch=st.epoch + 1, step=st.step, train_loss=sums["loss"] / images,
                   train_acc=sums["correct"] / images, lr=self.optimizer.lr,
                   dropout=_dropout_rate(self.model), epoch_seconds=round(sums["seconds"], 3),
                   images_per_second=round(sums["images"] / max(sums["seconds"], 1e-9), 1),
                   skipped_batches=st.skipped)
        for split, loader in self.eval_loaders.items():
            with np.errstate(over="ignore", invalid="ignore"):      # a non-finite loss is reported below
                result = evaluate(self.model, loader, self.num_classes, progress=self.settings.progress)
            row[f"{split}_loss"], row[f"{split}_acc"] = result.loss, result.accuracy
            if not math.isfinite(result.loss):
                raise NonFiniteError(f"evaluating on the {split} split after epoch {st.epoch + 1} gave a non-finite "
                                     f"loss ({result.loss}): the weights overflow ({st.skipped} batches of the "
                                     "epoch were skipped); no checkpoint was written, earlier ones are untouched. "
                                     "Lower the learning rate.")
        metric = row["val_acc"] if "val" in self.eval_loaders else row.get("test_acc", "")
        st.epoch, st.batch, st.skipped, st.partial = st.epoch + 1, 0, 0, {}
        st.history.append(row)
        improved = metric != "" and metric > st.best_metric
        if improved:
            st.best_metric, st.best_epoch = float(metric), st.epoch
        self._write_metrics()
        for tracker in self.trackers:
            tracker.log_epoch(st.epoch, st.step, row)
        arrays = self.checkpoint_arrays()                  # packed once, written once or twice
        ckpt.write_atomic(self.ckpt_dir / ckpt.epoch_name(st.epoch, self.backend_name), arrays)
        if improved:
            best = ckpt.write_atomic(self.ckpt_dir / ckpt.best_name(self.backend_name), arrays)
            for other in self.ckpt_dir.glob("best_*.npz"):     # one best file, whichever backend wrote it
                if other != best and ckpt.is_best(other):
                    other.unlink(missing_ok=True)
        self._prune()
        evals = "  ".join(f"{s} loss {row[f'{s}_loss']:.4f} acc {row[f'{s}_acc']:.2%}" for s in self.eval_loaders)
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  %s  lr %.4g  %.1f s  %.0f img/s%s%s",
                 st.epoch, self.settings.epochs, row["train_loss"], 100 * row["train_acc"], evals, row["lr"],
                 row["epoch_seconds"], row["images_per_second"], "  (best)" if improved else "",
                 self._statistics_note())

    def _newest_checkpoint(self) -> Path | None:
        found = [p for p in self.ckpt_dir.glob("*.npz") if ckpt.position(p)] if self.ckpt_dir.is_dir() else []
        return max(found, key=ckpt.position) if found else None

    def best_checkpoint(self) -> Path | None:
        """The best checkpoint of this run, or None if there is none (yet)."""
        found = [p for p in self.ckpt_dir.glob("best_*.npz") if ckpt.is_best(p)] if self.ckpt_dir.is_dir() else []
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None

    def _statistics_note(self) -> str:
        """A warning for the epoch line while batch norm's running statistics are still mostly their
        initial values (zero mean, unit variance): evaluation uses them, so its loss and accuracy
        mean little until then. PyTorch's batch norm starts and updates the same way."""
        momenta = [layer.momentum for _, layer in self.model.walk() if isinstance(layer, BatchNorm)]
        if not momenta or min(momenta) <= 0:
            return ""
        needed = math.ceil(math.log(0.05) / math.log(1.0 - min(momenta))) if min(momenta) < 1 else 1
        if self.state.step >= needed:
            return ""
        return (f"  (note: batch-norm running statistics have seen only {self.state.step} steps; "
                f"evaluation figures are unreliable until about {needed})")

    # -- files --------------------------------------------------------------------------------
    def _write_metrics(self) -> None:
        with replace_atomically(self.run_dir / "metrics.csv") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(self.state.history)

    def _prune(self) -> None:
        """Keep the last ``keep_last`` epoch checkpoints; drop interrupt checkpoints the run has passed."""
        epochs = sorted(p for p in self.ckpt_dir.glob(f"epoch*_{self.backend_name}.npz") if ckpt.position(p))
        for old in epochs[:-self.settings.keep_last]:
            old.unlink(missing_ok=True)
        now = (self.state.epoch, 0)
        for interrupted in self.ckpt_dir.glob("interrupt_*.npz"):
            if (ckpt.position(interrupted) or now) < now:
                interrupted.unlink(missing_ok=True)

    # -- interruption -------------------------------------------------------------------------
    def _interrupt(self, sums: dict[str, float]) -> None:
        st = self.state
        st.partial = {k: sums[k] for k in ("loss", "correct", "images", "seconds")}
        path = self.save_checkpoint(self.ckpt_dir / ckpt.interrupt_name(st.epoch + 1, st.batch, self.backend_name))
        signum = self._signal
        log.warning("%s received: stopped after step %d (epoch %d, batch %d of %d); checkpoint %s",
                    signal.Signals(signum).name, st.step, st.epoch + 1, st.batch, len(self.train_loader), path)
        log.warning("resume with: %s", self.resume_command(path))
        raise TrainingInterrupted(signum, path)

    @contextmanager
    def _signals(self):
        """While training: the first SIGINT/SIGTERM asks for a clean stop after the current step,
        a second SIGINT aborts at once. The previous handlers are restored afterwards."""
        if not self.settings.handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt          # second Ctrl-C: abort now; files are written atomically
            self._signal = signum

        try:
            for s in previous:
                signal.signal(s, handler)
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _first_nonfinite(named_arrays) -> str | None:
    """The name of the first array holding NaN or Inf, or None."""
    for name, a in named_arrays:
        if not bool(array_module(a).isfinite(a).all()):
            return name
    return None


def _dropout_rate(model) -> float | str:
    """The rate of the model's first dropout layer ("" without one), for the metrics file."""
    return next((layer.rate for _, layer in model.walk() if isinstance(layer, Dropout)), "")
