"""Sweeps and searches that survive a failing job: the job recorded as failed, the rest run, the
summary printed, the exit status saying so; every job's result.json written once, whole."""
import csv
import json

import pytest

from cifarnet import files

from .cli_helpers import TINY, cifarnet, compose_plain

pytestmark = pytest.mark.slow          # end to end: each test starts python -m cifarnet


def test_a_diverging_job_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    done = cifarnet(tmp_path, "-m", *TINY, "trainer.epochs=1", "optimizer.lr=0.1,1e12,0.01",
                    "hydra.sweep.dir=outputs/sweep")
    assert done.returncode == 1, done.stdout + done.stderr           # some jobs failed
    sweep = tmp_path / "outputs" / "sweep"
    results = {job: json.loads((sweep / job / "result.json").read_text()) for job in "012"}
    assert results["1"]["status"] == "failed" and "non-finite loss" in results["1"]["error"]
    assert "optimizer.lr=1000000000000.0" in results["1"]["overrides"]
    assert results["0"]["status"] == results["2"]["status"] == "completed"
    assert (sweep / "2" / "metrics.csv").is_file()                    # the job after the failure ran
    with open(sweep / "sweep_summary.csv", newline="") as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    assert rows["1"]["status"] == "failed" and rows["1"]["rank"] == "" and "non-finite loss" in rows["1"]["error"]
    assert sorted(rows[j]["rank"] for j in "02") == ["1", "2"]
    table = (sweep / "sweep_summary.md").read_text()
    assert "| - | 1 | optimizer.lr=1000000000000.0 | failed: non-finite loss" in table
    assert "sweep finished; summary" in done.stdout and "| - | 1 |" in done.stdout    # the summary is printed
    assert "cifarnet: 1 of 3 jobs failed" in done.stderr
    assert not (sweep / ".summary.lock").exists()                      # no lock file left behind


def test_a_search_treats_a_diverged_trial_as_failed_and_goes_on(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs pip install 'cifarnet[optuna]'")
    # with the search preset's sampler seed, trials 0, 1 and 3 draw the diverging rate, trial 2 the good one
    done = cifarnet(tmp_path, "-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=4",
                    "optimizer.lr=choice(0.01,1e12)", *TINY, "trainer.epochs=1", "hydra.sweep.dir=outputs/search")
    assert done.returncode == 0, done.stdout + done.stderr            # a search with good trials has succeeded
    sweep = tmp_path / "outputs" / "search"
    statuses = {job: json.loads((sweep / job / "result.json").read_text())["status"] for job in "0123"}
    assert sorted(statuses.values()) == ["completed", "failed", "failed", "failed"]
    best = (sweep / "optimization_results.yaml").read_text()
    assert "optimizer.lr: 0.01" in best                                # the good trial won
    assert "cifarnet: 3 of 4 trials failed" in done.stderr


def test_result_json_is_written_once_whole_with_the_overrides(tmp_path, monkeypatch):
    """Parallel sweep jobs read each other's result.json: it must never exist without its overrides."""
    from cifarnet.experiment import report, train

    writes = []
    real = files.replace_atomically

    def spy(path):
        if path.name == "result.json":
            writes.append(path)
        return real(path)

    monkeypatch.setattr(report, "replace_atomically", spy)
    train(compose_plain("trainer.epochs=1"), tmp_path, overrides=["optimizer.lr=0.05"])
    assert writes == [tmp_path / "result.json"]
    assert json.loads((tmp_path / "result.json").read_text())["overrides"] == ["optimizer.lr=0.05"]


def test_the_summary_prints_searched_numbers_short():
    from cifarnet.sweeps import short_numbers

    assert short_numbers("optimizer.lr=0.0012345678901234 model.dropout=0.31733695185174265 seed=3") == \
        "optimizer.lr=0.001235 model.dropout=0.3173 seed=3"
    assert short_numbers("optimizer.weight_decay=6.431172050131997e-05 optimizer.lr=0.1") == \
        "optimizer.weight_decay=6.431e-05 optimizer.lr=0.1"
