"""A chain of named layers."""
from __future__ import annotations

from typing import Iterable

from .activation import ReLU
from .base import Layer, Shape
from .batchnorm import BatchNorm
from .conv import Conv2d
from .linear import Linear


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

    def replica(self) -> "Sequential":
        twin = super().replica()
        twin.layers = {name: layer.replica() for name, layer in self.layers.items()}
        return twin

    def output_shape(self, in_shape: Shape) -> Shape:
        for layer in self.layers.values():
            in_shape = layer.output_shape(in_shape)
        return in_shape

    def forward(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def infer(self, x):
        """Eval mode: a batch norm right after a convolution or linear layer is folded into it,
        with the ReLU that follows (if any); everything else runs its own ``infer``."""
        if self.training:
            return self.forward(x)
        layers = list(self.layers.values())
        i = 0
        while i < len(layers):
            layer, following = layers[i], layers[i + 1:i + 3]
            if isinstance(layer, (Conv2d, Linear)) and following and isinstance(following[0], BatchNorm):
                relu = len(following) > 1 and isinstance(following[1], ReLU)
                x = layer.infer_fused(x, *following[0].folded(), relu=relu)
                i += 3 if relu else 2
            else:
                x = layer.infer(x)
                i += 1
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
