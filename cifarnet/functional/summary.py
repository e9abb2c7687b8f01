"""What a training step reports to the host: ``step_summary.forward(loss, logits, labels, grads)
-> ([loss, correct, finite], None)``, a float64 array of three on the arrays' device, read back in
one transfer (:func:`cifarnet.training.step.read_back`): the batch's mean loss, the number of rows
of ``logits`` whose arg-max is the label, and 1.0 if every gradient is finite (else 0.0). Only a
forward: nothing is differentiated through it.

Shapes: loss 0-d; logits ``(N, K)``; labels ``(N,)`` integers; grads any (the flat gradient buffer).
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from .dispatch import Op

step_summary = Op("step_summary")


@step_summary.reference
class StepSummaryReference:
    @staticmethod
    def forward(loss, logits, labels, grads, *, keep: bool = False):
        xp = array_module(logits)
        return xp.stack([xp.asarray(loss, dtype=np.float64),
                         (logits.argmax(axis=1) == labels).sum().astype(np.float64),
                         xp.isfinite(grads).all().astype(np.float64)]), None
