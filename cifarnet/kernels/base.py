"""The :class:`Kernel`: a CUDA source, its launch shape and its NumPy twin (see the package docstring)."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

THREADS = 256                  # threads per block
MAX_BLOCKS = 4096              # grid-stride kernels loop over what a grid of this many blocks does not cover
KERNELS: dict[str, Kernel] = {}


class KernelCompileError(RuntimeError):
    """NVRTC rejected a kernel's source (the message holds its log)."""


@dataclass
class Kernel:
    """``name``: the ``extern "C" __global__`` function in ``source`` (CUDA C, element type ``real``);
    ``twin(*args)``: NumPy, the same arguments (arrays written in place, as the kernel writes them);
    ``per_block``: one block per item of ``args[grid_arg]``'s first axis length (a block per
    channel) instead of a grid-stride loop over ``size`` elements."""

    name: str
    source: str
    twin: Callable[..., None]
    per_block: bool = False
    _compiled: dict[Any, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not re.search(rf'extern "C" __global__ void {self.name}\(', self.source):
            raise ValueError(f"kernel {self.name}: its source has no extern \"C\" __global__ void {self.name}(...)")
        KERNELS[self.name] = self

    def code(self, dtype) -> str:
        """The source for ``dtype`` (float32: ``float``, float64: ``double``)."""
        return f"typedef {ctype(dtype)} real;\n{self.source}"

    def __call__(self, xp, work: int, *args) -> None:
        """Launch on ``xp``'s arrays: ``work`` elements (grid-stride) or blocks (``per_block``)."""
        if xp.__name__ != "cupy" or not hasattr(xp, "RawKernel"):
            launch = getattr(xp, "launch", None)                 # the counting stand-in: one launch
            if launch is not None:
                launch(self.name)
                with xp.quiet():
                    self.twin(*(a.view(np.ndarray) if isinstance(a, np.ndarray) else a for a in args))
                return
            self.twin(*args)
            return
        dtype = next(a.dtype for a in args if hasattr(a, "dtype") and a.dtype.kind == "f")
        kernel = self._compiled.get(dtype)
        if kernel is None:
            kernel = self._compiled[dtype] = xp.RawKernel(self.code(dtype), self.name)
        blocks = work if self.per_block else max(1, min(MAX_BLOCKS, -(-work // THREADS)))
        kernel((blocks,), (THREADS,), tuple(_scalar(a, dtype) for a in args))


def ctype(dtype) -> str:
    return {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[np.dtype(dtype)]


def _scalar(a, dtype):
    """Kernel arguments: arrays as they are, Python ints as 64-bit, Python floats as the element type."""
    if isinstance(a, bool):
        return np.int64(a)
    if isinstance(a, int):
        return np.int64(a)
    if isinstance(a, float):
        return np.dtype(dtype).type(a)
    return a


def compile_report(kernel: Kernel, arch: str = "sm_80", dtype=np.float32) -> dict[str, Any]:
    """Compile ``kernel`` for ``arch`` with NVRTC (CuPy's bindings and the CUDA NVRTC wheel; no GPU
    needed). Returns ``{"kernel", "arch", "dtype", "registers", "spill_stores", "spill_loads",
    "log"}``; raises :class:`KernelCompileError` with NVRTC's log if it does not compile."""
    from cupy.cuda import nvrtc

    program = nvrtc.createProgram(kernel.code(dtype), f"{kernel.name}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", "-Xptxas=-v"])
        except Exception as err:  # noqa: BLE001 - NVRTC's own error type; its log says why
            raise KernelCompileError(f"{kernel.name} ({arch}, {ctype(dtype)}) does not compile:\n"
                               f"{nvrtc.getProgramLog(program)}") from err
        log = nvrtc.getProgramLog(program)
    finally:
        nvrtc.destroyProgram(program)

    def number(pattern: str) -> int:
        found = re.search(pattern, log)
        return int(found.group(1)) if found else 0

    return {"kernel": kernel.name, "arch": arch, "dtype": ctype(dtype), "registers": number(r"Used (\d+) registers"),
            "spill_stores": number(r"(\d+) bytes spill stores"), "spill_loads": number(r"(\d+) bytes spill loads"),
            "log": log.strip()}
