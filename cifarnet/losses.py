"""Softmax cross-entropy from logits: the loss configuration around
:data:`cifarnet.functional.softmax_cross_entropy`."""
from __future__ import annotations

from .errors import InvalidValue
from .functional import softmax_cross_entropy


class SoftmaxCrossEntropy:
    """Mean cross-entropy between ``softmax(logits)`` and integer labels, optionally smoothed.

    With label smoothing ``eps`` the target distribution is ``(1 - eps) * onehot + eps / K``.
    ``forward(logits, labels) -> (loss, ctx)`` and ``backward(ctx) -> dlogits``, the gradient of the
    mean loss, or with ``reduction="sum"`` of the loss summed over the batch (airbench's: the
    learning rate then counts per example; the loss value returned stays the mean, for the logs);
    nothing about a call is kept here.

    Shapes: logits ``(N, K)``; labels ``(N,)`` integers in ``[0, K)``; loss: 0-d array.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean"):
        if not 0.0 <= label_smoothing < 1.0:
            raise InvalidValue(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if reduction not in ("mean", "sum"):
            raise InvalidValue(f"the loss reduction must be 'mean' or 'sum', got {reduction!r}")
        self.label_smoothing, self.reduction = label_smoothing, reduction

    def forward(self, logits, labels, keep: bool = True):
        return softmax_cross_entropy.forward(logits, labels, label_smoothing=self.label_smoothing, keep=keep)

    def backward(self, ctx, scale: float | None = None):
        """The gradient of the mean loss, times ``scale`` if given (a process's share of a global
        batch: its size over the global batch's); with ``reduction="sum"``, of the summed loss (the
        share's own rows: ``scale`` does not apply)."""
        if self.reduction == "mean":
            return softmax_cross_entropy.backward(ctx, scale)[0]
        dlogits = softmax_cross_entropy.backward(ctx, None)[0]
        dlogits *= dlogits.shape[0]
        return dlogits

    def __call__(self, logits, labels):
        """The loss alone."""
        return self.forward(logits, labels, keep=False)[0]
