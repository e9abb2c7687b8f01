"""Slow, obvious loop implementations: the oracles the fast layers are checked against."""
from __future__ import annotations

import numpy as np


def conv2d_loops(x, W, b, stride, padding):
    """Direct convolution. x (N, H, W, C_in), W (KH, KW, C_in, C_out) -> (N, Ho, Wo, C_out)."""
    n, h, w, _ = x.shape
    kh, kw, _, c_out = W.shape
    xp_ = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    out = np.zeros((n, ho, wo, c_out))
    for i in range(ho):
        for j in range(wo):
            patch = xp_[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]   # N, KH, KW, C_in
            for o in range(c_out):
                out[:, i, j, o] = (patch * W[:, :, :, o]).sum(axis=(1, 2, 3))
    if b is not None:
        out += b
    return out


def conv2d_backward_loops(x, W, dout, stride, padding):
    """Gradients (dx, dW, db) of :func:`conv2d_loops`, accumulated window by window."""
    n, h, w, _ = x.shape
    kh, kw, _, c_out = W.shape
    xp_ = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dxp = np.zeros_like(xp_, dtype=np.float64)
    dW = np.zeros(W.shape)
    _, ho, wo, _ = dout.shape
    for i in range(ho):
        for j in range(wo):
            hs, ws = i * stride, j * stride
            patch = xp_[:, hs:hs + kh, ws:ws + kw, :]
            for o in range(c_out):
                g = dout[:, i, j, o][:, None, None, None]                           # N, 1, 1, 1
                dW[:, :, :, o] += (patch * g).sum(axis=0)
                dxp[:, hs:hs + kh, ws:ws + kw, :] += W[:, :, :, o] * g
    dx = dxp[:, padding:padding + h, padding:padding + w, :]
    return dx, dW, dout.sum(axis=(0, 1, 2))


def maxpool_loops(x, k, stride):
    """Direct max pooling and its gradient routing. Returns (out, argmax positions)."""
    n, h, w, c = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, ho, wo, c))
    where = {}
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    patch = x[b, i * stride:i * stride + k, j * stride:j * stride + k, ch]
                    a = int(np.argmax(patch))
                    out[b, i, j, ch] = patch.flat[a]
                    where[b, i, j, ch] = (i * stride + a // k, j * stride + a % k)
    return out, where


def maxpool_backward_loops(x, dout, k, stride):
    """Gradient of :func:`maxpool_loops`: each output's gradient added at its arg-max."""
    _, where = maxpool_loops(x, k, stride)
    dx = np.zeros(x.shape)
    for (b, i, j, ch), (r, s) in where.items():
        dx[b, r, s, ch] += dout[b, i, j, ch]
    return dx
