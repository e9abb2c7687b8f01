"""What every optimizer shares: named per-parameter state, weight-decay policy, state dicts."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..backend import array_module, backend_of, to_numpy


class Optimizer:
    """Base class; subclasses implement :meth:`update_one` with an update op of
    :mod:`cifarnet.functional.optim`.

    Per-parameter state (momentum, moment estimates) is created lazily on the parameter's own
    backend the first time the parameter is updated, and is keyed by the parameter's dotted name,
    so it survives a checkpoint round trip and a move between backends.

    Args:
        lr: learning rate; schedules overwrite ``optimizer.lr`` before each step.
        weight_decay: decay coefficient (L2 added to the gradient, or decoupled for AdamW).
        decay_norm_and_bias: when False, parameters with at most one axis (biases, batch-norm
            gamma and beta) are exempt from weight decay.
    """

    def __init__(self, lr: float, weight_decay: float = 0.0, decay_norm_and_bias: bool = True):
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.decay_norm_and_bias = decay_norm_and_bias
        self.steps = 0
        self.state: dict[str, dict[str, Any]] = {}

    def decay_for(self, param) -> float:
        """The weight-decay coefficient that applies to ``param``."""
        if not self.decay_norm_and_bias and param.ndim <= 1:
            return 0.0
        return self.weight_decay

    def step(self, model, grads: Mapping[str, Any]) -> None:
        """Update every parameter of ``model`` in place from ``grads`` (dotted name -> gradient, as
        ``model.backward`` returns them)."""
        self.update(model.named_parameters(), grads)

    def update(self, params: Iterable[tuple[str, Any]], grads: Mapping[str, Any]) -> None:
        """Update ``params`` (``(name, array)`` pairs) in place with ``grads[name]``."""
        self.steps += 1
        for name, param in params:
            if name not in grads:
                raise KeyError(f"no gradient for parameter {name!r}; call backward before step")
            self.update_one(param, grads[name], self._state_for(name, param))

    def _state_for(self, name: str, param) -> dict[str, Any]:
        state = self.state.setdefault(name, {})
        xp = array_module(param)
        for key, value in state.items():
            if array_module(value) is not xp:           # loaded from a checkpoint or another backend
                state[key] = backend_of(param).asarray(to_numpy(value), dtype=param.dtype)
        return state

    def update_one(self, param, grad, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "weight_decay": self.weight_decay,
                "decay_norm_and_bias": self.decay_norm_and_bias}

    def state_dict(self) -> dict[str, Any]:
        """Host copy of everything needed to continue exactly: step count, lr, per-parameter state."""
        return {
            "steps": self.steps,
            "hyperparameters": self.hyperparameters(),
            "state": {name: {k: to_numpy(v).copy() for k, v in s.items()} for name, s in self.state.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned: step count, hyper-parameters, per-parameter state.

        Arrays stay on the host until a parameter's first update moves them to its backend.
        """
        hyper = dict(state_dict["hyperparameters"])
        unknown = sorted(set(hyper) - set(self.hyperparameters()))
        if unknown:
            raise KeyError(f"{type(self).__name__} has no hyper-parameter {unknown[0]!r}; "
                           "is this state from another optimizer?")
        self.steps = int(state_dict["steps"])
        for key, value in hyper.items():
            setattr(self, key, value)
        self.state = {name: {k: to_numpy(v).copy() for k, v in s.items()}
                      for name, s in state_dict["state"].items()}
