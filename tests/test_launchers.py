"""Sweeps through Hydra's joblib and submitit launchers and the Optuna sweeper."""
import csv

import pytest

from .cli_helpers import TINY, cifarnet

pytestmark = pytest.mark.slow          # whole sweeps through Hydra's plugins

SMALL = [*TINY, "data.train_size=64", "trainer.epochs=1"]


def summary_rows(sweep):
    with open(sweep / "sweep_summary.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("launcher", ["parallel", "local"])      # joblib, submitit's local executor
def test_two_job_sweep_through_a_launcher(tmp_path, launcher):
    pytest.importorskip({"parallel": "hydra_plugins.hydra_joblib_launcher",
                         "local": "hydra_plugins.hydra_submitit_launcher"}[launcher])
    done = cifarnet(tmp_path, "-m", f"hydra/launcher={launcher}", *SMALL, "optimizer.lr=0.1,0.01",
                    "hydra.sweep.dir=outputs/sweep")
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = tmp_path / "outputs" / "sweep"
    assert all((sweep / job / "metrics.csv").exists() for job in ("0", "1"))
    rows = summary_rows(sweep)
    assert sorted(r["overrides"] for r in rows) == ["optimizer.lr=0.01", "optimizer.lr=0.1"]
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert "sweep finished; summary" in done.stdout           # also where the jobs ran elsewhere (submitit)


def test_optuna_search_returns_the_best(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    done = cifarnet(tmp_path, "-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=3", *SMALL,
                    "hydra.sweep.dir=outputs/search")
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = tmp_path / "outputs" / "search"
    rows = summary_rows(sweep)
    assert len(rows) == 3 and all("optimizer.lr=" in r["overrides"] and "model.dropout=" in r["overrides"]
                                  for r in rows)
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {float(rows[0]['best_acc'])}" in best
