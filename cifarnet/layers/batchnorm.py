"""Batch normalisation layer: owns gamma, beta and the running statistics; the math is
:data:`cifarnet.functional.batch_norm`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays.workspace import take
from ..backend import array_module, to_numpy
from ..errors import InvalidValue
from ..functional import batch_norm, batch_norm_act
from ..functional.batchnorm import fold
from .base import EVAL, Layer, Mode, Shape, deliver
from .kinds import Kind, register_kind


class BatchNorm(Layer):
    """Normalise each channel (last axis) over all other axes, then scale and shift.

    Works for ``(N, H, W, C)`` images (statistics over N, H, W per channel) and ``(N, C)``
    features (statistics over N per feature). Training mode normalises with the batch's mean and
    biased variance and updates the running statistics (unbiased variance, as PyTorch); eval mode
    uses the running statistics only, so one image's output does not depend on its batch.

    With ``scale=False`` the scale is fixed at 1: ``gamma`` is a buffer of ones (saved with the
    model, never trained) and only the shift ``beta`` is a parameter (airbench's batch norm).

    Shapes:
        x, out: ``(N, ..., C)``;  gamma, beta, running_mean, running_var: ``(C,)``
    """

    kind = "batchnorm"

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, scale: bool = True, *,
                 dtype: Any = np.float32):
        super().__init__()
        if num_features < 1 or not 0.0 <= momentum <= 1.0 or eps <= 0:
            raise InvalidValue(f"BatchNorm needs num_features >= 1, 0 <= momentum <= 1, eps > 0; "
                             f"got {num_features}, {momentum}, {eps}")
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        (self.params if scale else self.buffers)["gamma"] = np.ones(num_features, dtype=dtype)
        self.params["beta"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, **options) -> BatchNorm:
        return cls(in_shape[-1], dtype=dtype, **options)

    @property
    def gamma(self):
        return self.params["gamma"] if "gamma" in self.params else self.buffers["gamma"]

    def forward(self, x, mode: Mode = EVAL):
        p, b = self.params, self.buffers
        return batch_norm.forward(x, self.gamma, p["beta"], b["running_mean"], b["running_var"],
                                  training=mode.training, momentum=self.momentum, eps=self.eps,
                                  reducer=mode.reducer, keep=mode.keep, workspace=mode.workspace)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        dx, grads = batch_norm.backward(ctx, dout, grads_out=into)
        return dx, deliver({key: grads[key] for key in self.params}, into, self.kind)

    def folded(self):
        """``(scale, shift)``, each ``(C,)``: eval mode computes ``x * scale + shift``."""
        p, b = self.params, self.buffers
        return fold(self.gamma, p["beta"], b["running_mean"], b["running_var"], self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, scale={'gamma' in self.params}"


def onnx_batchnorm(g, node, args, out, ranks) -> int:
    """A batch norm with nothing to fold into: ``x * scale + shift`` per channel."""
    key = f"n{node.output}"
    scale, shift = (to_numpy(v) for v in node.layer.folded())
    shape = (1, -1, 1, 1) if ranks[0] == 4 else (1, -1)
    scaled = g.node("Mul", [args[0], g.const(f"{key}_scale", scale.reshape(shape))])
    g.node("Add", [scaled, g.const(f"{key}_shift", shift.reshape(shape))], out)
    return ranks[0]


def train_forward(node, args, mode: Mode, columns: dict | None = None):
    """A batch norm node of the training plan: the layer's forward, or, fused with the activation
    (and residual addition) after it, :data:`cifarnet.functional.batch_norm_act`. ``columns`` (a
    dict; the plan gives it when ``attrs["columns"]`` holds the geometry of the convolution that
    alone reads the output): where the op's variant ``makes_columns``, it writes that
    convolution's column matrix too, put in ``columns["matrix"]``."""
    layer, a = node.layer, node.attrs
    if not a:
        return layer.forward(args[0], mode)
    p, b = layer.params, layer.buffers
    x, extra = args[0], {}
    if columns is not None and getattr(batch_norm_act.variant_for(x), "makes_columns", False):
        kh, kw, pad = a["columns"]
        n, h, w, c = x.shape
        matrix = take(mode.workspace, "next columns", (n * h * w, kh * kw * c), x.dtype, array_module(x))
        extra["columns"] = (matrix, kh, kw, pad)
        columns["matrix"] = matrix
    return batch_norm_act.forward(x, layer.gamma, p["beta"], b["running_mean"], b["running_var"],
                                  activation=a["activation"], training=mode.training, momentum=layer.momentum,
                                  eps=layer.eps, reducer=mode.reducer,
                                  residual=args[1] if a["residual"] else None, keep=mode.keep,
                                  overwrite_input=a.get("overwrite_input", False), workspace=mode.workspace,
                                  **extra)


def train_backward(node, ctx, dout, need_dx: bool, into, reuse: bool = False):
    layer = node.layer
    if not node.attrs:
        dx, grads = layer.backward(ctx, dout, need_dx=need_dx, into=into)
        return [dx], grads
    dx, grads = batch_norm_act.backward(ctx, dout, grads_out=into, reuse=reuse)
    grads = deliver({key: grads[key] for key in layer.params}, into, layer.kind)
    return (list(dx) if node.attrs["residual"] else [dx]), grads


register_kind(Kind("batchnorm", BatchNorm, role="norm", onnx=onnx_batchnorm, train_forward=train_forward,
                   train_backward=train_backward, makes_columns=True))
