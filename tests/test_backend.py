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
