"""Fused CUDA kernels for the CuPy path, each beside the NumPy twin it is checked against.

A :class:`Kernel` is one CUDA C ``__global__`` function (source in the module that defines it,
written for the element type ``real``) and its *twin*: a NumPy function with the same inputs and
outputs that computes the same thing in the same order where order decides rounding. On CuPy arrays
a call launches the kernel (``cupy.RawKernel``, compiled by NVRTC on first use); on NumPy arrays it
runs the twin, so the fused variants (:mod:`cifarnet.functional.fused`) run, and are checked by the
variant harness, on the CPU; on the counting stand-in (:mod:`cifarnet.counting`) it runs the twin and
counts one launch. :func:`compile_report` compiles a source with NVRTC for a GPU architecture
without needing a GPU (registers, spills, errors). ``tests/cuda_shim.py`` runs the sources
themselves on the CPU (one thread per block), against the twins.

Kernels: :mod:`.windows` (im2col, col2im for NHWC convolutions), :mod:`.batchnorm` (per-channel
statistics with the running update, normalisation, gradient sums, input gradient), :mod:`.relu`,
:mod:`.batchnorm_act` (batch norm's output pass and gradients through a ReLU or GELU, with a residual
before a ReLU); :mod:`.gelu_form` holds GELU's constants.
"""
from __future__ import annotations

from .base import KERNELS, Kernel, KernelCompileError, compile_report

__all__ = ["KERNELS", "Kernel", "KernelCompileError", "compile_report"]
