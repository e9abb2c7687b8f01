"""A run's threads fit the cores it uses: one BLAS thread per worker thread, also with one worker,
and sweep jobs that run side by side divide the cores among them (issue 34: with OpenBLAS left at
one thread per core, a one-worker SimpleCNN epoch ran 8x slower beside another job)."""
import logging

import pytest
from omegaconf import OmegaConf

from cifarnet.blas import blas_threads
from cifarnet.cli.app import parallel_jobs, share_cores
from cifarnet.experiment import train
from cifarnet.training.hooks import Hook

from .cli_helpers import compose_plain


class BlasProbe(Hook):
    def __init__(self):
        self.seen = set()

    def log_step(self, step, lr):
        self.seen.add(blas_threads())


@pytest.mark.parametrize("workers", [1, 2])
def test_training_computes_with_one_blas_thread_per_worker(tmp_path, caplog, workers):
    if blas_threads() is None:
        pytest.skip("this NumPy's BLAS is not OpenBLAS: its threads cannot be set")
    before = blas_threads()
    probe = BlasProbe()
    with caplog.at_level(logging.INFO):
        train(compose_plain("trainer.epochs=1", f"trainer.workers={workers}"), tmp_path / "run", hooks=[probe])
    assert probe.seen == {1}
    assert blas_threads() == before                          # restored after the run
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training batches"))
    assert "1 BLAS thread each" in line and f"trainer.workers={workers}" in line


@pytest.mark.parametrize("launcher, cores, jobs", [
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 2, 2),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 8, 8),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2}, 8, 7),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, 1),
    (None, 8, 1),
])
def test_parallel_sweep_jobs_are_counted_as_joblib_counts_them(launcher, cores, jobs):
    assert parallel_jobs(None if launcher is None else OmegaConf.create(launcher), cores) == jobs


def test_jobs_side_by_side_divide_the_cores_unless_workers_is_set():
    plain = {"trainer": {"workers": None}}
    share_cores(plain, jobs=2, cores=8)
    assert plain["trainer"]["workers"] == 4
    plain = {"trainer": {"workers": None}}
    share_cores(plain, jobs=4, cores=2)
    assert plain["trainer"]["workers"] == 1                    # never below one
    plain = {"trainer": {"workers": 3}}
    share_cores(plain, jobs=2, cores=8)
    assert plain["trainer"]["workers"] == 3                    # the user's choice stands
    plain = {"trainer": {"workers": None}}
    share_cores(plain, jobs=1, cores=8)
    assert plain["trainer"]["workers"] is None                 # one job at a time: all the cores
