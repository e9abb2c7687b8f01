"""Benchmarks, run as modules (``python -m cifarnet.bench.data``); never part of the test suite."""
from __future__ import annotations

import os
import platform


def machine_description() -> str:
    """CPU model (with its family and model numbers and whether it has AVX-512, which tell apart
    machines that all call themselves "AMD EPYC" or "Intel Xeon"), core count, Python and NumPy
    versions, for labelling measured numbers."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        flags = info.get("flags", "").split()
        cpu = (f"{info['model name']} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}, "
               f"{'AVX-512' if 'avx512f' in flags else 'no AVX-512'})")
    except (OSError, KeyError):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}"
