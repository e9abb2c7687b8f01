"""What every optimizer shares: one update over the flat store, weight-decay policy, state dicts."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..backend import array_module, to_numpy
from ..errors import InvalidValue
from ..store import FlatStore, Layout, split
from .groups import ParamGroups


class Optimizer:
    """Base class; subclasses implement :meth:`update` with an update op of
    :mod:`cifarnet.functional.optim`, applied once to the whole flat store per step.

    The state (momentum, moment estimates) is one flat buffer per slot, laid out like the model's
    flat store (:mod:`cifarnet.store`) and created on the parameters' backend by the first update.
    Checkpoints hold it per parameter under the dotted names (:meth:`state_dict`), so a saved state
    survives a round trip, a move between backends and the per-parameter format of earlier
    versions.

    Args:
        lr: learning rate; schedules overwrite ``optimizer.lr`` before each step.
        weight_decay: decay coefficient (L2 added to the gradient, or decoupled for AdamW).
        decay_norm_and_bias: when False, parameters with at most one axis (biases, batch-norm
            gamma and beta) are exempt from weight decay.
        groups: parameter groups (:mod:`cifarnet.optim.groups`): learning-rate scales, weight
            decays and freezing for the parameters they select.

    Attributes the runner sets: ``lr`` before each step (the schedule's value), ``epoch`` (groups
    frozen after some epochs), ``batch_size`` (the global batch, for rates given per example).
    """

    def __init__(self, lr: float, weight_decay: float = 0.0, decay_norm_and_bias: bool = True,
                 groups: Sequence[Mapping[str, Any]] = ()):
        if lr < 0 or weight_decay < 0:
            raise InvalidValue(f"lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
        self.lr = self.base_lr = float(lr)
        self.groups = ParamGroups(groups)
        self.epoch, self.batch_size = 0, None
        self._group_rates: tuple[Any, Any, Any] | None = None     # (key, lr scales, decays) per element
        self.weight_decay = float(weight_decay)
        self.decay_norm_and_bias = decay_norm_and_bias
        self.steps = 0
        self.slots: dict[str, Any] = {}             # slot name -> flat buffer of ``layout``
        self.layout: Layout | None = None
        self._loaded: dict[str, dict[str, np.ndarray]] = {}    # per-parameter state, until the first step
        self._decay: tuple[Any, Any] | None = None              # (key, per-element coefficients)

    def decay_for(self, shape: tuple[int, ...]) -> float:
        """The weight-decay coefficient that applies to a parameter of ``shape``."""
        if not self.decay_norm_and_bias and len(shape) <= 1:
            return 0.0
        return self.weight_decay

    def step(self, model, grads: Mapping[str, Any]) -> None:
        """Update every parameter of ``model`` in place from ``grads`` (dotted name -> gradient, as
        ``model.backward`` returns them, or views of the store's gradient buffer): one update op
        over the whole flat store."""
        store = FlatStore.of(model)
        flat_grads = store.gather(grads)
        self._adopt(store)
        self.steps += 1
        lr, weight_decay = self.rates(model, store)
        self.update(store.params, flat_grads, self.slots, weight_decay, lr)

    def update(self, params, grads, slots: dict[str, Any], weight_decay, lr) -> None:
        """Apply this optimizer's update op to the flat ``params`` with the flat ``grads``; ``slots``
        (created on the first update), ``weight_decay`` and ``lr`` (each a number, or one per
        element) as the op takes them."""
        raise NotImplementedError

    def rates(self, model, store: FlatStore):
        """``(lr, weight_decay)`` of this step, each a number or one per element of the store."""
        if not self.groups:
            return self.lr, self._decay_of(store)
        scales, decays = self.group_rates(model, store)
        return self.lr * scales, decays

    def frozen_names(self, model) -> set[str]:
        """The dotted names of ``model``'s parameters that no update changes at ``self.epoch``."""
        if not self.groups:
            return set()
        return {name for name, group in self.groups.assign(model).items()
                if group is not None and group.frozen_at(self.epoch)}

    def group_rates(self, model, store: FlatStore):
        """Per element: the groups' learning-rate scales and weight decays (0 and 0 where frozen at
        ``self.epoch``), kept until the frozen groups or the store change."""
        key = (self.groups.epoch_key(self.epoch), store.layout, store.backend.name, store.params.dtype.str)
        if self._group_rates is None or self._group_rates[0] != key:
            assigned = self.groups.assign(model)

            def scale(name, shape):
                group = assigned[name]
                return 1.0 if group is None else 0.0 if group.frozen_at(self.epoch) else group.lr_scale

            def decay(name, shape):
                group = assigned[name]
                if group is not None and group.frozen_at(self.epoch):
                    return 0.0
                return self.decay_for(shape) if group is None or group.weight_decay is None else group.weight_decay

            self._group_rates = (key, store.per_parameter(scale), store.per_parameter(decay))
        return self._group_rates[1], self._group_rates[2]

    # -- state ------------------------------------------------------------------------------------
    def _adopt(self, store: FlatStore) -> None:
        """Lay the state out like ``store``: the first time from a loaded per-parameter state, later
        on the store's backend whenever the model moved."""
        if self.layout is None:
            self.layout = store.layout
            self.slots = self._flatten_loaded(store)
        elif self.layout != store.layout:
            raise ValueError("this optimizer's state belongs to a model with other parameters")
        for key, value in self.slots.items():
            if array_module(value) is not store.backend.xp or value.dtype != store.params.dtype:
                self.slots[key] = store.backend.asarray(to_numpy(value), dtype=store.params.dtype)

    def _flatten_loaded(self, store: FlatStore) -> dict[str, Any]:
        loaded, self._loaded = self._loaded, {}
        if not loaded:
            return {}
        names = [name for name, _ in store.layout]
        missing = [name for name in names if name not in loaded]
        if missing:
            raise KeyError(f"the loaded optimizer state has nothing for parameter {missing[0]!r}")
        slots = {}
        for key in loaded[names[0]]:
            flat = store.backend.xp.empty_like(store.params)
            for name in names:
                store.view(flat, name)[...] = store.backend.asarray(loaded[name][key], dtype=store.params.dtype)
            slots[key] = flat
        return slots

    def _decay_of(self, store: FlatStore):
        """The weight decay for the flat store: the coefficient itself when it applies to every
        parameter, else one per element (zero for the exempt biases and batch-norm parameters)."""
        shapes = {len(shape) <= 1 for _, shape in store.layout}
        if self.decay_norm_and_bias or self.weight_decay == 0 or shapes == {False}:
            return self.weight_decay
        key = (self.weight_decay, store.layout, store.backend.name, store.params.dtype.str)
        if self._decay is None or self._decay[0] != key:
            self._decay = (key, store.per_parameter(lambda name, shape: self.decay_for(shape)))
        return self._decay[1]

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "base_lr": self.base_lr, "weight_decay": self.weight_decay,
                "decay_norm_and_bias": self.decay_norm_and_bias}

    def state_dict(self) -> dict[str, Any]:
        """Host copy of everything needed to continue exactly: step count, lr, and the state per
        parameter (``{name: {slot: array}}``, the checkpoint format)."""
        if self.layout is None:
            state = {name: {k: v.copy() for k, v in s.items()} for name, s in self._loaded.items()}
        else:
            state: dict[str, dict[str, np.ndarray]] = {name: {} for name, _ in self.layout}
            for key, flat in self.slots.items():
                for name, view in split(to_numpy(flat), self.layout).items():
                    state[name][key] = view.copy()
            state = {name: s for name, s in state.items() if s}
        return {"steps": self.steps, "hyperparameters": self.hyperparameters(), "state": state}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned: step count, hyper-parameters, per-parameter state.

        The state stays on the host until the first step lays it out like the model's store.
        """
        hyper = dict(state_dict["hyperparameters"])
        unknown = sorted(set(hyper) - set(self.hyperparameters()))
        if unknown:
            raise KeyError(f"{type(self).__name__} has no hyper-parameter {unknown[0]!r}; "
                           "is this state from another optimizer?")
        self.steps = int(state_dict["steps"])
        for key, value in hyper.items():
            setattr(self, key, value)
        self._loaded = {name: {k: to_numpy(v).copy() for k, v in s.items()}
                        for name, s in state_dict["state"].items()}
        self.slots, self.layout, self._decay, self._group_rates = {}, None, None, None
