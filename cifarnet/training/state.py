"""Where training stands: saved in every checkpoint's metadata."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint's metadata. ``epoch`` counts completed
    epochs; ``batch`` the batches of epoch ``epoch`` already done (non-zero only in a mid-epoch
    checkpoint); ``step`` optimizer steps; ``partial`` the running sums of an unfinished epoch."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    best_metric: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    partial: dict[str, float] = field(default_factory=dict)

    def close_epoch(self, row: dict[str, Any], metric: float | str) -> bool:
        """Epoch ``epoch + 1`` ended with ``row`` (its metrics) and selection ``metric`` ("" if none);
        returns whether it is the best so far."""
        self.epoch, self.batch, self.skipped, self.partial = self.epoch + 1, 0, 0, {}
        self.history.append(row)
        improved = metric != "" and metric > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = float(metric), self.epoch
        return improved

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
