"""Sweeps through Hydra's joblib, submitit and Ray launchers and the Optuna sweeper.

Each plugin is an optional extra; a test whose plugin is not installed is skipped with the extra
to install. CI installs the joblib, submitit and Optuna ones (the [test] extra), not Ray (about
420 MB); the Ray test was run where Ray is installed (README, Sweeps).
"""
import csv

import pytest

from .cli_helpers import TINY, cifarnet

pytestmark = pytest.mark.slow          # whole sweeps through Hydra's plugins

SMALL = [*TINY, "data.train_size=64", "trainer.epochs=1"]


def summary_rows(sweep):
    with open(sweep / "sweep_summary.csv") as f:
        return list(csv.DictReader(f))


PLUGIN = {"parallel": ("hydra_plugins.hydra_joblib_launcher", "parallel"),
          "local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
          "ray": ("hydra_plugins.hydra_ray_launcher", "ray")}
EXTRA = {"ray": ["+hydra.launcher.ray.init.num_cpus=2"]}           # a local Ray instance, started for the sweep


@pytest.mark.parametrize("launcher", ["parallel", "local", "ray"])     # joblib, submitit's local executor, Ray
def test_two_job_sweep_through_a_launcher(tmp_path, launcher):
    module, extra = PLUGIN[launcher]
    pytest.importorskip(module, reason=f"hydra/launcher={launcher} needs pip install 'cifarnet[{extra}]'")
    done = cifarnet(tmp_path, "-m", f"hydra/launcher={launcher}", *SMALL, *EXTRA.get(launcher, []),
                    "optimizer.lr=0.1,0.01", "hydra.sweep.dir=outputs/sweep", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = tmp_path / "outputs" / "sweep"
    assert all((sweep / job / "metrics.csv").exists() for job in ("0", "1"))
    rows = summary_rows(sweep)
    assert sorted(r["overrides"] for r in rows) == ["optimizer.lr=0.01", "optimizer.lr=0.1"]
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert "sweep finished; summary" in done.stdout           # also where the jobs ran elsewhere (submitit)
    if launcher == "parallel":                                # two jobs at once divide the cores
        from cifarnet.threads import default_workers

        workers = max(1, default_workers() // 2)
        where = "on one thread" if workers == 1 else f"split between {min(workers, 2)} threads"
        log = (sweep / "0" / "cifarnet.log").read_text()
        assert f"training batches of 32 images {where}, 1 BLAS thread each" in log


def test_optuna_search_returns_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install 'cifarnet[optuna]'")
    done = cifarnet(tmp_path, "-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=3", *SMALL,
                    "hydra.sweep.dir=outputs/search")
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = tmp_path / "outputs" / "search"
    rows = summary_rows(sweep)
    assert len(rows) == 3 and all("optimizer.lr=" in r["overrides"] and "model.dropout=" in r["overrides"]
                                  for r in rows)
    assert "\x1b[" not in done.stdout + done.stderr                  # no colour codes off a terminal
    assert "setup plugin" not in done.stdout + done.stderr            # nor a line per alembic plugin
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {float(rows[0]['best_acc'])}" in best
