"""The flat store: a model's parameters as views into one contiguous buffer, their gradients as
views into another of the same layout.

With every parameter a view of ``params`` and every gradient a view of ``grads``, whatever works
on all of them at once is one array operation: the optimizer's update (:mod:`cifarnet.optim`),
the finiteness check of a step's gradients, and, across threads or processes, one reduction of
the gradient buffer. Layers keep holding their arrays under ``layer.params[key]``; they simply
are views now. Their order is :meth:`cifarnet.layers.Layer.named_parameters`'s.

A store stays attached while every parameter slot still holds its view; a model whose arrays
were replaced (moved to another backend, cast, assigned by hand) gets a new store on the next
:meth:`FlatStore.of`, with the current values copied in.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .backend import array_module, backend_of

Layout = tuple[tuple[str, tuple[int, ...]], ...]       # (name, shape) per parameter, in order


class FlatStore:
    """The parameters of ``model`` moved into one buffer (a copy of their values), every parameter
    slot of the model now holding its view, and a zeroed gradient buffer of the same layout.

    Attributes:
        params, grads: the ``(size,)`` buffers (the parameters' backend and dtype).
        layout: ``(name, shape)`` per parameter, in order.
        offsets: name -> ``(start, stop)`` in the buffers.

    Raises:
        ValueError: no parameters, or parameters on several backends or of several dtypes.
    """

    def __init__(self, model):
        slots = list(model._arrays("params"))
        if not slots:
            raise ValueError("the model has no parameters to store")
        first = slots[0][1][slots[0][2]]
        xp, dtype = array_module(first), first.dtype
        for name, holder, key in slots:
            if array_module(holder[key]) is not xp or holder[key].dtype != dtype:
                raise ValueError(f"parameter {name} is {holder[key].dtype} on {array_module(holder[key]).__name__}, "
                                 f"the first is {dtype} on {xp.__name__}: one store holds one kind")
        self.layout: Layout = tuple((name, tuple(holder[key].shape)) for name, holder, key in slots)
        self.offsets = offsets_of(self.layout)
        self.shapes = dict(self.layout)
        size = sum(stop - start for start, stop in self.offsets.values())
        self.backend = backend_of(first)
        self.params = xp.empty(size, dtype=dtype)
        self.grads = xp.zeros(size, dtype=dtype)
        self._held = []
        for name, holder, key in slots:
            view = self.view(self.params, name)
            view[...] = holder[key]
            holder[key] = view
            self._held.append((holder, key, view))
        self.grad_views = self.split(self.grads)
        self._parts = [(self.grads, self.grad_views)]

    def __deepcopy__(self, memo) -> None:
        """A copied model is not flat (copied views would no longer share one buffer); the next
        :meth:`of` gives it a store of its own."""
        return None

    @classmethod
    def of(cls, model) -> FlatStore:
        """``model``'s store: the attached one if every parameter is still its view, else a new one."""
        store = getattr(model, "store", None)
        if store is None or not store.attached(model):
            store = cls(model)
            model.store = store
        return store

    def attached(self, model) -> bool:
        """Whether every parameter slot of ``model`` still holds this store's view (and no other slots)."""
        slots = list(model._arrays("params"))
        return len(slots) == len(self._held) and all(
            holder is h and key == k and holder[key] is view
            for (_, holder, key), (h, k, view) in zip(slots, self._held, strict=True))

    # -- views ----------------------------------------------------------------------------------
    def view(self, flat, name: str):
        """The part of ``flat`` (a buffer of this layout) that belongs to parameter ``name``, shaped."""
        start, stop = self.offsets[name]
        return flat[start:stop].reshape(self.shapes[name])

    def split(self, flat) -> dict[str, Any]:
        """``flat`` (a buffer of this layout) as views, by parameter name."""
        return split(flat, self.layout)

    def part_grads(self, parts: int) -> list[tuple[Any, dict[str, Any]]]:
        """``(buffer, views by name)`` for each of ``parts`` parts of a split batch: part 0 writes
        into :attr:`grads`, the others into spare buffers of the same layout (kept for the next step)."""
        while len(self._parts) < parts:
            spare = self.backend.xp.zeros_like(self.grads)
            self._parts.append((spare, self.split(spare)))
        return self._parts[:parts]

    def gather(self, grads: Mapping[str, Any]):
        """The gradient buffer holding ``grads`` (name -> array): each copied into its view unless it
        already is that view. Raises KeyError naming a parameter without a gradient."""
        for name, view in self.grad_views.items():
            if name not in grads:
                raise KeyError(f"no gradient for parameter {name!r}; call backward before step")
            if grads[name] is not view:
                view[...] = grads[name]
        return self.grads

    def per_parameter(self, value: Callable[[str, tuple[int, ...]], float]):
        """A buffer of this layout filled, parameter by parameter, with ``value(name, shape)`` (a
        weight-decay coefficient that spares biases and batch norm, for example)."""
        out = self.backend.xp.empty_like(self.params)
        for name, shape in self.layout:
            self.view(out, name)[...] = value(name, shape)
        return out


def offsets_of(layout: Layout) -> dict[str, tuple[int, int]]:
    """``(start, stop)`` of each parameter in a buffer of ``layout``."""
    offsets, start = {}, 0
    for name, shape in layout:
        size = 1
        for n in shape:
            size *= n
        offsets[name] = (start, start + size)
        start += size
    return offsets


def split(flat, layout: Layout) -> dict[str, Any]:
    """A buffer of ``layout`` as shaped views, by parameter name."""
    return {name: flat[start:stop].reshape(shape)
            for (name, shape), (start, stop) in zip(layout, offsets_of(layout).values(), strict=True)}
