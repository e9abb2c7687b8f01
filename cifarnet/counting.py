"""A stand-in for a device array module that runs on NumPy and counts host read-backs.

On a GPU every read of a device array's values by the host (``float(a)``, ``bool(a)``,
``a.item()``, ``a.get()``/``to_numpy(a)``) waits for the device: a synchronisation. To count them
without a GPU, :func:`counting_backend` gives a backend whose module is named ``cupy`` (so ops
take the path a CuPy array takes: the reference variants, no thread split) and whose arrays are
:class:`DeviceArray`, NumPy arrays that count every such read in their module's
:attr:`CountingModule.readbacks`. Moving data to the backend (``asarray``) is counted in
``uploads``.
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np


class DeviceArray(np.ndarray):
    """A NumPy array standing for one on a device: reading its values on the host is counted."""

    __cifarnet_module__: CountingModule

    def _read(self):
        self.__cifarnet_module__.readbacks += 1
        return self.view(np.ndarray)

    def __getitem__(self, key):
        out = super().__getitem__(key)               # one element stays on the device, as in CuPy
        return out if isinstance(out, np.ndarray) else self.__cifarnet_module__.device(np.asarray(out))

    def get(self) -> np.ndarray:
        """The values on the host (CuPy's ``ndarray.get``): one read-back."""
        return self._read().copy()

    def __float__(self) -> float:
        return float(self._read())

    def __int__(self) -> int:
        return int(self._read())

    def __bool__(self) -> bool:
        return bool(self._read())

    def __index__(self) -> int:
        return self._read().__index__()

    def item(self, *args):
        return self._read().item(*args)

    def tolist(self):
        return self._read().tolist()


class CountingModule(types.ModuleType):
    """NumPy, as a module whose array-making functions return :class:`DeviceArray`; counts read-backs
    (``readbacks``) and transfers to the device (``uploads``)."""

    def __init__(self):
        super().__init__("cupy", "a counting stand-in for a device array module (cifarnet.counting)")
        self.readbacks = self.uploads = 0
        self.ndarray = type("DeviceArray", (DeviceArray,), {"__cifarnet_module__": self})

    def device(self, a):
        """``a`` (an array) as this module's array, without copying or counting."""
        return np.asarray(a).view(self.ndarray)

    def asarray(self, a, dtype=None):
        if not isinstance(a, self.ndarray):
            self.uploads += 1
        return self.device(np.asarray(a.view(np.ndarray) if isinstance(a, np.ndarray) else a, dtype=dtype))

    def __getattr__(self, name: str) -> Any:
        value = getattr(np, name)
        if not callable(value) or isinstance(value, type):
            return value

        def on_device(*args, **kwargs):
            out = value(*args, **kwargs)
            return self.device(out) if isinstance(out, np.ndarray) and not isinstance(out, self.ndarray) else out

        return on_device

    def reset(self) -> None:
        self.readbacks = self.uploads = 0


def counting_backend():
    """A :class:`cifarnet.backend.Backend` on a fresh :class:`CountingModule`."""
    from .backend import Backend

    return Backend("cupy", CountingModule())
