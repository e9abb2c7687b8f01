"""An exponential moving average of a model's weights, and lookahead (airbench's, after Zhang et
al. 2019): every ``every`` steps the average moves toward the weights,
``average += (1 - d) * (weights - average)`` with ``d = decay * (step / total_steps) ** power``,
and with lookahead the weights are then set to the average; after the last step the weights are
the average. Every parameter and float buffer (batch norm's running statistics) alike, array by
array. Its arrays go into every checkpoint (``extra/ema/<name>``), so a resumed run continues it
exactly.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import backend_of, to_numpy
from ..errors import InvalidValue

PREFIX = "ema/"


class WeightAverage:
    """Args: ``every`` (steps between updates), ``decay`` and ``power`` (of ``d`` above),
    ``lookahead`` (set the weights to the average after each update; otherwise only at the end),
    ``total_steps`` (the run's)."""

    def __init__(self, every: int, decay: float, power: float, lookahead: bool, total_steps: int):
        if every < 1 or not 0.0 <= decay <= 1.0 or power < 0:
            raise InvalidValue(f"the weight average needs every >= 1, 0 <= decay <= 1, power >= 0; "
                             f"got {every}, {decay}, {power}")
        self.every, self.decay, self.power, self.lookahead = int(every), float(decay), float(power), bool(lookahead)
        self.total_steps = int(total_steps)
        self.average: dict[str, Any] = {}

    def arrays(self, model) -> dict[str, Any]:
        """The arrays averaged: every parameter and float buffer, by dotted name."""
        found = dict(model.named_parameters())
        found.update((n, b) for n, b in model.named_buffers() if b.dtype.kind == "f")
        return found

    def start(self, model) -> None:
        """Begin from the model's current weights."""
        self.average = {name: a.copy() for name, a in self.arrays(model).items()}

    def factor(self, step: int) -> float:
        """``d`` at ``step`` (1-based: the number of steps taken)."""
        return self.decay * (step / self.total_steps) ** self.power

    def after_step(self, model, step: int) -> None:
        """Called after optimizer step ``step`` (1-based): update on every ``every``-th, set the
        weights to the average then (lookahead) and after the last step."""
        if step % self.every == 0:
            self.update(model, self.factor(step))
        if step >= self.total_steps:
            self.update(model, 1.0, replace=True)

    def update(self, model, d: float, replace: bool | None = None) -> None:
        """``average += (1 - d) (weights - average)``; then the weights = the average if
        ``replace`` (default: ``lookahead``)."""
        replace = self.lookahead if replace is None else replace
        for name, weights in self.arrays(model).items():
            average = self.average[name]
            if d != 1.0:
                average += (1.0 - d) * (weights - average)
            if replace:
                weights[...] = average

    def state(self) -> dict[str, np.ndarray]:
        """Host copies for a checkpoint (``ema/<name>``)."""
        return {PREFIX + name: to_numpy(a).copy() for name, a in self.average.items()}

    def load(self, model, extras: dict[str, np.ndarray]) -> None:
        """Continue from a checkpoint's extras (arrays moved to the model's backend and dtype).

        Raises:
            ValueError: the checkpoint has no average, or one of other arrays.
        """
        mine = self.arrays(model)
        saved = {k[len(PREFIX):]: v for k, v in extras.items() if k.startswith(PREFIX)}
        if set(saved) != set(mine):
            raise ValueError("the checkpoint's weight average does not match this run's "
                             f"({len(saved)} arrays saved, {len(mine)} expected); "
                             "was it trained with trainer.ema_every?")
        self.average = {name: backend_of(a).asarray(saved[name], dtype=a.dtype) for name, a in mine.items()}
