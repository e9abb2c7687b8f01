"""The layer protocol every building block follows.

A layer owns its configuration and three kinds of state:

* ``params``   - trainable arrays, updated in place by optimizers (e.g. ``W``, ``b``);
* ``buffers``  - persistent arrays saved with the model but never touched by an optimizer
  (batch norm's ``running_mean``);
* ``children`` - named sub-layers (containers), so that every array of a model is reachable
  under a stable dotted name such as ``stage1_block1.conv1.W``.

A layer keeps nothing about a call. ``forward(x, mode) -> (out, ctx)`` returns what ``backward``
needs as ``ctx``; ``backward(ctx, dout, need_dx=True, into=None) -> (dx, grads)`` returns the
input gradient and the parameter gradients under the same dotted names as
:meth:`named_parameters`: a dict of new arrays, or, given ``into`` (dotted name -> array, the
gradient views of a flat store, :mod:`cifarnet.store`), written into those arrays, which it then
returns. The same layer can therefore run on several parts of a batch at once, each part with its
own context and its own gradient buffer (data-parallel training, :mod:`cifarnet.parallel`). The math lives in the ops of
:mod:`cifarnet.functional`; a layer passes its parameters to them.

Images are NHWC throughout the library: ``(N, H, W, C)``.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..backend import Backend, backend_of, to_numpy
from ..functional import LOCAL
from ..store import FlatStore

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Mode:
    """How a forward pass runs.

    Attributes:
        training: batch norm normalises with the batch's statistics (and updates its running
            ones); dropout drops. Otherwise batch norm uses the running statistics and dropout
            is the identity.
        keep: keep what ``backward`` needs (the returned ``ctx``); False for inference.
        reducer: adds batch norm's per-channel sums over the parts of a split batch
            (:data:`cifarnet.functional.LOCAL`: this call's batch only); its ``leader`` alone
            updates the running statistics.
        generators: the generators this part of a split batch draws its dropout masks from
            (:class:`cifarnet.parallel.PartGenerators`, by layer name); a layer not in it, or
            every layer when None, draws from its own.
        workspace: where the op of this call takes its output and temporaries from, the same
            arrays every step (:mod:`cifarnet.arrays.workspace`; the training plan gives each
            node its own); None: the ops allocate.
    """

    training: bool = False
    keep: bool = True
    reducer: Any = LOCAL
    generators: Any = None
    workspace: Any = None

    def generator(self, layer) -> np.random.Generator:
        own = self.generators.of(layer) if self.generators is not None else None
        return layer.rng if own is None else own

    def part(self, reducer, generators) -> Mode:
        """This mode for one part of a split batch."""
        return replace(self, reducer=reducer, generators=generators)

    def within(self, workspace) -> Mode:
        """This mode for a call that takes its arrays from ``workspace`` (one node's scope)."""
        return replace(self, workspace=workspace)


TRAIN = Mode(training=True)
EVAL = Mode(training=False)                 # eval mode, backward still possible (gradient checks)
INFER = Mode(training=False, keep=False)    # inference: nothing kept


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class Layer:
    """Base class: parameter bookkeeping, one tree walk, backend moves, state dicts."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.children: dict[str, Layer] = {}

    # -- to be provided by subclasses ---------------------------------------------------------
    @classmethod
    def build(cls, in_shape: Shape, rng: np.random.Generator, dtype: Any, **options: Any) -> Layer:
        """Make the layer for per-example input shape ``in_shape`` (no batch axis).

        Layers without parameters ignore ``rng`` and ``dtype``; layers with parameters infer
        their input width from ``in_shape`` so that nobody writes it by hand.
        """
        return cls(**options)

    def output_shape(self, in_shape: Shape) -> Shape:
        """Per-example output shape for per-example input shape ``in_shape``."""
        return in_shape

    def forward(self, x, mode: Mode = EVAL):
        """``(out, ctx)``; ``ctx`` is None when ``mode.keep`` is False."""
        raise NotImplementedError

    def backward(self, ctx, dout, need_dx: bool = True, into: Mapping[str, Any] | None = None):
        """``(dx, grads)`` for the ``ctx`` of one forward; ``dx`` is None when ``need_dx`` is False.
        With ``into``, the gradients are written into its arrays (see the module docstring)."""
        raise NotImplementedError

    def trace(self, graph, value: int) -> int:
        """Add this layer's inference ops to ``graph`` (:class:`cifarnet.inference.Graph`) for input
        ``value``; returns the output value. A leaf layer is one node; containers override this."""
        return graph.add(self, [value])

    def forward_eval(self, x):
        """The unfused eval-mode output for ``x`` (nothing kept for backward): the reference the
        fused inference plan (:func:`cifarnet.inference.infer`) is checked against."""
        return self.forward(x, INFER)[0]

    # -- the tree -------------------------------------------------------------------------------
    def walk(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        """``(dotted name, layer)`` for this layer (named ``prefix``) and every layer inside it,
        depth first, in a stable order."""
        yield prefix, self
        for name, child in self.children.items():
            yield from child.walk(_join(prefix, name))

    def _arrays(self, attr: str) -> Iterator[tuple[str, dict, str]]:
        for prefix, layer in self.walk():
            store = getattr(layer, attr)
            for key in store:
                yield _join(prefix, key), store, key

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        """``(dotted name, array)`` for every trainable parameter, in a stable order."""
        return ((name, store[key]) for name, store, key in self._arrays("params"))

    def named_buffers(self) -> Iterator[tuple[str, Any]]:
        """``(dotted name, array)`` for every persistent non-trainable array."""
        return ((name, store[key]) for name, store, key in self._arrays("buffers"))

    def num_parameters(self) -> int:
        return int(sum(p.size for _, p in self.named_parameters()))

    def generator_states(self) -> dict[str, Any]:
        """JSON-ready states of the generators of every layer that draws random numbers (dropout's
        ``rng``), by dotted layer name (a lone such layer: ``"dropout"``)."""
        return {name: layer.rng.bit_generator.state for name, layer in self._drawing()}

    def load_generator_states(self, states: Mapping[str, Any]) -> None:
        """Put back what :meth:`generator_states` returned.

        Raises:
            ValueError: the layers that draw random numbers are not the ones in ``states``.
        """
        layers = dict(self._drawing())
        if set(layers) != set(states):
            raise ValueError(f"dropout layers differ: model has {sorted(layers)}, the states have {sorted(states)}")
        for name, state in states.items():
            layers[name].rng.bit_generator.state = state

    def _drawing(self) -> Iterator[tuple[str, Layer]]:
        return ((name or "dropout", layer) for name, layer in self.walk() if getattr(layer, "rng", None) is not None)

    # -- arrays ---------------------------------------------------------------------------------
    def to(self, backend: Backend) -> Layer:
        """Move every parameter and buffer to ``backend``, in place (a flat model's parameters into
        a new flat store there)."""
        for attr in ("params", "buffers"):
            for _, store, key in list(self._arrays(attr)):
                store[key] = backend.asarray(store[key])
        return self._reflatten()

    def astype(self, dtype: Any) -> Layer:
        """Cast every parameter and buffer to ``dtype`` in place (e.g. float64 for gradient checks)."""
        for attr in ("params", "buffers"):
            for _, store, key in list(self._arrays(attr)):
                store[key] = store[key].astype(dtype)
        return self._reflatten()

    def flatten(self) -> Layer:
        """Put every parameter into one contiguous buffer (:class:`cifarnet.store.FlatStore`,
        ``self.store``); the parameters become views of it."""
        FlatStore.of(self)
        return self

    def _reflatten(self) -> Layer:
        if getattr(self, "store", None) is not None:
            self.store = None
            self.flatten()
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as host NumPy arrays under dotted names (checkpoint keys)."""
        out = {name: to_numpy(a).copy() for name, a in self.named_parameters()}
        out.update({name: to_numpy(a).copy() for name, a in self.named_buffers()})
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` into this model's arrays, keeping each array's backend and dtype.

        Raises:
            KeyError: a parameter or buffer is missing from ``state``, or ``state`` has extra keys.
            ValueError: shapes disagree; the message names the first mismatching array and both shapes.
        """
        slots = list(self._arrays("params")) + list(self._arrays("buffers"))
        missing = [name for name, _, _ in slots if name not in state]
        if missing:
            raise KeyError(f"state is missing {missing[0]!r} ({len(missing)} missing in all)")
        extra = sorted(set(state) - {name for name, _, _ in slots})
        if extra:
            raise KeyError(f"state has unexpected entry {extra[0]!r} ({len(extra)} unexpected in all)")
        for name, store, key in slots:
            if tuple(state[name].shape) != tuple(store[key].shape):
                raise ValueError(f"shape mismatch for {name!r}: model has {tuple(store[key].shape)}, "
                                 f"state has {tuple(state[name].shape)}")
        for name, store, key in slots:                 # in place: a flat store's views stay its views
            target = store[key]
            target[...] = backend_of(target).asarray(to_numpy(state[name]), dtype=target.dtype)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def prefixed(name: str, grads: Mapping[str, Any]) -> dict[str, Any]:
    """A child's gradients under the names its container gives them (``name.key``)."""
    return {_join(name, key): value for key, value in grads.items()}


class Within(Mapping):
    """The part of a gradient destination (dotted name -> array) that belongs to child ``name``:
    ``Within(into, "conv1")["W"]`` is ``into["conv1.W"]``."""

    def __init__(self, into: Mapping[str, Any], name: str):
        self.into, self.name = into, name

    def __getitem__(self, key: str):
        return self.into[_join(self.name, key)]

    def __iter__(self):
        prefix = self.name + "."
        return (k[len(prefix):] for k in self.into if k.startswith(prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def within(into: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    return None if into is None else Within(into, name)


GRADIENT_COPIES: dict[str, int] = {}     # layer kind -> gradients copied into ``into`` (tests read it)


def deliver(grads: Mapping[str, Any], into: Mapping[str, Any] | None, kind: str = "?") -> Mapping[str, Any]:
    """A leaf layer's gradients as its ``backward`` returns them: as they are, or in ``into``. The ops
    write into ``into``'s arrays themselves (``grads_out``, :mod:`cifarnet.functional.destination`), so
    a gradient that already is ``into``'s array is handed on; any other is copied in and counted in
    :data:`GRADIENT_COPIES` under the layer's ``kind``."""
    if into is None:
        return grads
    for key, value in grads.items():
        destination = into[key]
        if value is not destination:
            destination[...] = value
            GRADIENT_COPIES[kind] = GRADIENT_COPIES.get(kind, 0) + 1
    return into
