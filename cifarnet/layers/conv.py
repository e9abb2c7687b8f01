"""2-D convolution layer: owns ``W`` and ``b``; the math is :data:`cifarnet.functional.conv2d`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays.windows import output_size
from ..backend import to_numpy
from ..errors import InvalidValue
from ..functional import conv2d
from .base import EVAL, Layer, Mode, Shape, deliver
from .init import draw_weights
from .kinds import Kind, apply_activation, emit_activation, folded_weights, register_kind


class Conv2d(Layer):
    """Convolution (cross-correlation, as in every framework) with zero padding.

    Shapes:
        x:   ``(N, H, W, C_in)``
        W:   ``(KH, KW, C_in, C_out)``
        b:   ``(C_out,)`` (absent with ``bias=False``)
        out: ``(N, Ho, Wo, C_out)`` with ``Ho = (H + 2*padding - KH) // stride + 1``
    """

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int = 1, padding: int = 0, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32, init: str = "he_normal"):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if min(in_channels, out_channels, kh, kw, stride) < 1 or padding < 0:
            raise InvalidValue(
                f"Conv2d needs positive channels, kernel and stride and padding >= 0; got "
                f"in={in_channels}, out={out_channels}, kernel={(kh, kw)}, stride={stride}, padding={padding}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        rng = rng if rng is not None else np.random.default_rng()
        self.params.update(draw_weights(init, rng, (kh, kw, in_channels, out_channels), kh * kw * in_channels,
                                        out_channels if bias else None, dtype))

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, out_channels: int, **options) -> Conv2d:
        if len(in_shape) != 3:
            raise InvalidValue(f"conv expects (H, W, C) inputs, got shape {in_shape}")
        return cls(in_shape[-1], out_channels, rng=rng, dtype=dtype, **options)

    def output_shape(self, in_shape: Shape) -> Shape:
        h, w, _ = in_shape
        kh, kw = self.kernel_size
        return (output_size(h, kh, self.stride, self.padding),
                output_size(w, kw, self.stride, self.padding), self.out_channels)

    def forward(self, x, mode: Mode = EVAL, columns=None):
        """``columns``: ``x``'s column matrix made already (see :func:`column_geometry`), used where
        the op's variant takes it (``takes_columns``: the fused CuPy one), ignored elsewhere."""
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"Conv2d expects (N, H, W, {self.in_channels}) input, got {x.shape}")
        extra = {"columns": columns} if columns is not None and getattr(conv2d.variant_for(x), "takes_columns",
                                                                          False) else {}
        return conv2d.forward(x, self.params["W"], self.params.get("b"), stride=self.stride, padding=self.padding,
                              keep=mode.keep, workspace=mode.workspace, **extra)

    def backward(self, ctx, dout, need_dx: bool = True, into=None, dx_add=None, defer=None):
        """``dx_add``: an array of the input's shape the input gradient is added onto (and which is
        returned as it): see :data:`cifarnet.functional.conv2d`. ``defer``: a list the weight
        gradient's computation is appended to, to be called later, where the op's variant can do
        that (``defers_weight_gradient``: the NumPy one without a workspace); else it is computed now."""
        extra = {"defer": defer} if defer is not None and getattr(ctx.variant, "defers_weight_gradient",
                                                                  False) else {}
        dx, grads = conv2d.backward(ctx, dout, need_dx=need_dx, grads_out=into, dx_add=dx_add, **extra)
        return dx, deliver(grads, into, self.kind)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'b' in self.params}")


def column_geometry(node) -> tuple[int, int, int] | None:
    """``(KH, KW, padding)`` when the node's convolution is stride 1 with a square kernel and a
    padding that keeps the size (its column matrix is what batch norm's ``bn_act_columns`` writes),
    else None."""
    layer = node.layer
    kh, kw = layer.kernel_size
    if layer.stride != 1 or kh != kw or 2 * layer.padding != kh - 1:
        return None
    return kh, kw, layer.padding


def infer_conv(node, args):
    """A convolution node: its batch norm folded in, then the residual and the activation it took
    (ReLU inside the convolution's output pass, any other after it)."""
    layer, a = node.layer, node.attrs
    W, b = folded_weights(node)
    activation = a.get("activation")
    out = conv2d.forward(args[0], W, b, stride=layer.stride, padding=layer.padding,
                         residual=args[1] if a.get("residual") else None, relu=activation == "relu", keep=False)[0]
    return out if activation in (None, "relu") else apply_activation(activation, out)


def onnx_conv(g, node, args, out, ranks) -> int:
    layer, key = node.layer, f"n{node.output}"
    W, b = (None if v is None else to_numpy(v) for v in folded_weights(node))
    kh, kw = layer.kernel_size
    p = layer.padding
    inputs = [args[0], g.const(f"{key}_W", W.transpose(3, 2, 0, 1))]          # HWIO -> OIHW
    if b is not None:
        inputs.append(g.const(f"{key}_b", b))
    value = g.node("Conv", inputs, kernel_shape=[kh, kw], strides=[layer.stride] * 2, pads=[p, p, p, p])
    if node.attrs.get("residual"):
        value = g.node("Add", [value, args[1]])
    emit_activation(g, node.attrs.get("activation"), value, out, 4)
    return 4


register_kind(Kind("conv", Conv2d, weighted=True, role="folds_norm", takes_residual=True,
                   infer=infer_conv, onnx=onnx_conv, output_free=True, adds_input_gradient=True,
                   defers_weight_gradient=True, column_geometry=column_geometry))
