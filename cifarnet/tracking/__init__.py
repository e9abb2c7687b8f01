"""Experiment trackers: where a run's metrics go besides ``metrics.csv``.

The ``logger`` config group selects any number of them (``logger=[csv,tensorboard]``): ``csv``,
the default, is ``metrics.csv`` (always written: plots and sweep summaries read it) and the
per-step learning rates in ``lr.csv``;
``tensorboard`` writes event files into the run directory; ``mlflow`` records one MLflow run per
cifarnet run or sweep job. A tracker is a class registered in :data:`TRACKERS`; its constructor's
arguments are its config keys (``logger.mlflow.tracking_uri``).
"""
from __future__ import annotations

# The trackers register themselves on import; the packages they drive (tensorboardX, mlflow)
# load only when a run starts one.
from . import mlflow, tensorboard  # noqa: F401
from .base import TRACKERS, CSVTracker, Tracker, TrackerError, make_trackers, numbers

__all__ = ["TRACKERS", "CSVTracker", "Tracker", "TrackerError", "make_trackers", "numbers"]
