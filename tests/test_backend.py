"""The backend switch: explicit choice, clear failures, moves both ways."""
import subprocess
import sys

import numpy as np
import pytest

from cifarnet import backend as be


def test_numpy_backend():
    b = be.get_backend("numpy")
    assert b.xp is np and b.name == "numpy"
    a = b.asarray([1, 2, 3], dtype=np.float32)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    assert be.array_module(a) is np and be.to_numpy(a) is a


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match="unknown backend 'torch'; known backends: numpy, cupy"):
        be.get_backend("torch")


def test_cupy_missing_fails_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # makes `import cupy` raise ImportError
    with pytest.raises(be.BackendUnavailable, match=r"CuPy is not installed.*cifarnet\[cuda12\].*backend=numpy"):
        be.get_backend("cupy")


def test_cupy_without_gpu_says_so(monkeypatch):
    class FakeRuntime:
        @staticmethod
        def getDeviceCount():
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = type(sys)("cupy")
    fake.cuda = type(sys)("cupy.cuda")
    fake.cuda.runtime = FakeRuntime
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(be.BackendUnavailable, match="no GPU is visible.*cudaErrorNoDevice"):
        be.get_backend("cupy")


def test_importing_cifarnet_is_silent_and_does_not_import_cupy():
    code = ("import sys, cifarnet, cifarnet.models, cifarnet.optim, cifarnet.schedules, cifarnet.training; "
            "assert 'cupy' not in sys.modules and 'hydra' not in sys.modules, sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_model_moves_between_backends(backend):
    from cifarnet.models import build_model, model_description

    model = build_model(model_description("simplecnn")).to(backend)
    assert all(be.array_module(p) is backend.xp for _, p in model.named_parameters())
    assert all(be.array_module(b) is backend.xp for _, b in model.named_buffers())
    model.to(be.NUMPY)
    assert all(isinstance(p, np.ndarray) for _, p in model.named_parameters())


def test_tf32_rounds_cupy_float32_products_and_is_refused_on_numpy(backend, rng):
    """``use_tf32``: on CuPy (a GPU of compute capability 8.0 or later) a float32 product's inputs are
    rounded to TF32's 10-bit mantissa, about 1e-4 to 1e-3 from the float64 product, against about
    1e-6 in plain float32, and switching it off gives plain float32 back; float64 is untouched. On
    NumPy asking for it is an error and switching it off does nothing."""
    if backend.name == "numpy":
        with pytest.raises(ValueError, match="TF32 is a mode of NVIDIA tensor cores: it needs the CuPy backend"):
            be.use_tf32(backend, True)
        be.use_tf32(backend, False)
        return
    if int(backend.xp.cuda.Device().compute_capability) < 80:
        pytest.skip("TF32 needs compute capability 8.0 or later")
    a, b = rng.standard_normal((512, 256)), rng.standard_normal((256, 384))
    exact = a @ b

    def error(dtype) -> float:
        got = be.to_numpy(backend.asarray(a, dtype) @ backend.asarray(b, dtype))
        return float(np.abs(got - exact).max() / np.abs(exact).max())

    plain = error(np.float32)
    try:
        be.use_tf32(backend, True)
        rounded, double = error(np.float32), error(np.float64)
    finally:
        be.use_tf32(backend, False)
    assert plain < 1e-5 and 1e-4 < rounded < 1e-2 and double < 1e-12
    assert error(np.float32) < 1e-5                       # off again
