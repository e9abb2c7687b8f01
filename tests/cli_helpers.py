"""Run ``python -m cifarnet`` in a subprocess on tiny synthetic data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TINY = ["data=synthetic", "data.train_size=256", "data.test_size=64", "data.batch_size=32",
        "data.eval_batch_size=64", "plots=false"]


def cifarnet(cwd: Path, *args: str, timeout: float = 180, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "cifarnet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def train_tiny(cwd: Path, run_dir: str, *args: str) -> subprocess.CompletedProcess:
    done = cifarnet(cwd, *TINY, f"hydra.run.dir={run_dir}", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def compose_plain(*overrides: str) -> dict:
    """The composed config as the command line would hand it to cifarnet.experiment."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from cifarnet.cli import schema
    from cifarnet.cli.app import config_dir

    schema.register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*TINY, "trainer.progress=false", *overrides])
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def errors_in(done) -> list[str]:
    """The ``cifarnet: error:`` lines of a finished command, wherever they were printed."""
    return [line for line in (done.stdout + done.stderr).splitlines() if "cifarnet: error:" in line]


# ``python -c DRIVER.format(patch=...)``: the command line with a patch applied first (a signal
# sent at a chosen moment, a function made to fail).
DRIVER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)   # as on a terminal, even if started in the background
{patch}
from cifarnet.cli.app import main
sys.argv[0] = "cifarnet"
main()
"""


def run_driver(cwd: Path, patch: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER.format(patch=patch), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
