"""Stochastic gradient descent with (Nesterov) momentum and L2 weight decay."""
from __future__ import annotations

from ..functional import sgd_update
from .base import Optimizer


class SGD(Optimizer):
    """PyTorch's SGD without dampening.

    ``g = grad + wd * p``;  ``v = momentum * v + g``;  ``p -= lr * (g + momentum * v)`` with
    Nesterov, else ``p -= lr * v`` (plain ``p -= lr * g`` when momentum is 0).
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, decay_norm_and_bias: bool = True):
        super().__init__(lr, weight_decay, decay_norm_and_bias)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def update(self, params, grads, slots, weight_decay) -> None:
        sgd_update.apply(params, grads, slots, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                         weight_decay=weight_decay)

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov}
