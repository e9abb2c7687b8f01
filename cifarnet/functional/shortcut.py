"""The parameter-free shortcut of He et al.'s CIFAR ResNets ("option A"): subsample, pad channels.

``forward(x, stride=, channels=, keep=True) -> (out, ctx)``: ``x[:, ::stride, ::stride, :]`` with
zero channels added, ``(channels - C) // 2`` before and the rest after (as the widely used
PyTorch reimplementation pads), so that a block that halves the resolution and doubles the width
can add its input to its output without a projection. ``backward(ctx, dout) -> (dx, {})``.

Shapes: x ``(N, H, W, C)`` -> out ``(N, ceil(H/stride), ceil(W/stride), channels)``.
"""
from __future__ import annotations

from ..backend import array_module
from ..errors import InvalidValue
from .dispatch import Op

pad_shortcut = Op("pad_shortcut")


@pad_shortcut.reference
class PadShortcutReference:
    @staticmethod
    def forward(x, *, stride: int, channels: int, keep: bool = True):
        xp = array_module(x)
        c = x.shape[-1]
        if channels < c:
            raise InvalidValue(f"the zero-padding shortcut cannot narrow {c} channels to {channels}")
        before = (channels - c) // 2
        sub = x[:, ::stride, ::stride, :]                                   # N, Ho, Wo, C
        out = xp.zeros(sub.shape[:3] + (channels,), dtype=x.dtype)
        out[..., before:before + c] = sub
        return out, ((x.shape, stride, before) if keep else None)

    @staticmethod
    def backward(saved, dout):
        x_shape, stride, before = saved
        xp = array_module(dout)
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        dx[:, ::stride, ::stride, :] = dout[..., before:before + x_shape[-1]]
        return dx, {}
