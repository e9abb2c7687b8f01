"""A stand-in for a device array module that runs on NumPy and counts host read-backs and kernel
launches.

On a GPU every read of a device array's values by the host (``float(a)``, ``bool(a)``,
``a.item()``, ``a.get()``/``to_numpy(a)``) waits for the device: a synchronisation. To count them
without a GPU, :func:`counting_backend` gives a backend whose module is named ``cupy`` (so ops
take the path a CuPy array takes: the reference variants, no thread split) and whose arrays are
:class:`DeviceArray`, NumPy arrays that count every such read in their module's
:attr:`CountingModule.readbacks`. Moving data to the backend (``asarray``) is counted in
``uploads``.

**Launches.** On CuPy nearly every array call starts a kernel on the device, and at a few
microseconds of host time each, their number bounds a step's speed when the arrays are small.
The stand-in counts, in :attr:`CountingModule.launches` (and by op in :attr:`CountingModule.by_op`),
what would launch on CuPy, by these rules:

- a ufunc call, operator or in-place operator (``a + b``, ``a *= 2``, ``xp.exp(a)``, ``a @ b``): 1;
  a reduction (``a.sum()``, ``a.max(axis=0)``, ``xp.add.reduce``): 1;
- an array method that computes (``argmax``, ``argmin``, ``astype`` to another dtype, ``copy``,
  ``fill``, ``clip``, ``dot``, ``cumsum``, ``take``, ``repeat``), or copies to make a contiguous
  array (``reshape``/``ravel`` of a non-contiguous array): 1;
- indexing with arrays (gather) and any assignment into an array (``a[i] = b``, ``a[...] = b``): 1;
  basic slicing, views, ``transpose``, ``reshape`` of a contiguous array: 0;
- a module function that makes an array (``zeros``, ``concatenate``, ``stack``, ``pad``, ``where``,
  ``bincount``, ``matmul``, ``einsum``, ...): 1 for the call, whatever it does inside; ``empty``,
  ``empty_like`` and views (``ascontiguousarray`` of a contiguous array): 0; ``asarray`` from the host:
  an upload, not a launch.

A call is attributed to the op it runs in (the nearest :class:`cifarnet.functional.dispatch.Op`
method on the stack, e.g. ``batch_norm.backward``), else to the file that made it
(``optim/...``, ``training/step.py``). The rules are a model of CuPy, not CuPy itself: a fused
kernel counts 1 because it is one call here, and a CuPy routine that launches two kernels counts 1.
"""
from __future__ import annotations

import sys
import types
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


class DeviceArray(np.ndarray):
    """A NumPy array standing for one on a device: reading its values on the host is counted, and so is
    every call that would launch a kernel (see the module docstring)."""

    __cifarnet_module__: CountingModule

    def _read(self):
        self.__cifarnet_module__.readbacks += 1
        return self.view(np.ndarray)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        module = self.__cifarnet_module__
        module.launch(ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        host = [i.view(np.ndarray) if isinstance(i, DeviceArray) else i for i in inputs]
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, DeviceArray) else o for o in out)
        with module.quiet():
            result = getattr(ufunc, method)(*host, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        if isinstance(result, tuple):
            return tuple(module.device(r) if isinstance(r, np.ndarray) else r for r in result)
        return module.device(np.asarray(result)) if isinstance(result, (np.ndarray, np.generic)) else result

    def __getitem__(self, key):
        module = self.__cifarnet_module__
        if _gathers(key):
            module.launch("gather")
        with module.quiet():
            out = super().__getitem__(key)               # one element stays on the device, as in CuPy
        return out if isinstance(out, np.ndarray) else module.device(np.asarray(out))

    def __setitem__(self, key, value):
        module = self.__cifarnet_module__
        module.launch("scatter" if _gathers(key) else "copy")
        with module.quiet():
            super().__setitem__(key, value.view(np.ndarray) if isinstance(value, DeviceArray) else value)

    def fill(self, value) -> None:
        self.__cifarnet_module__.launch("fill")
        self.view(np.ndarray).fill(value)

    def astype(self, dtype, *args, **kwargs):
        module = self.__cifarnet_module__
        if np.dtype(dtype) == self.dtype and kwargs.get("copy", True) is False:
            return self
        module.launch("astype")
        return module.device(self.view(np.ndarray).astype(dtype, *args, **kwargs))

    def reshape(self, *shape, **kwargs):
        module = self.__cifarnet_module__
        out = self.view(np.ndarray).reshape(*shape, **kwargs)
        if not np.shares_memory(out, self.view(np.ndarray)):
            module.launch("copy")                          # NumPy copied: CuPy would too
        return module.device(out)

    def ravel(self, order="C"):
        return self.reshape(-1, order=order)

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


def _computed(name: str):
    """A :class:`DeviceArray` method that computes on the device: one launch."""
    def method(self, *args, **kwargs):
        module = self.__cifarnet_module__
        module.launch(name)
        with module.quiet():
            out = getattr(np.ndarray, name)(self.view(np.ndarray), *args, **kwargs)
        return module.device(np.asarray(out)) if isinstance(out, (np.ndarray, np.generic)) else out
    method.__name__ = name
    return method


for _name in ("argmax", "argmin", "copy", "clip", "dot", "cumsum", "take", "repeat"):
    setattr(DeviceArray, _name, _computed(_name))


def _gathers(key) -> bool:
    """Whether indexing with ``key`` reads through index arrays (a kernel) rather than making a view."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (np.ndarray, list)) for k in keys)


_FREE = {"empty", "empty_like", "shape", "ndim", "result_type", "dtype", "broadcast_shapes", "iscomplexobj",
         "may_share_memory", "shares_memory", "get_array_module"}
_VIEWS = {"ascontiguousarray", "asarray", "reshape", "transpose", "moveaxis", "swapaxes", "expand_dims", "squeeze",
          "broadcast_to", "ravel"}


class CountingModule(types.ModuleType):
    """NumPy, as a module whose array-making functions return :class:`DeviceArray`; counts read-backs
    (``readbacks``), transfers to the device (``uploads``) and kernel launches (``launches``, and by op
    and call in ``by_op``: ``{"batch_norm.backward": {"multiply": 12, ...}, ...}``)."""

    def __init__(self):
        super().__init__("cupy", "a counting stand-in for a device array module (cifarnet.counting)")
        self.readbacks = self.uploads = self.launches = 0
        self.by_op: dict[str, dict[str, int]] = {}
        self._quiet = 0
        self.ndarray = type("DeviceArray", (DeviceArray,), {"__cifarnet_module__": self})

    def device(self, a):
        """``a`` (an array) as this module's array, without copying or counting."""
        return np.asarray(a).view(self.ndarray)

    @contextmanager
    def quiet(self):
        """Count nothing inside (the calls one counted call makes)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def launch(self, call: str) -> None:
        """Count one kernel launch for ``call``, under the op running it."""
        if self._quiet:
            return
        self.launches += 1
        where = self.by_op.setdefault(_current_op(), {})
        where[call] = where.get(call, 0) + 1

    def asarray(self, a, dtype=None):
        if isinstance(a, self.ndarray):
            return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
        self.uploads += 1
        return self.device(np.asarray(a.view(np.ndarray) if isinstance(a, np.ndarray) else a, dtype=dtype))

    def may_share_memory(self, a, b, max_work=None) -> bool:
        """As NumPy's, but for arrays only, as CuPy's: CuPy's takes two ``cupy.ndarray`` and, given
        None, crashes the process (a segmentation fault, seen on an H200 with CuPy 14.2); here
        anything else is a TypeError, so the CPU tests catch such a call."""
        _arrays_only("may_share_memory", a, b)
        return bool(np.may_share_memory(a, b, max_work=max_work))

    def shares_memory(self, a, b, max_work=None) -> bool:
        """As NumPy's, for arrays only (see :meth:`may_share_memory`)."""
        _arrays_only("shares_memory", a, b)
        return bool(np.shares_memory(a, b, max_work=max_work))

    def __getattr__(self, name: str) -> Any:
        value = getattr(np, name)
        if not callable(value) or isinstance(value, type):
            return value
        if isinstance(value, np.ufunc):
            return value                                  # counted by DeviceArray.__array_ufunc__

        def on_device(*args, **kwargs):
            host = [a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args]
            hkw = {k: (v.view(np.ndarray) if isinstance(v, DeviceArray) else v) for k, v in kwargs.items()}
            with self.quiet():
                out = value(*host, **hkw)
            first = host[0] if host else None
            made = isinstance(out, np.ndarray) and not (
                name in _FREE or (name in _VIEWS and isinstance(first, np.ndarray) and np.shares_memory(out, first)))
            if made:
                self.launch(name)
            if isinstance(out, tuple):
                return tuple(self.device(o) if isinstance(o, np.ndarray) else o for o in out)
            return self.device(out) if isinstance(out, np.ndarray) else out

        return on_device

    def reset(self) -> None:
        self.readbacks = self.uploads = self.launches = 0
        self.by_op = {}

    def table(self) -> list[tuple[str, int]]:
        """``(op, launches)``, most first."""
        return sorted(((op, sum(calls.values())) for op, calls in self.by_op.items()), key=lambda r: -r[1])


PACKAGE = str(Path(__file__).resolve().parent)


def _arrays_only(name: str, *args) -> None:
    for a in args:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} on the device takes arrays only, got {type(a).__name__} "
                            "(CuPy's crashes the process on None)")


def _current_op() -> str:
    """The op whose method is running (``name.forward``), else the cifarnet file that called
    (relative to the package), else ``"?"``."""
    frame = sys._getframe(2)
    caller = None
    while frame is not None:
        code = frame.f_code
        if code.co_filename.endswith("dispatch.py") and code.co_name in ("forward", "backward", "apply"):
            op = frame.f_locals.get("self")
            if op is not None:
                return f"{op.name}.{code.co_name}"
        if caller is None and code.co_filename.startswith(PACKAGE) and code.co_filename != __file__:
            caller = Path(code.co_filename).relative_to(PACKAGE).as_posix()
        frame = frame.f_back
    return caller or "?"


def counting_backend():
    """A :class:`cifarnet.backend.Backend` on a fresh :class:`CountingModule`."""
    from .backend import Backend

    return Backend("cupy", CountingModule())
