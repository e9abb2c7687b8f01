"""Stochastic gradient descent with (Nesterov) momentum and L2 weight decay, in PyTorch's form or
in airbench's decoupled one."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidValue
from ..functional import sgd_update
from .base import Optimizer

KILO = 1024          # the decoupled form's rates are per this many examples


class SGD(Optimizer):
    """PyTorch's SGD without dampening.

    ``g = grad + wd * p``;  ``v = momentum * v + g``;  ``p -= lr * (g + momentum * v)`` with
    Nesterov, else ``p -= lr * v`` (plain ``p -= lr * g`` when momentum is 0).

    With ``decoupled=True``, the hyper-parameters are airbench's (Jordan 2024), meant for a loss
    summed over the batch (``trainer.loss_reduction=sum``): ``lr`` is per 1024 examples and is
    divided by ``d = 1024 * (1 + 1 / (1 - momentum))``, the growth of a constant gradient's step
    under Nesterov momentum, so that changing the momentum leaves the step size alone; a group's
    ``lr_scale`` multiplies it. ``weight_decay`` is per 1024 examples too: each step decays every
    parameter by ``weight_decay * batch / d`` times the schedule's factor (``lr / base_lr``),
    whatever its group's learning rate, which is PyTorch's coupled coefficient
    ``weight_decay * batch / (base_lr * lr_scale)`` (the runner sets ``batch_size``).
    """

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, decay_norm_and_bias: bool = True, decoupled: bool = False,
                 groups: Sequence[Mapping[str, Any]] = ()):
        super().__init__(lr, weight_decay, decay_norm_and_bias, groups)
        if not 0.0 <= momentum < 1.0:
            raise InvalidValue(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise InvalidValue("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.decoupled = float(momentum), bool(nesterov), bool(decoupled)
        self._coupled: tuple[Any, Any] | None = None           # (key, coupled decay per element)

    @property
    def divisor(self) -> float:
        """``1024 * (1 + 1 / (1 - momentum))``: the decoupled form's learning-rate divisor."""
        return KILO * (1 + 1 / (1 - self.momentum))

    def rates(self, model, store):
        if not self.decoupled:
            return super().rates(model, store)
        if self.batch_size is None:
            raise ValueError("SGD's decoupled form needs the batch size (the runner sets optimizer.batch_size)")
        if self.groups:
            scales, decays = self.group_rates(model, store)
        else:
            scales, decays = 1.0, self._decay_of(store)
        key = (self.groups.epoch_key(self.epoch), store.layout, store.backend.name, store.params.dtype.str,
               self.base_lr, self.batch_size, self.weight_decay)
        if self._coupled is None or self._coupled[0] != key:
            xp = store.backend.xp
            if isinstance(scales, float):
                coupled = decays * self.batch_size / (self.base_lr * scales) if self.base_lr else 0.0
            else:                                               # 0 where a group is frozen (scale 0)
                safe = xp.where(scales > 0, scales, 1.0)
                coupled = xp.where(scales > 0, decays * self.batch_size / (self.base_lr * safe), 0.0)
                coupled = coupled.astype(store.params.dtype)
            self._coupled = (key, coupled)
        return (self.lr / self.divisor) * scales, self._coupled[1]

    def update(self, params, grads, slots, weight_decay, lr) -> None:
        sgd_update.apply(params, grads, slots, lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                         weight_decay=weight_decay)

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov,
                "decoupled": self.decoupled}
