"""Optimizer updates as update ops: each changes a parameter and its state in place.

``sgd_update.apply(param, grad, state, lr=, momentum=, nesterov=, weight_decay=)`` and
``adam_update.apply(param, grad, state, lr=, beta1=, beta2=, eps=, weight_decay=, decoupled=,
step=)``; ``state`` is the dict of slots (``velocity``; ``m`` and ``v``), created on the first
update. Shapes: param, grad and every slot share one shape; the optimizers pass the whole flat
store (:mod:`cifarnet.store`), so one call updates every parameter. ``weight_decay`` is a number
or an array of that shape too (per element: zero where a parameter is exempt).
"""
from __future__ import annotations

from ..backend import array_module
from .dispatch import Op

sgd_update = Op("sgd_update")
adam_update = Op("adam_update")


def decays(weight_decay) -> bool:
    """Whether a weight-decay coefficient (a number, or an array of them) decays anything."""
    return not isinstance(weight_decay, (int, float)) or weight_decay != 0


@sgd_update.reference
class SGDReference:
    """PyTorch's SGD without dampening: ``g = grad + wd * p``; ``v = momentum * v + g``;
    ``p -= lr * (g + momentum * v)`` with Nesterov, else ``p -= lr * v`` (``lr * g`` without momentum)."""

    @staticmethod
    def apply(param, grad, state, *, lr: float, momentum: float = 0.0, nesterov: bool = False,
              weight_decay: float = 0.0) -> None:
        g = grad + weight_decay * param if decays(weight_decay) else grad
        if momentum:
            if "velocity" not in state:
                state["velocity"] = g.copy()
            else:
                state["velocity"] *= momentum
                state["velocity"] += g
            g = g + momentum * state["velocity"] if nesterov else state["velocity"]
        param -= lr * g


@adam_update.reference
class AdamReference:
    """Adam with bias correction (Kingma & Ba, 2015), step ``t`` counted from 1: ``g = grad + wd * p``
    (or, decoupled as AdamW, ``p *= 1 - lr * wd`` first); ``m = b1*m + (1-b1)*g``;
    ``v = b2*v + (1-b2)*g^2``; ``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``."""

    @staticmethod
    def apply(param, grad, state, *, lr: float, beta1: float, beta2: float, eps: float, step: int,
              weight_decay: float = 0.0, decoupled: bool = False) -> None:
        xp = array_module(param)
        if decays(weight_decay) and decoupled:
            param *= 1.0 - lr * weight_decay
            g = grad
        else:
            g = grad + weight_decay * param if decays(weight_decay) else grad
        if "m" not in state:
            state["m"], state["v"] = xp.zeros_like(param), xp.zeros_like(param)
        m, v = state["m"], state["v"]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        step_size = lr / (1.0 - beta1 ** step)
        denom = xp.sqrt(v / (1.0 - beta2 ** step))
        denom += eps
        param -= step_size * (m / denom)
