"""A chain of named layers."""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import InvalidValue
from .base import EVAL, Layer, Mode, Shape, prefixed, within


class Sequential(Layer):
    """Apply named layers in order; backward runs them in reverse.

    Sub-layer arrays are reachable as ``"<layer name>.<key>"``, e.g. ``conv1.W``. The context of a
    forward is the list of the layers' contexts.

    ``trained_from`` (set by :meth:`freeze_before`; 0 by default): the layers before this index
    train nothing, so backward stops at it: that layer computes no input gradient and the ones
    before it do not run (their parameters' gradients are zero), as PyTorch skips what no
    gradient-requiring tensor needs.
    """

    def __init__(self, layers: Iterable[tuple[str, Layer]]):
        super().__init__()
        for name, layer in layers:
            if not name or "." in name:
                raise InvalidValue(f"layer names must be non-empty and free of dots, got {name!r}")
            if name in self.children:
                raise InvalidValue(f"duplicate layer name {name!r}")
            self.children[name] = layer
        self.trained_from = 0

    def freeze_before(self, frozen) -> int:
        """Set :attr:`trained_from` to the first layer holding a parameter not in ``frozen`` (dotted
        names); returns it (0 when every parameter is frozen: nothing is skipped)."""
        for index, (name, layer) in enumerate(self.children.items()):
            if any(f"{name}.{key}" not in frozen for key, _ in layer.named_parameters()):
                self.trained_from = index
                return index
        self.trained_from = 0
        return 0

    def output_shape(self, in_shape: Shape) -> Shape:
        for layer in self.children.values():
            in_shape = layer.output_shape(in_shape)
        return in_shape

    def forward(self, x, mode: Mode = EVAL):
        contexts = []
        for layer in self.children.values():
            x, ctx = layer.forward(x, mode)
            contexts.append(ctx)
        return x, (contexts if mode.keep else None)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        grads = {}
        items = list(self.children.items())
        stop = 0 if need_dx else self.trained_from
        for i in range(len(items) - 1, stop - 1, -1):
            name, layer = items[i]
            dout, layer_grads = layer.backward(ctx[i], dout, need_dx=need_dx or i > stop, into=within(into, name))
            if into is None:
                grads.update(prefixed(name, layer_grads))
        for name, layer in items[:stop]:                  # skipped: nothing of theirs trains
            for key, param in layer.named_parameters():
                if into is None:
                    grads[f"{name}.{key}"] = param * 0
                else:
                    into[f"{name}.{key}"][...] = 0
        return (None if stop else dout), (grads if into is None else into)

    def trace(self, graph, value: int) -> int:
        for layer in self.children.values():
            value = layer.trace(graph, value)
        return value

    def __getitem__(self, name: str) -> Layer:
        return self.children[name]

    def __len__(self) -> int:
        return len(self.children)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({name}): {layer!r}".replace("\n", "\n  ") for name, layer in self.children.items())
        return f"Sequential(\n{inner}\n)"
