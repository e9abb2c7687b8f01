"""One suite for both backends: the ``backend`` fixture runs each test on NumPy and on CuPy.

CuPy cases are skipped, with the reason, where CuPy or a GPU is missing.
"""
import numpy as np
import pytest

from cifarnet.backend import NUMPY, cupy_available, get_backend

_CUPY_OK, _CUPY_WHY = cupy_available()


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.cupy)])
def backend(request):
    """The backend under test; CuPy is skipped with the reason where it cannot run."""
    if request.param == "cupy":
        if not _CUPY_OK:
            pytest.skip(f"CuPy backend unavailable: {_CUPY_WHY}")
        return get_backend("cupy")
    return NUMPY


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
