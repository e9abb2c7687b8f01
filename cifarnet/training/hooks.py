"""What the trainer tells the outside while it runs: the hook interface.

Trackers (:mod:`cifarnet.tracking`) are hooks; so are the probes tests attach to a run instead of
patching the trainer. Every method may be left as it is (nothing happens).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


class Hook:
    """Called by :class:`cifarnet.training.trainer.Trainer`, in this order within a step and an epoch."""

    def log_step(self, step: int, lr: float) -> None:
        """Optimizer step ``step`` (0-based) is about to run with learning rate ``lr``."""

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        """Epoch ``epoch`` (1-based) ended after ``step`` steps with ``metrics`` (the metrics.csv row)."""

    def on_checkpoint(self, path: Path, kind: str, written: bool) -> None:
        """The checkpoint ``path`` of ``kind`` (``epoch``, ``best`` or ``interrupt``) is about to be
        written (``written`` False) or has been (True)."""
