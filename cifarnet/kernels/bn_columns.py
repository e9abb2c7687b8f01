"""Batch norm's output pass with its activation, written as the column matrix of the convolution
that alone reads it: one launch where ``bn_apply_act`` and that convolution's ``im2col`` take two.

``bn_act_columns`` runs a thread per element of the column matrix ``cols`` ``(N*H*W, KH*KW*C)``
of a stride-1 convolution whose padding keeps the size (``2 * pad = KH - 1 = KW - 1``), in
:mod:`.windows`' layout: it normalises, scales, shifts and activates the input pixel the entry
reads (zero in the padding), and the entry of the centre tap, which reads every pixel once, also
writes the output ``out`` ``(N, H, W, C)`` that batch norm's backward takes the ReLU's slope from.
``activation``: 1 ReLU, 2 GELU (tanh form), as in :mod:`.batchnorm_act`.
"""
from __future__ import annotations

import numpy as np

from .base import Kernel
from .batchnorm_act import RELU, _bn_out, _gelu
from .gelu_form import GELU_A, GELU_C
from .windows import COLUMN_SOURCE, im2col_twin

BN_ACT_COLUMNS = COLUMN_SOURCE + r'''
extern "C" __global__ void bn_act_columns(const real* x, const real* mean, const real* invstd, const real* gamma,
                                          const real* beta, real* out, real* cols, long n, long h, long w, long c,
                                          long kh, long kw, long pad, long activation) {
    long total = n * h * w * kh * kw * c;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)blockDim.x * gridDim.x) {
        long tap;
        long src = column_source(i, h, w, c, kh, kw, 1, pad, h, w, &tap);
        if (src < 0) { cols[i] = (real)0; continue; }
        long ch = i % c;
        real v = (x[src] - mean[ch]) * invstd[ch] * gamma[ch] + beta[ch];
        if (activation == 1) {
            v = v > (real)0 ? v : (v != v ? v : (real)0);                  /* NaN passes through */
        } else {
            real th = tanh((real)GELU_C * (v + (real)GELU_A * v * v * v));
            v = (real)0.5 * v * ((real)1 + th);
        }
        cols[i] = v;
        if (tap == pad * kw + pad) out[src] = v;                           /* the centre tap: every pixel once */
    }
}
'''.replace("GELU_C", repr(GELU_C)).replace("GELU_A", repr(GELU_A))


def bn_act_columns_twin(x, mean, invstd, gamma, beta, out, cols, n, h, w, c, kh, kw, pad, activation) -> None:
    """``out`` = the activation of batch norm's output, ``cols`` = its column matrix."""
    y = _bn_out(x, mean, invstd, gamma, beta, c)
    out.reshape(-1, c)[...] = np.maximum(y, y.dtype.type(0)) if activation == RELU else _gelu(y)
    im2col_twin(out, cols, n, h, w, c, kh, kw, 1, pad, h, w)


bn_act_columns = Kernel("bn_act_columns", BN_ACT_COLUMNS, bn_act_columns_twin)
