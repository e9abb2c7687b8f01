"""Adam (L2 weight decay in the gradient) and AdamW (decoupled weight decay)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidValue
from ..functional import adam_update
from .base import Optimizer


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015).

    ``g = grad + wd * p``;  ``m = b1*m + (1-b1)*g``;  ``v = b2*v + (1-b2)*g^2``;
    ``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``, with ``t`` the step count.
    """

    decoupled = False

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0, decay_norm_and_bias: bool = True,
                 groups: Sequence[Mapping[str, Any]] = ()):
        super().__init__(lr, weight_decay, decay_norm_and_bias, groups)
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0 and eps > 0):
            raise InvalidValue(f"Adam needs 0 <= beta1, beta2 < 1 and eps > 0; got {beta1}, {beta2}, {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def update(self, params, grads, slots, weight_decay, lr) -> None:
        adam_update.apply(params, grads, slots, lr=lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                          step=self.steps, weight_decay=weight_decay, decoupled=self.decoupled)

    def hyperparameters(self):
        return {**super().hyperparameters(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``p *= 1 - lr * wd`` first."""

    decoupled = True

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01, decay_norm_and_bias: bool = True,
                 groups: Sequence[Mapping[str, Any]] = ()):
        super().__init__(lr, beta1, beta2, eps, weight_decay, decay_norm_and_bias, groups)
