"""The trainer's settings: the one typed definition the ``trainer`` config group is read off."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from ..errors import InvalidValue

log = logging.getLogger("cifarnet.training.trainer")


@dataclass
class TrainerSettings:
    """Args:
        epochs: total epochs (a resumed run continues up to this number); a fraction ends the last
            epoch early, after that fraction of its batches (9.9: nine epochs and 90% of a tenth,
            the steps rounded up).
        label_smoothing: for the training loss.
        loss_reduction: ``mean`` (the usual) or ``sum``: the training loss's gradient is that of
            the loss summed over the batch (airbench's; the logged loss stays the mean).
        dropout_schedule: ``none``, ``linear`` or ``cosine``: dropout rates from the model's own
            to ``dropout_final`` over the run.
        dropout_final: the rate the dropout schedule ends at.
        keep_last: epoch checkpoints kept (older ones are deleted; the best is kept separately).
        progress: draw a progress bar (tqdm) on an interactive terminal, for training and evaluation.
        nonfinite: ``"stop"`` raises :class:`NonFiniteError`; ``"skip"`` drops the batch and counts it.
        workers: threads each training batch is split between, batch norm synchronised
            (:mod:`cifarnet.parallel`); None: one per core, 1: none.
        processes: processes one run is spread over (data-parallel: :mod:`cifarnet.distributed`;
            each takes its share of every batch); 1: this process alone. ``workers`` then counts the
            threads of each process (None: the cores of its machine shared among its processes).
        transport: how the processes exchange: ``"shm"``, shared memory on this machine
            (:mod:`cifarnet.distributed.shm`; nothing to install), or ``"mpi"``, ranks started by
            ``mpiexec`` (the ``[mpi]`` extra; what a user's own ``mpiexec`` over several machines uses).
        sync_batchnorm: with several processes, batch norm normalises over the global batch (its
            per-channel sums cross the processes twice per layer and step: the same arithmetic as
            one process); False: over each process's share (its own statistics, PyTorch DDP's
            default; less traffic, and the running statistics rank 0 saves are its own).
        stop_after_minutes: end cleanly at the last epoch boundary before this much training time
            has passed (the next epoch is predicted to take as long as the last), so that a long
            run goes in pieces that each fit a time limit; None: no limit.
        ema_every: keep an exponential moving average of the weights (and batch-norm statistics),
            updated every this many steps (:mod:`cifarnet.training.average`); 0: none.
        ema_decay, ema_power: the average moves by ``1 - d`` with ``d = ema_decay * (step /
            total_steps) ** ema_power`` (airbench's: 0.95 ** 5 and 3).
        lookahead: set the weights to the average after each of its updates (lookahead); False:
            only after the last step (a plain average of weights).
        static_buffers: run each step in buffers allocated once (the training plan's workspace,
            :mod:`cifarnet.arrays.workspace`): no activation, gradient or temporary is allocated
            after the first two steps and none moves (what CUDA graphs need). Off by default: on
            the CPU it is no faster (0-2% slower) and holds up to 6% more memory
            (docs/performance.md, "The training plan", rounds two and three). The NumPy variants
            and the fused CuPy kernels (``backend.kernels=fused``) take one; CuPy's reference path
            does not. Steps that keep asking for other arrays than the step before (a request that
            depends on the data: a bug) are planned anew each time, and the log says so once.
        handle_signals: turn SIGINT/SIGTERM into a checkpoint and :class:`TrainingInterrupted`
            (not a config key: the library's callers may want their own handlers).
    """

    epochs: float = 20
    label_smoothing: float = 0.0
    loss_reduction: str = "mean"
    dropout_schedule: str = "none"
    dropout_final: float = 0.0
    keep_last: int = 2
    progress: bool = True
    nonfinite: str = "stop"
    workers: int | None = None
    processes: int = 1
    transport: str = "shm"
    sync_batchnorm: bool = True
    stop_after_minutes: float | None = None
    ema_every: int = 0
    ema_decay: float = 0.7737809375
    ema_power: float = 3.0
    lookahead: bool = True
    static_buffers: bool = False
    handle_signals: bool = True

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise InvalidValue(f"trainer.epochs must be > 0, got {self.epochs:g}")
        if self.loss_reduction not in ("mean", "sum"):
            raise InvalidValue(f"trainer.loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
        if self.keep_last < 1:
            raise InvalidValue(f"trainer.keep_last must be >= 1, got {self.keep_last}")
        if self.nonfinite not in ("stop", "skip"):
            raise InvalidValue(f"trainer.nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        if self.ema_every < 0 or not 0.0 <= self.ema_decay <= 1.0 or self.ema_power < 0:
            raise InvalidValue(f"trainer.ema_every must be >= 0, ema_decay in [0, 1], ema_power >= 0; got "
                             f"{self.ema_every}, {self.ema_decay}, {self.ema_power}")
        if self.processes < 1:
            raise InvalidValue(f"trainer.processes must be >= 1, got {self.processes}")
        if self.transport not in ("shm", "mpi"):
            raise InvalidValue(f"trainer.transport must be 'shm' or 'mpi', got {self.transport!r}")
        if self.stop_after_minutes is not None and self.stop_after_minutes <= 0:
            raise InvalidValue(f"trainer.stop_after_minutes must be > 0 (or null), got {self.stop_after_minutes}")


def epochs_to_run(epochs: float) -> int:
    """The epochs a run of ``epochs`` (fractions allowed) starts: 9.9 -> 10."""
    return max(1, math.ceil(round(epochs, 6)))


def out_of_time(limit_minutes: float | None, started: float, epoch_started: float, epoch: int, epochs: int) -> bool:
    """Whether another epoch as long as the last (begun at ``epoch_started``) would take training,
    begun at ``started`` (``time.perf_counter()`` values), past ``limit_minutes``; says so in the log."""
    now = time.perf_counter()
    if limit_minutes is None or (now - started) + (now - epoch_started) <= 60 * limit_minutes:
        return False
    log.info("stopping after epoch %d of %d: trainer.stop_after_minutes=%g would be passed by the next epoch "
             "(%.1f minutes so far, the last epoch %.1f)", epoch, epochs, limit_minutes, (now - started) / 60,
             (now - epoch_started) / 60)
    return True
