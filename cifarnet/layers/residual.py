"""The basic residual block of ResNet for CIFAR (He et al., 2016)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .activation import ReLU
from .base import Layer, Shape
from .batchnorm import BatchNorm
from .conv import Conv2d


class BasicBlock(Layer):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    conv1 is 3x3 with ``stride``, conv2 3x3 with stride 1, both padded by 1 and without bias (the
    batch norm after each supplies the shift). The shortcut is the identity when the shape is
    kept, else a 1x1 convolution with ``stride`` followed by batch norm ("projection").

    Shapes: x ``(N, H, W, C_in)`` -> out ``(N, H/stride, W/stride, C_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32,
                 bn_momentum: float = 0.1):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.blocks: dict[str, Layer] = {
            "conv1": Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, rng=rng, dtype=dtype),
            "bn1": BatchNorm(out_channels, bn_momentum, dtype=dtype),
            "relu1": ReLU(),
            "conv2": Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng, dtype=dtype),
            "bn2": BatchNorm(out_channels, bn_momentum, dtype=dtype),
        }
        self.projection = stride != 1 or in_channels != out_channels
        if self.projection:
            self.blocks["shortcut_conv"] = Conv2d(in_channels, out_channels, 1, stride, 0, bias=False,
                                                  rng=rng, dtype=dtype)
            self.blocks["shortcut_bn"] = BatchNorm(out_channels, bn_momentum, dtype=dtype)
        self.blocks["relu_out"] = ReLU()

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, out_channels: int, **options) -> "BasicBlock":
        return cls(in_shape[-1], out_channels, rng=rng, dtype=dtype, **options)

    def children(self) -> dict[str, Layer]:
        return self.blocks

    def replica(self) -> "BasicBlock":
        twin = super().replica()
        twin.blocks = {name: layer.replica() for name, layer in self.blocks.items()}
        return twin

    def output_shape(self, in_shape: Shape) -> Shape:
        return self.blocks["conv1"].output_shape(in_shape)[:2] + (self.out_channels,)

    def _main(self):
        return [self.blocks[k] for k in ("conv1", "bn1", "relu1", "conv2", "bn2")]

    def forward(self, x):
        main = x
        for layer in self._main():
            main = layer.forward(main)
        if self.projection:
            short = self.blocks["shortcut_bn"].forward(self.blocks["shortcut_conv"].forward(x))
        else:
            short = x
        return self.blocks["relu_out"].forward(main + short)

    def infer(self, x):
        """Eval mode: each batch norm folded into its convolution; the shortcut addition and the
        ReLUs happen inside the convolutions' chunk loops (inference only, no backward)."""
        if self.training:
            return self.forward(x)
        b = self.blocks
        h = b["conv1"].infer_fused(x, *b["bn1"].folded(), relu=True)
        short = b["shortcut_conv"].infer_fused(x, *b["shortcut_bn"].folded()) if self.projection else x
        return b["conv2"].infer_fused(h, *b["bn2"].folded(), residual=short, relu=True)

    def backward(self, dout):
        dsum = self.blocks["relu_out"].backward(dout)
        dmain = dsum
        for layer in reversed(self._main()):
            dmain = layer.backward(dmain)
        if self.projection:
            dshort = self.blocks["shortcut_conv"].backward(self.blocks["shortcut_bn"].backward(dsum))
        else:
            dshort = dsum
        return dmain + dshort

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, projection={self.projection}"
