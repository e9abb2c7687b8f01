"""Parameter groups: per-parameter learning-rate scales, weight decays and freezing, from config.

``optimizer.groups`` is a list of groups, each selecting parameters by a glob over their dotted
names (``match: "*norm*.beta"``) and/or by the kind of the layer that owns them (``kind:
batchnorm``, :mod:`cifarnet.layers.kinds`), and saying for them:

* ``lr_scale``: the learning rate is multiplied by this (airbench's batch-norm shifts: 64);
* ``weight_decay``: this coefficient instead of the optimizer's (in the optimizer's own units);
* ``frozen``: never updated; ``frozen_after_epochs``: updated in the first N epochs only
  (airbench's whitening bias: 3).

The first group that selects a parameter is its group; parameters no group selects keep the
optimizer's settings. Everything becomes two per-element buffers of the flat store's layout (a
learning-rate scale and a weight-decay coefficient, zero where frozen), so one update op still
updates every parameter at once.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidValue


@dataclass(frozen=True)
class ParamGroup:
    """One group; see the module docstring."""

    match: str | None = None
    kind: str | None = None
    lr_scale: float = 1.0
    weight_decay: float | None = None
    frozen: bool = False
    frozen_after_epochs: float | None = None

    def __post_init__(self):
        if self.match is None and self.kind is None:
            raise InvalidValue("a parameter group needs 'match' (a glob over parameter names) or 'kind' (a layer kind)")
        if self.lr_scale < 0 or (self.weight_decay is not None and self.weight_decay < 0):
            raise InvalidValue(f"a parameter group's lr_scale and weight_decay must be >= 0, got {self}")
        if self.frozen_after_epochs is not None and self.frozen_after_epochs < 0:
            raise InvalidValue(f"frozen_after_epochs must be >= 0, got {self.frozen_after_epochs}")

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> ParamGroup:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidValue(f"optimizer.groups: unknown key {unknown[0]!r}; a group takes "
                               f"{', '.join(sorted(known))}")
        return cls(**dict(options))

    def selects(self, name: str, kind: str | None) -> bool:
        return ((self.match is None or fnmatch.fnmatchcase(name, self.match))
                and (self.kind is None or self.kind == kind))

    def frozen_at(self, epoch: int) -> bool:
        return self.frozen or (self.frozen_after_epochs is not None and epoch >= self.frozen_after_epochs)


def parameter_kinds(model) -> dict[str, str | None]:
    """Dotted parameter name -> the kind of the layer that owns it."""
    return {f"{prefix}.{key}" if prefix else key: getattr(layer, "kind", None)
            for prefix, layer in model.walk() for key in layer.params}


class ParamGroups:
    """The groups of an optimizer, resolved against a model's parameters.

    Args:
        groups: :class:`ParamGroup` s or their config mappings, first match wins.
    """

    def __init__(self, groups: Sequence[ParamGroup | Mapping[str, Any]] = ()):
        self.groups = [g if isinstance(g, ParamGroup) else ParamGroup.from_config(g) for g in groups]

    def __bool__(self) -> bool:
        return bool(self.groups)

    def assign(self, model) -> dict[str, ParamGroup | None]:
        """Each parameter's group (None: no group selects it).

        Raises:
            ValueError: a group selects no parameter (a misspelt pattern would otherwise do nothing).
        """
        kinds = parameter_kinds(model)
        found = {name: next((g for g in self.groups if g.selects(name, kind)), None) for name, kind in kinds.items()}
        for group in self.groups:
            if not any(g is group for g in found.values()):
                what = " and ".join(f"{k} {v!r}" for k, v in (("match", group.match), ("kind", group.kind)) if v)
                raise InvalidValue(f"optimizer.groups: the group with {what} selects no parameter of this model")
        return found

    def epoch_key(self, epoch: int) -> tuple[bool, ...]:
        """What changes with the epoch: which groups are frozen."""
        return tuple(g.frozen_at(epoch) for g in self.groups)
