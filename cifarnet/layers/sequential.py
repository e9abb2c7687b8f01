"""A chain of named layers."""
from __future__ import annotations

from typing import Iterable

from .base import Layer, Shape


class Sequential(Layer):
    """Apply named layers in order; backward runs them in reverse.

    Sub-layer arrays are reachable as ``"<layer name>.<key>"``, e.g. ``conv1.W``.
    """

    def __init__(self, layers: Iterable[tuple[str, Layer]]):
        super().__init__()
        self.layers: dict[str, Layer] = {}
        for name, layer in layers:
            if not name or "." in name:
                raise ValueError(f"layer names must be non-empty and free of dots, got {name!r}")
            if name in self.layers:
                raise ValueError(f"duplicate layer name {name!r}")
            self.layers[name] = layer

    def children(self) -> dict[str, Layer]:
        return self.layers

    def output_shape(self, in_shape: Shape) -> Shape:
        for layer in self.layers.values():
            in_shape = layer.output_shape(in_shape)
        return in_shape

    def forward(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return dout

    def set_input_grad(self, needed: bool) -> "Sequential":
        if self.layers:
            next(iter(self.layers.values())).set_input_grad(needed)
        return self

    def __getitem__(self, name: str) -> Layer:
        return self.layers[name]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({name}): {layer!r}".replace("\n", "\n  ") for name, layer in self.layers.items())
        return f"Sequential(\n{inner}\n)"
