"""How many threads NumPy's BLAS (OpenBLAS) uses, read and set at run time through ctypes.

NumPy has no API for this. OpenBLAS exports ``openblas_get_num_threads`` and
``openblas_set_num_threads``; the build that NumPy's wheels bundle prefixes them with ``scipy_``
and suffixes them with ``64_``. The library is found among the shared objects this process has
mapped (Linux). Where no OpenBLAS is found (another BLAS, another platform) nothing can be read or
set, and callers fall back to leaving BLAS alone.
"""
from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator

_NAMES = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
          ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
          ("openblas_get_num_threads", "openblas_set_num_threads"))
_state: dict[str, object] = {}


def _functions():
    """``(get, set)`` ctypes functions of the loaded OpenBLAS, or None."""
    if "functions" in _state:
        return _state["functions"]
    found = None
    try:
        import numpy  # noqa: F401  (makes sure NumPy's BLAS is loaded)

        with open("/proc/self/maps") as f:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
        for path in paths:
            lib = ctypes.CDLL(path)
            for get_name, set_name in _NAMES:
                if hasattr(lib, get_name) and hasattr(lib, set_name):
                    get, set_ = getattr(lib, get_name), getattr(lib, set_name)
                    get.restype, set_.argtypes = ctypes.c_int, (ctypes.c_int,)
                    found = (get, set_)
                    break
            if found:
                break
    except OSError:
        found = None
    _state["functions"] = found
    return found


def blas_threads() -> int | None:
    """Threads NumPy's OpenBLAS uses now, or None where it cannot be told."""
    functions = _functions()
    return None if functions is None else int(functions[0]())


@contextlib.contextmanager
def limited_blas_threads(threads: int) -> Iterator[bool]:
    """Run the block with OpenBLAS on ``threads`` threads, then restore the previous count.

    Yields whether the limit is in force (False where OpenBLAS cannot be controlled).
    """
    functions = _functions()
    if functions is None:
        yield False
        return
    get, set_ = functions
    before = int(get())
    set_(threads)
    try:
        yield True
    finally:
        set_(before)
