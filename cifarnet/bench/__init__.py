"""Benchmarks, run as modules (``python -m cifarnet.bench.data``); never part of the test suite."""
from __future__ import annotations

import os
import platform


def machine_description() -> str:
    """CPU model, core count and Python/NumPy versions, for labelling measured numbers."""
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}"
