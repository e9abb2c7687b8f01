"""Max pooling and global average pooling layers (:mod:`cifarnet.functional.pooling`)."""
from __future__ import annotations

from ..arrays.windows import output_size
from ..errors import InvalidValue
from ..functional import global_avg_pool, max_pool2d
from .base import EVAL, Layer, Mode, Shape
from .kinds import Kind, register_kind


class MaxPool2d(Layer):
    """Maximum over each ``k x k`` window, moved by ``stride`` (default ``k``), no padding.

    Shapes: x ``(N, H, W, C)`` -> out ``(N, Ho, Wo, C)``, ``Ho = (H - k) // stride + 1``.
    Where a window holds several equal maxima the gradient goes to the first (row-major).
    """

    kind = "maxpool"

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        stride = kernel_size if stride is None else stride
        if kernel_size < 1 or stride < 1:
            raise InvalidValue(f"MaxPool2d needs kernel_size and stride >= 1, got {kernel_size}, {stride}")
        self.kernel_size, self.stride = kernel_size, stride

    def output_shape(self, in_shape: Shape) -> Shape:
        h, w, c = in_shape
        k, s = self.kernel_size, self.stride
        return (output_size(h, k, s), output_size(w, k, s), c)

    def forward(self, x, mode: Mode = EVAL):
        return max_pool2d.forward(x, kernel=self.kernel_size, stride=self.stride, keep=mode.keep,
                                  workspace=mode.workspace)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return max_pool2d.backward(ctx, dout)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class GlobalAvgPool(Layer):
    """Mean over the spatial axes: ``(N, H, W, C) -> (N, C)``."""

    kind = "global_avg_pool"

    def output_shape(self, in_shape: Shape) -> Shape:
        return (in_shape[-1],)

    def forward(self, x, mode: Mode = EVAL):
        return global_avg_pool.forward(x, keep=mode.keep, workspace=mode.workspace)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        return global_avg_pool.backward(ctx, dout)


def onnx_maxpool(g, node, args, out, ranks) -> int:
    layer = node.layer
    g.node("MaxPool", [args[0]], out, kernel_shape=[layer.kernel_size] * 2, strides=[layer.stride] * 2)
    return 4


def onnx_global_avg_pool(g, node, args, out, ranks) -> int:
    g.node("Flatten", [g.node("GlobalAveragePool", [args[0]])], out, axis=1)
    return 2


register_kind(Kind("maxpool", MaxPool2d, onnx=onnx_maxpool))
register_kind(Kind("global_avg_pool", GlobalAvgPool, onnx=onnx_global_avg_pool))
