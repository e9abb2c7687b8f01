"""The basic residual block of ResNet for CIFAR (He et al., 2016)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidValue
from ..functional import pad_shortcut, relu
from .base import EVAL, Layer, Mode, Shape, prefixed, within
from .batchnorm import BatchNorm
from .conv import Conv2d
from .kinds import Kind, register_kind

SHORTCUTS = ("projection", "zero_pad")


class BasicBlock(Layer):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    conv1 is 3x3 with ``stride``, conv2 3x3 with stride 1, both padded by 1 and without bias (the
    batch norm after each supplies the shift). The shortcut is the identity when the shape is
    kept; when it changes, ``shortcut="projection"`` uses a 1x1 convolution with ``stride``
    followed by batch norm (the paper's option B), ``shortcut="zero_pad"`` subsamples and pads
    the new channels with zeros, without parameters (option A, the paper's CIFAR choice).

    Shapes: x ``(N, H, W, C_in)`` -> out ``(N, H/stride, W/stride, C_out)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32, bn_momentum: float = 0.1,
                 shortcut: str = "projection", init: str = "he_normal"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise InvalidValue(f"shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        rng = rng if rng is not None else np.random.default_rng()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.reshapes = stride != 1 or in_channels != out_channels
        self.shortcut = shortcut if self.reshapes else "identity"
        self.children = {
            "conv1": Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, rng=rng, dtype=dtype, init=init),
            "bn1": BatchNorm(out_channels, bn_momentum, dtype=dtype),
            "conv2": Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng, dtype=dtype, init=init),
            "bn2": BatchNorm(out_channels, bn_momentum, dtype=dtype),
        }
        if self.shortcut == "projection":
            self.children["shortcut_conv"] = Conv2d(in_channels, out_channels, 1, stride, 0, bias=False,
                                                    rng=rng, dtype=dtype, init=init)
            self.children["shortcut_bn"] = BatchNorm(out_channels, bn_momentum, dtype=dtype)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, out_channels: int, **options) -> BasicBlock:
        return cls(in_shape[-1], out_channels, rng=rng, dtype=dtype, **options)

    def output_shape(self, in_shape: Shape) -> Shape:
        return self.children["conv1"].output_shape(in_shape)[:2] + (self.out_channels,)

    def forward(self, x, mode: Mode = EVAL):
        c = self.children
        h, k1 = c["conv1"].forward(x, mode)
        h, n1 = c["bn1"].forward(h, mode)
        h, r1 = relu.forward(h, keep=mode.keep)
        h, k2 = c["conv2"].forward(h, mode)
        h, n2 = c["bn2"].forward(h, mode)
        ks = ns = None
        if self.shortcut == "projection":
            short, ks = c["shortcut_conv"].forward(x, mode)
            short, ns = c["shortcut_bn"].forward(short, mode)
        elif self.shortcut == "zero_pad":
            short, ks = pad_shortcut.forward(x, stride=self.stride, channels=self.out_channels, keep=mode.keep)
        else:
            short = x
        out, r2 = relu.forward(h + short, keep=mode.keep)
        return out, ((k1, n1, r1, k2, n2, ks, ns, r2) if mode.keep else None)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        k1, n1, r1, k2, n2, ks, ns, r2 = ctx
        c, grads = self.children, {}

        def child(name, child_ctx, d, need=True):
            d, g = c[name].backward(child_ctx, d, need_dx=need, into=within(into, name))
            if into is None:
                grads.update(prefixed(name, g))
            return d

        dsum, _ = relu.backward(r2, dout)
        d = child("conv2", k2, child("bn2", n2, dsum))
        d, _ = relu.backward(r1, d)
        dmain = child("conv1", k1, child("bn1", n1, d), need_dx)
        if self.shortcut == "projection":
            dshort = child("shortcut_conv", ks, child("shortcut_bn", ns, dsum), need_dx)
        elif self.shortcut == "zero_pad":
            dshort = pad_shortcut.backward(ks, dsum)[0] if need_dx else None
        else:
            dshort = dsum
        return (dmain + dshort if need_dx else None), (grads if into is None else into)

    def trace(self, graph, value: int) -> int:
        c = self.children
        h = graph.add(c["bn1"], [graph.add(c["conv1"], [value])])
        h = graph.add(c["bn2"], [graph.add(c["conv2"], [graph.add("relu", [h])])])
        if self.shortcut == "projection":
            short = graph.add(c["shortcut_bn"], [graph.add(c["shortcut_conv"], [value])])
        elif self.shortcut == "zero_pad":
            short = graph.add("pad_shortcut", [value], stride=self.stride, channels=self.out_channels,
                              in_channels=self.in_channels)
        else:
            short = value
        return graph.add("relu", [graph.add("add", [h, short])])

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, shortcut={self.shortcut}"


def onnx_add(g, node, args, out, ranks) -> int:
    g.node("Add", args, out)
    return ranks[0]


def onnx_pad_shortcut(g, node, args, out, ranks) -> int:
    """``x[:, :, ::s, ::s]`` with zero channels around it (NCHW)."""
    key, a = f"n{node.output}", node.attrs
    s, channels, c = a["stride"], a["channels"], a["in_channels"]
    before = (channels - c) // 2
    sub = g.node("Slice", [args[0], g.const(f"{key}_starts", np.array([0, 0], np.int64)),
                           g.const(f"{key}_ends", np.array([2**62, 2**62], np.int64)),
                           g.const(f"{key}_axes", np.array([2, 3], np.int64)),
                           g.const(f"{key}_steps", np.array([s, s], np.int64))])
    pads = np.array([0, before, 0, 0, 0, channels - c - before, 0, 0], np.int64)
    g.node("Pad", [sub, g.const(f"{key}_pads", pads)], out, mode="constant")
    return 4


register_kind(Kind("basic_block", BasicBlock, weighted=True))     # a container: traced into the kinds below
def _pad(node, x, keep: bool):
    return pad_shortcut.forward(x, stride=node.attrs["stride"], channels=node.attrs["channels"], keep=keep)


register_kind(Kind("add", role="add", infer=lambda node, args: args[0] + args[1], onnx=onnx_add,
                   train_forward=lambda node, args, mode: (args[0] + args[1], None),
                   train_backward=lambda node, ctx, dout, need_dx, into, reuse=False: ([dout, dout], {})))
register_kind(Kind("pad_shortcut", onnx=onnx_pad_shortcut, infer=lambda node, args: _pad(node, args[0], False)[0],
                   train_forward=lambda node, args, mode: _pad(node, args[0], mode.keep),
                   train_backward=lambda node, ctx, dout, need_dx, into, reuse=False: (
                       [pad_shortcut.backward(ctx, dout)[0] if need_dx else None], {})))
