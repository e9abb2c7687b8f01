"""Run ``python -m cifarnet`` in a subprocess on tiny synthetic data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TINY = ["data=synthetic", "data.train_size=256", "data.test_size=64", "data.batch_size=32",
        "data.eval_batch_size=64"]


def cifarnet(cwd: Path, *args: str, timeout: float = 180, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "cifarnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def train_tiny(cwd: Path, run_dir: str, *args: str) -> subprocess.CompletedProcess:
    done = cifarnet(cwd, *TINY, f"hydra.run.dir={run_dir}", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done
