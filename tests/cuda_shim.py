"""Run a kernel's CUDA C source on the CPU: one thread per block, the blocks one after another.

The source is compiled by the system's C++ compiler with CUDA's few keywords defined away
(``__global__``, ``__shared__`` as ``static``, ``__syncthreads`` as nothing) and ``blockDim.x = 1``: a
grid-stride loop then visits every element from the blocks of the grid, and a block-per-channel
reduction sums its channel on its one thread (the tree of the shared-memory reduction has no
levels). What this checks is the kernel's arithmetic and indexing, not its parallel behaviour
(races, the tree reduction's levels): those need a GPU (``python -m cifarnet.bench.gpu_check``).
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

COMPILER = shutil.which("g++") or shutil.which("c++")
PRELUDE = """
#include <cmath>
using std::sqrt;
using std::tanh;
using std::exp;
using std::log;
struct cuda_dim3 { long x, y, z; };
static cuda_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads()
"""


def parameters(kernel) -> list[tuple[str, str]]:
    """``(type, name)`` of each parameter of the kernel's ``__global__`` function."""
    found = re.search(rf"void {kernel.name}\((.*?)\)", kernel.source, flags=re.S)
    params = []
    for part in found.group(1).split(","):
        *kind, name = part.split()
        params.append((" ".join(kind), name))
    return params


def build(kernel, dtype, folder: Path):
    """The kernel compiled for the CPU, as a function ``run(grid, *args)``."""
    params = parameters(kernel)
    declared = ", ".join(f"{kind} {name}" for kind, name in params)
    wrapper = (f'extern "C" void run(long grid, {declared}) {{\n'
               f"    blockDim.x = 1; gridDim.x = grid; threadIdx.x = 0;\n"
               f"    for (long b = 0; b < grid; ++b) {{ blockIdx.x = b; {kernel.name}("
               f"{', '.join(name for _, name in params)}); }}\n}}\n")
    source = folder / f"{kernel.name}_{np.dtype(dtype).name}.cpp"
    source.write_text(PRELUDE + kernel.code(dtype) + wrapper)
    library = source.with_suffix(".so")
    subprocess.run([COMPILER, "-O1", "-shared", "-fPIC", "-o", str(library), str(source)], check=True,
                   capture_output=True, text=True, timeout=120)
    run = ctypes.CDLL(str(library)).run
    real = ctypes.c_float if np.dtype(dtype) == np.float32 else ctypes.c_double

    def call(grid: int, *args) -> None:
        converted = []
        for (kind, _), value in zip(params, args, strict=True):
            if "*" in kind:                      # real*, or long* / double* whatever real is
                expected = np.int64 if "long" in kind else np.float64 if "double" in kind else dtype
                assert value.flags.c_contiguous and value.dtype == expected, kind
                converted.append(ctypes.c_void_p(value.ctypes.data))
            elif kind == "long":
                converted.append(ctypes.c_long(int(value)))
            else:
                converted.append(real(value))
        run(ctypes.c_long(grid), *converted)

    return call


def compiled(kernel, dtype):
    folder = Path(tempfile.mkdtemp(prefix="cifarnet-shim-"))
    return build(kernel, dtype, folder)
