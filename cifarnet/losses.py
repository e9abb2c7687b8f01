"""Softmax cross-entropy from logits: the loss configuration around
:data:`cifarnet.functional.softmax_cross_entropy`."""
from __future__ import annotations

from .functional import softmax_cross_entropy


class SoftmaxCrossEntropy:
    """Mean cross-entropy between ``softmax(logits)`` and integer labels, optionally smoothed.

    With label smoothing ``eps`` the target distribution is ``(1 - eps) * onehot + eps / K``.
    ``forward(logits, labels) -> (loss, ctx)`` and ``backward(ctx) -> dlogits``, the gradient of the
    mean loss; nothing about a call is kept here.

    Shapes: logits ``(N, K)``; labels ``(N,)`` integers in ``[0, K)``; loss: 0-d array.
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits, labels, keep: bool = True):
        return softmax_cross_entropy.forward(logits, labels, label_smoothing=self.label_smoothing, keep=keep)

    def backward(self, ctx, scale: float | None = None):
        """The gradient of the mean loss, times ``scale`` if given (a process's share of a global
        batch: its size over the global batch's)."""
        return softmax_cross_entropy.backward(ctx, scale)[0]

    def __call__(self, logits, labels):
        """The loss alone."""
        return self.forward(logits, labels, keep=False)[0]
