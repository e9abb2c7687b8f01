"""A patch-whitening convolution whose filters come from the training data (airbench's first layer).

Before training, :meth:`Whitening.fit` takes images, collects every ``k x k`` patch (all
``k*k*C`` values of it, in the convolution weight's ``(KH, KW, C_in)`` order), and computes the
eigen-decomposition ``V diag(L) V^T`` of the patches' second-moment matrix ``P^T P / n`` (not
centred, as in airbench). The filters are ``V / sqrt(L + eps)``, largest eigenvalue first, then
their negatives: ``2 k*k*C`` output channels that decorrelate the patch values and scale each
direction to about unit variance. The filters are a buffer (saved in checkpoints, never trained);
the bias is a parameter.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays.rows import channel_sums, rows
from ..arrays.windows import output_size
from ..backend import array_module, backend_of, to_numpy
from ..errors import InvalidValue
from ..functional import conv2d
from ..functional.destination import target
from .base import EVAL, Layer, Mode, Shape, deliver
from .conv import infer_conv, onnx_conv
from .kinds import Kind, register_kind


def patch_moments(images: np.ndarray, k: int) -> np.ndarray:
    """``P^T P / n`` of all ``k x k`` patches (stride 1, no padding) of ``images``.

    Shapes: images ``(N, H, W, C)`` -> ``(k*k*C, k*k*C)``, patch values ordered (KH, KW, C).
    """
    x = np.asarray(images, dtype=np.float64)
    n, h, w, c = x.shape
    ho, wo = h - k + 1, w - k + 1
    patches = np.stack([x[:, i:i + ho, j:j + wo, :] for i in range(k) for j in range(k)], axis=3)
    flat = patches.reshape(-1, k * k * c)                       # (N*Ho*Wo, k*k*C), (KH, KW, C) order
    return flat.T @ flat / flat.shape[0]


def whitening_filters(moments: np.ndarray, k: int, channels: int, eps: float) -> np.ndarray:
    """The ``(k, k, C, 2*k*k*C)`` filters ``[V / sqrt(L + eps), -V / sqrt(L + eps)]`` of a second-moment
    matrix, eigenvectors in decreasing order of eigenvalue."""
    values, vectors = np.linalg.eigh(moments)                   # ascending
    values, vectors = values[::-1], vectors[:, ::-1]
    scaled = vectors / np.sqrt(values + eps)                    # column j: filter j
    return np.concatenate([scaled, -scaled], axis=1).reshape(k, k, channels, -1)


class Whitening(Layer):
    """Convolution ``k x k`` (no padding, stride 1) by fixed whitening filters, plus a trained bias.

    Shapes:
        x:   ``(N, H, W, C)``
        W:   ``(k, k, C, 2*k*k*C)``, a buffer set by :meth:`fit` (zeros until then)
        b:   ``(2*k*k*C,)``, a parameter (zeros at first)
        out: ``(N, H-k+1, W-k+1, 2*k*k*C)``
    """

    kind = "whitening"
    stride, padding = 1, 0

    def __init__(self, in_channels: int, kernel_size: int = 2, eps: float = 5e-4, *, dtype: Any = np.float32):
        super().__init__()
        if in_channels < 1 or kernel_size < 1 or eps < 0:
            raise InvalidValue(f"Whitening needs in_channels, kernel_size >= 1 and eps >= 0; "
                             f"got {in_channels}, {kernel_size}, {eps}")
        self.in_channels, self.k, self.eps = in_channels, kernel_size, eps
        self.kernel_size = (kernel_size, kernel_size)
        self.out_channels = 2 * kernel_size * kernel_size * in_channels
        self.buffers["W"] = np.zeros((kernel_size, kernel_size, in_channels, self.out_channels), dtype=dtype)
        self.params["b"] = np.zeros(self.out_channels, dtype=dtype)

    @classmethod
    def build(cls, in_shape: Shape, rng, dtype, **options) -> Whitening:
        if len(in_shape) != 3:
            raise InvalidValue(f"whitening expects (H, W, C) inputs, got shape {in_shape}")
        return cls(in_shape[-1], dtype=dtype, **options)

    def output_shape(self, in_shape: Shape) -> Shape:
        h, w, _ = in_shape
        return (output_size(h, self.k, 1, 0), output_size(w, self.k, 1, 0), self.out_channels)

    def fit(self, images) -> None:
        """Set the filters from ``images`` ``(N, H, W, C)`` (normalised, as the model sees them)."""
        if images.ndim != 4 or images.shape[-1] != self.in_channels:
            raise InvalidValue(f"Whitening.fit expects (N, H, W, {self.in_channels}) images, got {images.shape}")
        filters = whitening_filters(patch_moments(to_numpy(images), self.k), self.k, self.in_channels, self.eps)
        W = self.buffers["W"]
        W[...] = backend_of(W).asarray(filters, dtype=W.dtype)

    def forward(self, x, mode: Mode = EVAL):
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"Whitening expects (N, H, W, {self.in_channels}) input, got {x.shape}")
        return conv2d.forward(x, self.buffers["W"], self.params["b"], stride=1, padding=0, keep=mode.keep,
                              workspace=mode.workspace)

    def backward(self, ctx, dout, need_dx: bool = True, into=None):
        """The bias gradient (the filters do not train), and the input gradient if asked for; as the
        first layer it is not, and the bias gradient is a sum over the batch's pixels, taken over
        rows of ``W*C`` values (:func:`cifarnet.arrays.rows.channel_sums`): summed over the three
        leading axes at once, CuPy reduced the 24 channels in 24 blocks, 11.8 ms of a 50 ms airbench94
        step on an H200 (NumPy: 17 -> 4.8 ms at 512 images)."""
        if not need_dx:
            xp = array_module(dout)
            sums = channel_sums(rows(xp.ascontiguousarray(dout)), dout.shape[-1], out=target(into, "b"))
            return None, deliver({"b": sums}, into, self.kind)
        dx, grads = conv2d.backward(ctx, dout, need_dx=True, grads_out=None if into is None else {"b": into["b"]})
        return dx, deliver({"b": grads["b"]}, into, self.kind)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.k}, eps={self.eps}"


register_kind(Kind("whitening", Whitening, role="folds_norm", infer=infer_conv, onnx=onnx_conv))
