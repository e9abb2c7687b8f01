"""Learning-rate schedules, evaluated per optimizer step, each with optional linear warm-up.

A schedule is a callable ``step -> lr`` for ``step = 0, 1, ..., total_steps - 1``. With
``warmup_steps = w > 0`` the first ``w`` steps ramp linearly, ``lr = base_lr * (step + 1) / w``,
and the schedule proper then runs over the remaining ``total_steps - w`` steps.

The classes count in steps. :data:`LR_SCHEDULES` names the config-facing factories, which count
in epochs (fractions allowed, the run's length too: :func:`total_steps`) and convert:
``factory(base_lr, epochs, steps_per_epoch, **options)``. The ``schedule`` config group passes
its options straight to them, and its schema is read off their signatures
(:mod:`cifarnet.cli.schema`), so a new schedule is a class and a factory here plus a YAML file.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import InvalidValue
from ..registry import Registry

LR_SCHEDULES = Registry("learning-rate schedule")


class LRSchedule:
    """Base class: warm-up handling; subclasses give :meth:`after_warmup`."""

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0):
        if base_lr < 0 or total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise InvalidValue(f"need base_lr >= 0, total_steps >= 1 and 0 <= warmup_steps <= total_steps; "
                             f"got {base_lr}, {total_steps}, {warmup_steps}")
        self.base_lr, self.total_steps, self.warmup_steps = float(base_lr), int(total_steps), int(warmup_steps)

    def progress(self, step: int) -> float:
        """Fraction of the post-warm-up phase done at ``step``, in [0, 1]."""
        span = max(self.total_steps - self.warmup_steps, 1)
        return min(max((step - self.warmup_steps) / span, 0.0), 1.0)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        raise NotImplementedError


class ConstantLR(LRSchedule):
    """``base_lr`` throughout."""

    def after_warmup(self, step: int) -> float:
        return self.base_lr


class StepLR(LRSchedule):
    """Multiply by ``gamma`` at each milestone: ``base_lr * gamma ** (milestones <= step)``.

    Milestones are absolute step numbers (the runner converts epochs to steps).
    """

    def __init__(self, base_lr: float, total_steps: int, milestones: Sequence[int] = (), gamma: float = 0.1,
                 warmup_steps: int = 0):
        super().__init__(base_lr, total_steps, warmup_steps)
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)

    def after_warmup(self, step: int) -> float:
        return self.base_lr * self.gamma ** sum(step >= m for m in self.milestones)


class CosineLR(LRSchedule):
    """Half a cosine from ``base_lr`` down to ``min_lr`` over the post-warm-up steps."""

    def __init__(self, base_lr: float, total_steps: int, min_lr: float = 0.0, warmup_steps: int = 0):
        super().__init__(base_lr, total_steps, warmup_steps)
        self.min_lr = float(min_lr)

    def after_warmup(self, step: int) -> float:
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))


class LinearLR(LRSchedule):
    """Straight line from ``base_lr`` to ``end_lr`` over the post-warm-up steps."""

    def __init__(self, base_lr: float, total_steps: int, end_lr: float = 0.0, warmup_steps: int = 0):
        super().__init__(base_lr, total_steps, warmup_steps)
        self.end_lr = float(end_lr)

    def after_warmup(self, step: int) -> float:
        return self.base_lr + (self.end_lr - self.base_lr) * self.progress(step)


class PiecewiseLinearLR(LRSchedule):
    """``base_lr`` times a factor that runs straight between knots ``(step, factor)``: before the
    first knot the first factor, after the last the last (airbench's 0.2 -> 1.0 -> 0.07)."""

    def __init__(self, base_lr: float, total_steps: int, knots: Sequence[tuple[float, float]], warmup_steps: int = 0):
        super().__init__(base_lr, total_steps, warmup_steps)
        self.knots = [(float(s), float(f)) for s, f in knots]
        steps = [s for s, _ in self.knots]
        if not self.knots or steps != sorted(steps):
            raise InvalidValue(f"knots must be a non-empty list of (step, factor) in increasing step order, "
                               f"got {knots}")

    def after_warmup(self, step: int) -> float:
        (s0, f0), rest = self.knots[0], self.knots[1:]
        if step <= s0:
            return self.base_lr * f0
        for s1, f1 in rest:
            if step <= s1:
                return self.base_lr * (f0 + (f1 - f0) * (step - s0) / (s1 - s0) if s1 > s0 else f1)
            s0, f0 = s1, f1
        return self.base_lr * f0


def total_steps(epochs: float, steps_per_epoch: int) -> int:
    """The steps of a run of ``epochs`` epochs, a fraction of an epoch rounded up (9.9 x 48 -> 476)."""
    return max(1, math.ceil(round(epochs * steps_per_epoch, 6)))


def _steps(epochs: float, steps_per_epoch: int) -> int:
    return round(epochs * steps_per_epoch)


@LR_SCHEDULES.register("constant")
def constant(base_lr: float, epochs: float, steps_per_epoch: int, warmup_epochs: float = 0.0) -> ConstantLR:
    """``base_lr`` throughout, after ``warmup_epochs`` of linear warm-up."""
    return ConstantLR(base_lr, total_steps(epochs, steps_per_epoch), _steps(warmup_epochs, steps_per_epoch))


@LR_SCHEDULES.register("step")
def step(base_lr: float, epochs: float, steps_per_epoch: int, milestones: Sequence[float] = (10, 15),
         gamma: float = 0.1, warmup_epochs: float = 0.0) -> StepLR:
    """``lr *= gamma`` at each milestone (in epochs)."""
    return StepLR(base_lr, total_steps(epochs, steps_per_epoch), [_steps(m, steps_per_epoch) for m in milestones],
                  gamma, _steps(warmup_epochs, steps_per_epoch))


@LR_SCHEDULES.register("cosine")
def cosine(base_lr: float, epochs: float, steps_per_epoch: int, min_lr: float = 0.0,
           warmup_epochs: float = 0.0) -> CosineLR:
    """Half a cosine from ``base_lr`` to ``min_lr`` after the warm-up."""
    return CosineLR(base_lr, total_steps(epochs, steps_per_epoch), min_lr, _steps(warmup_epochs, steps_per_epoch))


@LR_SCHEDULES.register("linear")
def linear(base_lr: float, epochs: float, steps_per_epoch: int, end_lr: float = 0.0,
           warmup_epochs: float = 0.0) -> LinearLR:
    """A straight line from ``base_lr`` to ``end_lr`` after the warm-up."""
    return LinearLR(base_lr, total_steps(epochs, steps_per_epoch), end_lr, _steps(warmup_epochs, steps_per_epoch))


@LR_SCHEDULES.register("piecewise")
def piecewise(base_lr: float, epochs: float, steps_per_epoch: int,
              knots: Sequence[Sequence[float]] = ((0.0, 1.0), (1.0, 1.0)),
              warmup_epochs: float = 0.0) -> PiecewiseLinearLR:
    """``base_lr`` times a piecewise-linear factor; ``knots`` are ``[fraction of the run, factor]``
    pairs, a fraction ``f`` placed at step ``int(f * total_steps)`` (airbench's warm-up length),
    the last at ``total_steps``: ``[[0, 0.2], [0.23, 1.0], [1.0, 0.07]]`` is airbench's. A
    ``warmup_epochs`` ramp, if any, comes first and the factor applies after it."""
    total = total_steps(epochs, steps_per_epoch)
    points = [(total if float(f) >= 1.0 else int(float(f) * total), float(v)) for f, v in knots]
    return PiecewiseLinearLR(base_lr, total, points, _steps(warmup_epochs, steps_per_epoch))


def make_lr_schedule(name: str, base_lr: float, epochs: float, steps_per_epoch: int, **options) -> LRSchedule:
    """The schedule registered as ``name`` (constant, step, cosine, linear, piecewise) for a run of ``epochs``
    epochs of ``steps_per_epoch`` steps; ``options`` in epochs, as the config gives them."""
    return LR_SCHEDULES.get(name)(base_lr, epochs, steps_per_epoch, **options)
