"""A run's checkpoint files: the last epochs, the best one, interrupt checkpoints, and rotation."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .. import checkpoint as ckpt
from .guard import NonFiniteError, first_nonfinite
from .hooks import Hook

log = logging.getLogger(__name__)


class CheckpointKeeper:
    """Writes and prunes the checkpoints in ``folder`` (``<run>/checkpoints``), each atomically.

    Keeps the last ``keep_last`` epoch checkpoints of ``backend`` and one best checkpoint (whichever
    backend wrote it); an interrupt checkpoint goes once the run has passed it. ``hooks`` hear of
    every write before and after it (:meth:`Hook.on_checkpoint`). With ``writes`` False (a process of
    a data-parallel run other than rank 0) it names the files rank 0 writes and touches none.
    """

    def __init__(self, folder: str | Path, backend: str, keep_last: int, hooks: Sequence[Hook] = (),
                 writes: bool = True):
        self.folder, self.backend, self.keep_last, self.hooks = Path(folder), backend, keep_last, list(hooks)
        self.writes = writes

    def clean(self) -> None:
        """Remove temporary files an interrupted write left behind."""
        if self.writes and self.folder.is_dir():
            for tmp in ckpt.remove_stale_temporaries(self.folder):
                log.warning("removed %s, left by an interrupted checkpoint write", tmp)

    def write(self, path: Path, arrays: dict[str, np.ndarray], kind: str) -> Path:
        if not self.writes:
            return path
        for hook in self.hooks:
            hook.on_checkpoint(path, kind, written=False)
        ckpt.write_atomic(path, arrays)
        for hook in self.hooks:
            hook.on_checkpoint(path, kind, written=True)
        return path

    def end_of_epoch(self, epoch: int, arrays: dict[str, np.ndarray], improved: bool) -> None:
        """The checkpoint of ``epoch`` (and, if it ``improved``, the best one), then the rotation."""
        self.write(self.folder / ckpt.epoch_name(epoch, self.backend), arrays, "epoch")
        if not self.writes:
            return
        if improved:
            best = self.write(self.folder / ckpt.best_name(self.backend), arrays, "best")
            for other in self.folder.glob("best_*.npz"):         # one best file, whichever backend wrote it
                if other != best and ckpt.is_best(other):
                    other.unlink(missing_ok=True)
        self.prune((epoch, 0))

    def interrupt(self, epoch: int, batch: int, arrays: dict[str, np.ndarray]) -> Path:
        """The checkpoint after ``batch`` batches of epoch ``epoch`` (1-based)."""
        return self.write(self.folder / ckpt.interrupt_name(epoch, batch, self.backend), arrays, "interrupt")

    def prune(self, now: tuple[int, int]) -> None:
        """Keep the last ``keep_last`` epoch checkpoints; drop interrupt checkpoints before ``now``."""
        epochs = sorted(p for p in self.folder.glob(f"epoch*_{self.backend}.npz") if ckpt.position(p))
        for old in epochs[:-self.keep_last]:
            old.unlink(missing_ok=True)
        for interrupted in self.folder.glob("interrupt_*.npz"):
            if (ckpt.position(interrupted) or now) < now:
                interrupted.unlink(missing_ok=True)

    def newest(self) -> Path | None:
        found = [p for p in self.folder.glob("*.npz") if ckpt.position(p)] if self.folder.is_dir() else []
        return max(found, key=ckpt.position) if found else None

    def best(self) -> Path | None:
        found = [p for p in self.folder.glob("best_*.npz") if ckpt.is_best(p)] if self.folder.is_dir() else []
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def pack_run(model, optimizer, meta: dict[str, Any], state, extras: dict[str, np.ndarray] | None = None
             ) -> dict[str, np.ndarray]:
    """A training run's checkpoint entries: weights, optimizer state, ``meta`` with the
    :class:`TrainState` and the generators' states, ``extras`` (the weight average). Raises
    :class:`NonFiniteError` rather than pack NaN or Inf."""
    broken = first_nonfinite([*model.named_parameters(), *model.named_buffers()])
    if broken is not None:
        raise NonFiniteError(f"the model holds non-finite values at epoch {state.epoch + 1}, step {state.step} "
                             f"({broken}); no checkpoint was written, earlier ones are untouched")
    return ckpt.pack(model.state_dict(), optimizer.state_dict(),
                     dict(meta, state=asdict(state), rng=model.generator_states()), extras)
