"""The non-finite policy: a step whose loss or gradients hold NaN or Inf stops the run, or is
dropped without a trace in the model (``trainer.nonfinite``)."""
from __future__ import annotations

import logging
import math

from ..backend import array_module
from ..errors import CifarnetError
from ..store import FlatStore

log = logging.getLogger(__name__)


class NonFiniteError(CifarnetError, RuntimeError):
    """A NaN or Inf loss or gradient; the message gives epoch, step and the tensor."""


def first_nonfinite(named_arrays) -> str | None:
    """The name of the first array holding NaN or Inf, or None."""
    for name, a in named_arrays:
        if not bool(array_module(a).isfinite(a).all()):
            return name
    return None


class NonFiniteGuard:
    """``policy`` ``"stop"`` raises :class:`NonFiniteError`; ``"skip"`` drops the batch, puts batch
    norm's running statistics back as they were before it (:meth:`before`) and counts it."""

    def __init__(self, policy: str):
        self.policy = policy
        self._saved = None

    def before(self, model) -> None:
        """Called before each step's forward pass: in skip mode, copy the running statistics."""
        self._saved = [b.copy() for _, b in model.named_buffers()] if self.policy == "skip" else None

    def check(self, model, loss: float, gradients_finite: bool, where: str) -> bool:
        """Whether the step may go on; False: skip it. Raises :class:`NonFiniteError` to stop.

        ``loss`` is the step's loss, ``gradients_finite`` whether the flat gradient buffer is
        finite (one reduction); only on failure are the gradients searched for the culprit.
        """
        if math.isfinite(loss) and gradients_finite:
            return True
        bad = "loss" if not math.isfinite(loss) else \
            f"gradient of {first_nonfinite(FlatStore.of(model).grad_views.items())}"
        if self.policy == "stop":
            raise NonFiniteError(f"non-finite {bad} at {where} (loss {loss}); training stopped, earlier "
                                 "checkpoints are untouched. Lower the learning rate or set trainer.nonfinite=skip "
                                 "to drop such batches.")
        for (_, buffer), before in zip(model.named_buffers(), self._saved, strict=True):
            buffer[...] = before                               # running statistics as before the batch
        broken = first_nonfinite(model.named_parameters())
        if broken is not None:
            raise NonFiniteError(f"non-finite {bad} at {where}, and the weights themselves are non-finite "
                                 f"({broken}): an earlier update overflowed, so skipping batches cannot "
                                 "recover; training stopped, earlier checkpoints are untouched. Lower the "
                                 "learning rate.")
        log.warning("skipped batch with non-finite %s at %s", bad, where)
        return False

    @staticmethod
    def check_evaluation(split: str, loss: float, epoch: int, skipped: int) -> None:
        """Raise :class:`NonFiniteError` if evaluating ``split`` after ``epoch`` gave a non-finite loss."""
        if not math.isfinite(loss):
            raise NonFiniteError(f"evaluating on the {split} split after epoch {epoch} gave a non-finite loss "
                                 f"({loss}): the weights overflow ({skipped} batches of the epoch were skipped); no "
                                 "checkpoint was written, earlier ones are untouched. Lower the learning rate.")

    @staticmethod
    def check_epoch(images: float, epoch: int, skipped: int) -> None:
        """Raise :class:`NonFiniteError` if every batch of ``epoch`` was skipped."""
        if images == 0:
            raise NonFiniteError(f"every batch of epoch {epoch} was non-finite ({skipped} skipped); nothing was "
                                 "learned and no checkpoint was written. Lower the learning rate or check the data.")
