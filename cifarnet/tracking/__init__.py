"""Experiment trackers: where a run's metrics go besides ``metrics.csv``.

The ``logger`` config group selects any number of them (``logger=[csv,tensorboard]``): ``csv``,
the default, is ``metrics.csv`` alone (always written: plots and sweep summaries read it);
``tensorboard`` writes event files into the run directory; ``mlflow`` records one MLflow run per
cifarnet run or sweep job. A tracker is a class registered in :data:`TRACKERS`; its constructor's
arguments are its config keys (``logger.mlflow.tracking_uri``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import Registry

TRACKERS = Registry("logger")


class TrackerError(RuntimeError):
    """A tracker that cannot work here (its package is not installed, its server does not answer);
    the message says which and what to do."""


class Tracker:
    """What the trainer tells a tracker; every method may be left as it is (nothing happens)."""

    def check(self) -> None:
        """Before any work: raise :class:`TrackerError` if the tracker cannot work here."""

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        """The run begins (or resumes) in ``run_dir`` with ``config`` (the composed config)."""

    def log_step(self, step: int, lr: float) -> None:
        """Optimizer step ``step`` (0-based) ran with learning rate ``lr``."""

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        """Epoch ``epoch`` (1-based) ended after ``step`` steps with ``metrics`` (the metrics.csv row)."""

    def finish(self, artifacts: list[Path], failed: bool = False) -> None:
        """The run ended; ``artifacts`` are files worth keeping (best checkpoint, figures)."""


@TRACKERS.register("csv")
class CSVTracker(Tracker):
    """``metrics.csv`` in the run directory, one row per epoch (the trainer always writes it)."""


def make_trackers(logger_cfg: dict[str, dict[str, Any]] | None) -> list[Tracker]:
    """The trackers the ``logger`` group selects, ``{name: options}`` -> instances, each checked
    (:meth:`Tracker.check`). ``logger=[]`` (an empty list) and None select none."""
    trackers = [TRACKERS.get(name)(**(options or {})) for name, options in dict(logger_cfg or {}).items()]
    for tracker in trackers:
        tracker.check()
    return trackers


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row (empty cells and text left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# The trackers register themselves; the packages they drive (tensorboardX, mlflow) load only
# when a run starts one.
from . import mlflow, tensorboard  # noqa: E402, F401
