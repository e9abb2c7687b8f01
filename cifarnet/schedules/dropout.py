"""Dropout-rate schedules, as the seed project had: none, linear decay, cosine decay."""
from __future__ import annotations

import math

from ..errors import InvalidValue
from ..layers import Dropout
from ..registry import Registry

DROPOUT_SCHEDULES = Registry("dropout schedule")


class DropoutSchedule:
    """``t -> rate`` for ``t`` in ``[0, total]`` (steps or epochs, as the caller chooses).

    ``none`` keeps ``initial``; ``linear`` and ``cosine`` go from ``initial`` at ``t = 0`` to
    ``final`` at ``t = total`` and stay there.
    """

    def __init__(self, initial: float, total: int, final: float = 0.0):
        if not (0.0 <= initial < 1.0 and 0.0 <= final < 1.0) or total < 1:
            raise InvalidValue(f"dropout rates must be in [0, 1) and total >= 1; got {initial}, {final}, {total}")
        self.initial, self.final, self.total = float(initial), float(final), int(total)

    def fraction(self, t: float) -> float:
        return min(max(t / self.total, 0.0), 1.0)

    def __call__(self, t: float) -> float:
        raise NotImplementedError


@DROPOUT_SCHEDULES.register("none")
class ConstantDropout(DropoutSchedule):
    def __call__(self, t: float) -> float:
        return self.initial


@DROPOUT_SCHEDULES.register("linear")
class LinearDropout(DropoutSchedule):
    def __call__(self, t: float) -> float:
        return self.initial + (self.final - self.initial) * self.fraction(t)


@DROPOUT_SCHEDULES.register("cosine")
class CosineDropout(DropoutSchedule):
    def __call__(self, t: float) -> float:
        return self.final + (self.initial - self.final) * 0.5 * (1.0 + math.cos(math.pi * self.fraction(t)))


def make_dropout_schedule(name: str, initial: float, total: int, **options) -> DropoutSchedule:
    """Build the dropout schedule registered as ``name`` (none, linear, cosine)."""
    return DROPOUT_SCHEDULES.get(name)(initial, total, **options)


def set_dropout_rate(model, rate: float) -> int:
    """Set the rate of every :class:`Dropout` layer inside ``model``; returns how many were set."""
    count = 0
    for _, layer in model.walk():
        if isinstance(layer, Dropout):
            layer.rate = rate
            count += 1
    return count
