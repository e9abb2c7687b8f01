"""The layer protocol every building block follows.

A layer keeps three dictionaries under matching keys:

* ``params``  - trainable arrays, updated in place by optimizers (e.g. ``W``, ``b``);
* ``grads``   - gradients of the loss with respect to ``params``, same keys and shapes,
  written by ``backward``;
* ``buffers`` - persistent state that is saved with the model but never touched by an
  optimizer (e.g. batch norm's ``running_mean``).

``forward(x)`` caches exactly what ``backward`` needs; ``backward(dout)`` fills ``grads`` and
returns ``dx``. Containers expose their sub-layers through ``children()`` so that every array of a
model is reachable under a stable dotted name such as ``stage1_block1.conv1.W``.

Images are NHWC throughout the library: ``(N, H, W, C)``.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import numpy as np

from ..backend import Backend, backend_of, to_numpy

Shape = tuple[int, ...]


class Layer:
    """Base class: parameter bookkeeping, train/eval mode, backend moves, state dicts."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.training = True

    # -- to be provided by subclasses ---------------------------------------------------------
    @classmethod
    def build(cls, in_shape: Shape, rng: np.random.Generator, dtype: Any, **options: Any) -> "Layer":
        """Make the layer for per-example input shape ``in_shape`` (no batch axis).

        Layers without parameters ignore ``rng`` and ``dtype``; layers with parameters infer
        their input width from ``in_shape`` so that nobody writes it by hand.
        """
        return cls(**options)

    def output_shape(self, in_shape: Shape) -> Shape:
        """Per-example output shape for per-example input shape ``in_shape``."""
        return in_shape

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def children(self) -> dict[str, "Layer"]:
        """Named sub-layers (containers override this)."""
        return {}

    def all_layers(self) -> Iterator["Layer"]:
        """This layer and every layer inside it, depth first, in a stable order."""
        yield self
        for child in self.children().values():
            yield from child.all_layers()

    def infer(self, x):
        """Forward for inference: the same output as ``forward``, but no ``backward`` may follow.

        In eval mode, containers override this to fold each batch norm into the convolution or
        linear layer before it and to apply ReLU and residual additions while the data is in
        cache (see :meth:`Conv2d.infer_fused`). In training mode it is ``forward``.
        """
        return self.forward(x)

    def replica(self) -> "Layer":
        """A twin for one thread of data-parallel training (:mod:`cifarnet.training.data_parallel`).

        It shares this layer's ``params`` and ``buffers`` dictionaries, so the very same arrays,
        and its settings, but has its own ``grads`` and its own forward caches, so that each
        thread can run forward and backward on its part of a batch. Containers replicate their
        sub-layers; layers with other per-call state (dropout's generator) override this.
        """
        twin = copy.copy(self)
        twin.grads = {}
        return twin

    # -- shared machinery -----------------------------------------------------------------------
    def _take_cache(self, attr: str):
        """Return and forget what ``forward`` cached under ``attr`` (one backward per forward)."""
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a preceding forward")
        setattr(self, attr, None)
        return value

    def __call__(self, x):
        return self.forward(x)

    def train(self, mode: bool = True) -> "Layer":
        """Switch this layer and all sub-layers to training (or, with ``mode=False``, eval) mode."""
        self.training = mode
        for child in self.children().values():
            child.train(mode)
        return self

    def set_input_grad(self, needed: bool) -> "Layer":
        """Say whether ``backward`` must return ``dx``. A network's first layer needs none (its input
        is data), and a convolution saves its most expensive product by skipping it. Layers that
        can skip it have an ``input_grad`` attribute; containers pass the flag to their first layer.
        """
        if hasattr(self, "input_grad"):
            self.input_grad = needed
        return self

    def eval(self) -> "Layer":
        """Switch to evaluation mode: batch norm uses running statistics, dropout is identity."""
        return self.train(False)

    def _walk(self, attr: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
        for key, value in getattr(self, attr).items():
            yield prefix + key, value
        for name, child in self.children().items():
            yield from child._walk(attr, prefix + name + ".")

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        """``(dotted name, array)`` for every trainable parameter, in a stable order."""
        return self._walk("params")

    def named_gradients(self) -> Iterator[tuple[str, Any]]:
        """``(dotted name, array)`` for every gradient written by the last ``backward``."""
        return self._walk("grads")

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        """``(dotted name, array)`` for every persistent non-trainable array."""
        return self._walk("buffers")

    def num_parameters(self) -> int:
        return int(sum(p.size for _, p in self.named_parameters()))

    def _owners(self, attr: str, prefix: str = "") -> Iterator[tuple[str, "Layer", str]]:
        for key in getattr(self, attr):
            yield prefix + key, self, key
        for name, child in self.children().items():
            yield from child._owners(attr, prefix + name + ".")

    def to(self, backend: Backend) -> "Layer":
        """Move every parameter and buffer to ``backend``, in place; gradients are dropped."""
        for attr in ("params", "buffers"):
            for _, owner, key in list(self._owners(attr)):
                store = getattr(owner, attr)
                store[key] = backend.asarray(store[key])
        for _, owner, _ in list(self._owners("grads")):
            owner.grads.clear()
        return self

    def astype(self, dtype: Any) -> "Layer":
        """Cast every parameter and buffer to ``dtype`` in place (e.g. float64 for gradient checks)."""
        for attr in ("params", "buffers"):
            for _, owner, key in list(self._owners(attr)):
                store = getattr(owner, attr)
                store[key] = store[key].astype(dtype)
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as host NumPy arrays under dotted names (checkpoint keys)."""
        out = {name: to_numpy(a).copy() for name, a in self.named_parameters()}
        out.update({name: to_numpy(a).copy() for name, a in self.named_buffers()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy ``state`` into this model's arrays, keeping each array's backend and dtype.

        Raises:
            KeyError: a parameter or buffer is missing from ``state``, or ``state`` has extra keys.
            ValueError: shapes disagree; the message names the first mismatching array and both shapes.
        """
        owners = list(self._owners("params")) + list(self._owners("buffers"))
        expected = {name for name, _, _ in owners}
        missing = [n for n, _, _ in owners if n not in state]
        if missing:
            raise KeyError(f"state is missing {missing[0]!r} ({len(missing)} missing in all)")
        extra = sorted(set(state) - expected)
        if extra:
            raise KeyError(f"state has unexpected entry {extra[0]!r} ({len(extra)} unexpected in all)")
        for name, owner, key in owners:
            store = owner.params if key in owner.params else owner.buffers
            if tuple(state[name].shape) != tuple(store[key].shape):
                raise ValueError(
                    f"shape mismatch for {name!r}: model has {tuple(store[key].shape)}, "
                    f"state has {tuple(state[name].shape)}"
                )
        for name, owner, key in owners:
            store = owner.params if key in owner.params else owner.buffers
            target = store[key]
            store[key] = backend_of(target).asarray(to_numpy(state[name]), dtype=target.dtype).copy()

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
