"""Softmax cross-entropy from logits, optionally with label smoothing.

``forward(logits, labels, label_smoothing=0.0, keep=True) -> (loss, ctx)``: the mean over the
batch of ``-sum(target * log softmax(logits))`` with ``target = (1 - eps) * onehot + eps / K``,
computed through log-sum-exp so that large logits neither overflow nor underflow.
``backward(ctx, dloss=None) -> (dlogits, {})``, the gradient of the mean loss (times ``dloss``).

Shapes: logits ``(N, K)``; labels ``(N,)`` integers in ``[0, K)``; loss: 0-d array.
"""
from __future__ import annotations

from ..backend import array_module
from .dispatch import Op

softmax_cross_entropy = Op("softmax_cross_entropy")


def check_labels(logits, labels) -> tuple[int, int]:
    """``(N, K)`` of the logits, after checking that ``labels`` has one entry per row."""
    n, k = logits.shape
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    return n, k


@softmax_cross_entropy.reference
class SoftmaxCrossEntropyReference:
    @staticmethod
    def forward(logits, labels, *, label_smoothing: float = 0.0, keep: bool = True):
        xp = array_module(logits)
        n, k = check_labels(logits, labels)
        shifted = logits - logits.max(axis=1, keepdims=True)              # N, K
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))         # N, 1
        log_p = shifted - log_z                                            # N, K
        target = xp.full((n, k), label_smoothing / k, dtype=logits.dtype)
        target[xp.arange(n), labels] += 1.0 - label_smoothing
        loss = -(target * log_p).sum() / n
        return loss, ((xp.exp(log_p), target) if keep else None)

    @staticmethod
    def backward(saved, dloss=None):
        probs, target = saved
        dlogits = (probs - target) / probs.shape[0]
        return (dlogits if dloss is None else dlogits * dloss), {}
