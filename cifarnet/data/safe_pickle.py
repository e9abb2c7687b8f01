"""Unpickling that admits only what CIFAR batch files contain.

A pickle can name any importable callable and have it run while loading, so an untrusted batch
file could execute code. :func:`load_restricted` resolves only NumPy's array reconstruction
(``ndarray``, ``dtype``, ``_reconstruct``) and the ``_codecs.encode`` that Python-2-era pickles
use for byte strings; dicts, lists, bytes, strings and numbers need no lookup at all. Anything
else is refused before it can run.
"""
from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asked for something a CIFAR batch never contains."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: CIFAR batch files hold only NumPy arrays, "
                "lists, bytes, strings and numbers"
            ) from None


def load_restricted(source: str | Path | BinaryIO) -> Any:
    """Unpickle ``source`` (a path or binary file) with the allow-list above.

    ``encoding="bytes"`` keeps Python 2 strings as bytes, as the official CIFAR files expect.

    Raises:
        UnsafePickleError: the pickle references a callable outside the allow-list.
        pickle.UnpicklingError, EOFError, ...: the file is not a (complete) pickle.
    """
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    return _RestrictedUnpickler(source, encoding="bytes").load()
