"""im2col and col2im for NHWC convolutions with zero padding, one launch each.

Shapes: x, dx ``(N, H, W, C)``; cols, dcols ``(N*Ho*Wo, KH*KW*C)``, row ``(n, oh, ow)`` holding the
window at output ``(oh, ow)`` of image ``n`` in ``(a, b, c)`` order (:func:`cifarnet.arrays.windows.
gather_patches`'s layout); ``Ho = (H + 2*pad - KH) // stride + 1``.
"""
from __future__ import annotations

import numpy as np

from .base import Kernel

COLUMN_SOURCE = r'''
/* the input element that entry i of the column matrix reads: its index in x, or -1 in the padding;
   *tap = a * kw + b, the kernel offset of the entry */
__device__ __forceinline__ long column_source(long i, long h, long w, long c, long kh, long kw, long stride,
                                             long pad, long ho, long wo, long* tap) {
    long ci = i % c, t = i / c;
    long b = t % kw; t /= kw;
    long a = t % kh; t /= kh;
    long ow = t % wo; t /= wo;
    long oh = t % ho;
    long img = t / ho;
    long y = oh * stride - pad + a, xx = ow * stride - pad + b;
    *tap = a * kw + b;
    return (y >= 0 && y < h && xx >= 0 && xx < w) ? ((img * h + y) * w + xx) * c + ci : -1;
}
'''

IM2COL = COLUMN_SOURCE + r'''
extern "C" __global__ void im2col(const real* x, real* cols, long n, long h, long w, long c, long kh, long kw,
                                  long stride, long pad, long ho, long wo) {
    long total = n * ho * wo * kh * kw * c;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)blockDim.x * gridDim.x) {
        long tap;
        long src = column_source(i, h, w, c, kh, kw, stride, pad, ho, wo, &tap);
        cols[i] = src >= 0 ? x[src] : (real)0;
    }
}
'''


def im2col_twin(x, cols, n, h, w, c, kh, kw, stride, pad, ho, wo) -> None:
    """``cols`` = every window of the zero-padded ``x``."""
    padded = np.pad(x.reshape(n, h, w, c), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    view = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(1, 2))    # N, H', W', C, KH, KW
    windows = view[:, :stride * (ho - 1) + 1:stride, :stride * (wo - 1) + 1:stride]     # N, Ho, Wo, C, KH, KW
    cols.reshape(n, ho, wo, kh, kw, c)[...] = windows.transpose(0, 1, 2, 4, 5, 3)


im2col = Kernel("im2col", IM2COL, im2col_twin)

COL2IM = r'''
extern "C" __global__ void col2im(const real* dcols, real* dx, long n, long h, long w, long c, long kh, long kw,
                                  long stride, long pad, long ho, long wo, long add) {
    long total = n * h * w * c;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)blockDim.x * gridDim.x) {
        long ci = i % c, t = i / c;
        long xx = t % w; t /= w;
        long y = t % h;
        long img = t / h;
        real sum = 0;
        for (long a = 0; a < kh; ++a) {                       /* windows in (a, b) order, as the twin adds them */
            long ty = y + pad - a;
            if (ty < 0 || ty % stride != 0 || ty / stride >= ho) continue;
            for (long b = 0; b < kw; ++b) {
                long tx = xx + pad - b;
                if (tx < 0 || tx % stride != 0 || tx / stride >= wo) continue;
                sum += dcols[((((img * ho + ty / stride) * wo + tx / stride) * kh + a) * kw + b) * c + ci];
            }
        }
        dx[i] = add ? dx[i] + sum : sum;                      /* add: onto the gradient dx already holds */
    }
}
'''


def col2im_twin(dcols, dx, n, h, w, c, kh, kw, stride, pad, ho, wo, add) -> None:
    """``dx`` = the window gradients summed back onto the (unpadded) image, window offsets in order;
    with ``add``, that sum added to what ``dx`` holds."""
    windows = dcols.reshape(n, ho, wo, kh, kw, c)
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=dx.dtype)
    h_span, w_span = stride * (ho - 1) + 1, stride * (wo - 1) + 1
    for a in range(kh):
        for b in range(kw):
            padded[:, a:a + h_span:stride, b:b + w_span:stride, :] += windows[:, :, :, a, b, :]
    image = dx.reshape(n, h, w, c)
    if add:
        image += padded[:, pad:pad + h, pad:pad + w, :]
    else:
        image[...] = padded[:, pad:pad + h, pad:pad + w, :]


col2im = Kernel("col2im", COL2IM, col2im_twin)
