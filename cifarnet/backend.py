"""The one place that knows about array modules: NumPy on the CPU, CuPy on a GPU.

The backend is always chosen explicitly (``get_backend("numpy")`` or ``get_backend("cupy")``);
nothing is detected or printed at import time. Layer, loss and optimizer code never imports
NumPy or CuPy for its math: it asks :func:`array_module` for the module that owns its input and
calls that ``xp``. Data loading and checkpoint I/O work in NumPy and cross to the backend through
:meth:`Backend.asarray` and back through :func:`to_numpy`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .errors import CifarnetError, InvalidValue

BACKEND_NAMES = ("numpy", "cupy")


class BackendUnavailable(CifarnetError, RuntimeError):
    """Raised when the requested backend cannot run on this machine."""


@dataclass(frozen=True)
class Backend:
    """A named array module.

    Attributes:
        name: ``"numpy"`` or ``"cupy"``.
        xp: the module itself (``numpy`` or ``cupy``).
    """

    name: str
    xp: ModuleType

    def asarray(self, a: Any, dtype: Any = None):
        """Return ``a`` as an array of this backend (a copy only where the device differs)."""
        if self.name == "numpy":
            return np.asarray(to_numpy(a), dtype=dtype)
        return self.xp.asarray(a, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on NumPy); use before reading a clock."""
        if self.name == "cupy":
            self.xp.cuda.Device().synchronize()

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


NUMPY = Backend("numpy", np)


def _load_cupy() -> ModuleType:
    try:
        import cupy
    except ImportError as err:
        raise BackendUnavailable(
            "backend 'cupy' was requested but CuPy is not installed "
            f"({err}). Install the wheel for your CUDA version, e.g. "
            "pip install 'cifarnet[cuda12]' (cupy-cuda12x) or 'cifarnet[cuda13]' "
            "(cupy-cuda13x), or choose backend=numpy."
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError, driver missing, ...
        raise BackendUnavailable(
            "backend 'cupy' was requested and CuPy is installed, but no GPU is visible "
            f"({type(err).__name__}: {err}). Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, "
            "or choose backend=numpy."
        ) from None
    if count == 0:
        raise BackendUnavailable(
            "backend 'cupy' was requested and CuPy is installed, but no GPU is visible "
            "(0 CUDA devices). Check the NVIDIA driver and CUDA_VISIBLE_DEVICES, "
            "or choose backend=numpy."
        )
    return cupy


def get_backend(name: str) -> Backend:
    """Return the backend called ``name``; fail at once if it cannot run here.

    Raises:
        ValueError: ``name`` is not one of :data:`BACKEND_NAMES`.
        BackendUnavailable: ``"cupy"`` without CuPy installed or without a visible GPU.
    """
    if name == "numpy":
        return NUMPY
    if name == "cupy":
        return Backend("cupy", _load_cupy())
    raise InvalidValue(f"unknown backend {name!r}; known backends: {', '.join(BACKEND_NAMES)}")


def use_tf32(backend: Backend, allowed: bool) -> None:
    """Let CuPy's float32 matrix products (every convolution and linear layer's) run on tensor cores
    in TF32 when ``allowed``: inputs rounded to a 10-bit mantissa, products summed in float32
    (cuBLAS ``CUBLAS_COMPUTE_32F_FAST_TF32``; NVIDIA Ampere and later, where CuPy otherwise warns
    and stays in float32). Plain float32 when not. A process-wide setting of CuPy's products, as
    PyTorch's ``torch.backends.cuda.matmul.allow_tf32``; float64 is never affected.

    Raises:
        InvalidValue: ``allowed`` on NumPy (the CPU has no TF32).
    """
    if backend.name != "cupy":
        if allowed:
            raise InvalidValue("TF32 is a mode of NVIDIA tensor cores: it needs the CuPy backend")
        return
    from cupy._core import _routines_linalg as linalg      # CuPy's own switch (what CUPY_TF32=1 sets)

    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if allowed else linalg.COMPUTE_TYPE_DEFAULT)


def cupy_available() -> tuple[bool, str]:
    """Whether the CuPy backend can run here, and if not, a short reason (for skipping tests)."""
    try:
        _load_cupy()
    except BackendUnavailable as err:
        return False, "CuPy is not installed" if "not installed" in str(err) else "no GPU is visible"
    return True, ""


def array_module(x: Any) -> ModuleType:
    """The module (``numpy`` or ``cupy``) that owns array ``x``.

    CuPy is consulted only if it has already been imported, so NumPy-only work never imports it.
    """
    owner = getattr(x, "__cifarnet_module__", None)         # a stand-in device array (cifarnet.counting)
    if owner is not None:
        return owner
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


def to_numpy(a: Any) -> np.ndarray:
    """Copy a backend array to host memory as a NumPy array (no copy for NumPy input)."""
    if getattr(a, "__cifarnet_module__", None) is not None:
        return a.get()
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy.asnumpy(a)
    return np.asarray(a)


def backend_of(x: Any) -> Backend:
    """The :class:`Backend` that owns array ``x``."""
    xp = array_module(x)
    return NUMPY if xp is np else Backend("cupy", xp)
