"""Softmax cross-entropy from logits."""
from __future__ import annotations

from .backend import array_module


class SoftmaxCrossEntropy:
    """Mean cross-entropy between ``softmax(logits)`` and integer labels, optionally smoothed.

    With label smoothing ``eps`` the target distribution is ``(1 - eps) * onehot + eps / K``.
    Computed through log-sum-exp, so large logits neither overflow nor underflow.

    Shapes: logits ``(N, K)``; labels ``(N,)`` integers in ``[0, K)``; loss: 0-d array.
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits, labels):
        xp = array_module(logits)
        n, k = logits.shape
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        shifted = logits - logits.max(axis=1, keepdims=True)              # N, K
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))         # N, 1
        log_p = shifted - log_z                                            # N, K
        target = xp.full((n, k), self.label_smoothing / k, dtype=logits.dtype)
        target[xp.arange(n), labels] += 1.0 - self.label_smoothing
        self._cache = (xp.exp(log_p), target)
        return -(target * log_p).sum() / n

    __call__ = forward

    def backward(self):
        """Gradient of the mean loss with respect to the logits, ``(N, K)``."""
        probs, target = self._cache
        self._cache = None
        return (probs - target) / probs.shape[0]
