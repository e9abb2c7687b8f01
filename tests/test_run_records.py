"""A run directory's record is never lost: evaluations beside a training run keep its .hydra/,
resume continues in the run's own directory, replacing a run replaces all of it, files follow the
umask, and failures and signals at start-up leave nothing behind."""
import json
import os
import stat

import numpy as np
import pytest

from cifarnet import checkpoint as ckpt

from .cli_helpers import TINY, cifarnet, errors_in, run_driver, train_tiny

pytestmark = pytest.mark.slow          # end to end: each test starts python -m cifarnet


def record_of(run):
    return {p: p.read_bytes() for p in [*(run / ".hydra").iterdir(), run / "cifarnet.log"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("records")
    train_tiny(cwd, "outputs/run", "trainer.epochs=1")
    return cwd, cwd / "outputs" / "run"


@pytest.mark.parametrize("mode, extra, output", [
    ("eval", [], "eval.json"),
    ("export", [], "model.onnx"),
    ("predict", ["images=cat.png"], "predictions.csv"),
])
def test_eval_predict_and_export_into_a_run_directory_keep_its_record(trained, mode, extra, output):
    cwd, run = trained
    if mode == "export":
        pytest.importorskip("onnx")
    if mode == "predict":
        pil = pytest.importorskip("PIL.Image")
        pil.new("RGB", (40, 30), (200, 30, 30)).save(cwd / "cat.png")
    before = record_of(run)
    done = cifarnet(cwd, f"mode={mode}", f"ckpt={run}", *extra, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert record_of(run) == before                                  # .hydra/ and the log byte for byte
    assert (run / output).is_file()
    own = (run / f".hydra-{mode}" / "overrides.yaml").read_text()   # its own record beside the run's
    assert f"mode={mode}" in own and (run / f"cifarnet-{mode}.log").is_file()


def test_a_failed_evaluation_in_a_run_directory_removes_only_its_own_record(trained):
    cwd, run = trained
    before = sorted(p.name for p in run.iterdir())
    done = cifarnet(cwd, "mode=eval", f"ckpt={run}", "data.eval_batch_size=0", f"hydra.run.dir={run}")
    assert done.returncode == 1 and len(errors_in(done)) == 1
    assert sorted(p.name for p in run.iterdir()) == before


def test_resume_of_a_run_directory_continues_in_it(tmp_path):
    train_tiny(tmp_path, "outputs/run", "trainer.epochs=1")
    run = tmp_path / "outputs" / "run"
    before = record_of(run)
    done = cifarnet(tmp_path, f"resume={run}", "trainer.epochs=2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["run"]          # no new dated directory
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    log = run / "cifarnet.log"
    assert {p: b for p, b in record_of(run).items() if p != log} == {p: b for p, b in before.items() if p != log}
    assert log.read_bytes().startswith(before[log]) and "epoch 2/2" in log.read_text()   # one log, continued
    assert "resume=" in (run / ".hydra-resume" / "overrides.yaml").read_text()


def test_the_stop_message_continues_the_run_in_its_directory(tmp_path):
    """Each piece stops after one epoch; the printed command, run as it is, continues in place."""
    done = train_tiny(tmp_path, "outputs/run", "trainer.epochs=3", "trainer.stop_after_minutes=0.0001")
    run = tmp_path / "outputs" / "run"
    for pieces in (2, 3):
        command = next(line.split("continue with: ", 1)[1] for line in done.stdout.splitlines()
                       if "continue with:" in line)
        assert f"resume={run}" in command and "hydra.run.dir" not in command
        done = cifarnet(tmp_path, *command.split()[3:])                           # after python -m cifarnet
        assert done.returncode == 0, done.stdout + done.stderr
        assert len((run / "metrics.csv").read_text().splitlines()) == 1 + pieces
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["run"]


def test_the_refusal_message_says_how_to_continue(tmp_path):
    train_tiny(tmp_path, "outputs/run", "trainer.epochs=1")
    done = cifarnet(tmp_path, *TINY, "hydra.run.dir=outputs/run")
    assert done.returncode == 1
    hint = errors_in(done)[0].split("continue it with ", 1)[1].split(",")[0]          # resume=<the directory>
    again = cifarnet(tmp_path, hint, "trainer.epochs=2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len((tmp_path / "outputs" / "run" / "metrics.csv").read_text().splitlines()) == 1 + 2


def test_overwrite_replaces_all_of_the_earlier_run(tmp_path):
    pytest.importorskip("tensorboardX")
    train_tiny(tmp_path, "outputs/run", "trainer.epochs=1", "logger=[csv,tensorboard]", "seed=1")
    run = tmp_path / "outputs" / "run"
    assert list((run / "tensorboard").iterdir())
    # an event file's name holds the second it was made, so a run within the same second reuses it:
    # a file of the old run's tensorboard/ that the new run would never write tells them apart
    (run / "tensorboard" / "events.out.tfevents.old-run").write_bytes(b"")
    train_tiny(tmp_path, "outputs/run", "trainer.epochs=1", "logger=[csv,tensorboard]", "overwrite=true")
    events = list((run / "tensorboard").iterdir())
    assert len(events) == 1 and events[0].name != "events.out.tfevents.old-run"    # the old event files are gone
    log = (run / "cifarnet.log").read_text()
    assert log.count("run directory") == 1 and "seed=1" not in (run / ".hydra" / "overrides.yaml").read_text()


def test_interrupt_checkpoints_go_once_the_run_has_passed_them(tmp_path):
    patch = """
from cifarnet.tracking import TRACKERS, Tracker
@TRACKERS.register("probe")                             # attached with +logger.probe={}
class Probe(Tracker):
    def log_step(self, step, lr):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)        # stop mid-epoch 1
"""
    done = run_driver(tmp_path, patch, *TINY, "trainer.epochs=2", "+logger.probe={}", "hydra.run.dir=outputs/run")
    assert done.returncode == 143, done.stdout + done.stderr
    checkpoints = tmp_path / "outputs" / "run" / "checkpoints"
    assert [p.name for p in checkpoints.glob("interrupt_*")] == ["interrupt_e001_b00003_numpy.npz"]
    again = cifarnet(tmp_path, f"resume={tmp_path / 'outputs' / 'run'}", "logger=[csv]")      # without the probe
    assert again.returncode == 0, again.stdout + again.stderr
    assert not list(checkpoints.glob("interrupt_*"))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best_numpy.npz", "epoch001_numpy.npz",
                                                             "epoch002_numpy.npz"]


def test_checkpoints_follow_the_umask_like_every_other_output(tmp_path):
    previous = os.umask(0o022)
    try:
        path = ckpt.write_atomic(tmp_path / "c.npz", {"a": np.zeros(3)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        path = ckpt.write_atomic(tmp_path / "d.npz", {"a": np.zeros(3)})
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(previous)


SIGTERM_WHILE_LOADING = """
import cifarnet.experiment.training as experiment
real = experiment.load_data
def load_data(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)                # SIGTERM while the data loads
    return real(*args, **kwargs)
experiment.load_data = load_data
"""


def test_sigterm_during_start_up_is_treated_like_ctrl_c(tmp_path):
    done = run_driver(tmp_path, SIGTERM_WHILE_LOADING, *TINY, "hydra.run.dir=outputs/x")
    output = done.stdout + done.stderr
    assert done.returncode == 143, output
    assert "cifarnet: interrupted (SIGTERM)" in done.stderr and "Traceback" not in output
    assert not (tmp_path / "outputs").exists()                  # nothing left behind, as after Ctrl-C


def test_a_run_that_fails_at_once_leaves_no_empty_folders(tmp_path):
    done = cifarnet(tmp_path, "data.root=nowhere", "data.url=http://127.0.0.1:9/none.tar.gz")
    assert done.returncode == 1 and len(errors_in(done)) == 1, done.stdout + done.stderr
    assert "removed the run directory" in done.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "nowhere").exists()


def test_result_json_names_the_overrides_of_a_single_run(trained):
    _, run = trained
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "completed" and "trainer.epochs=1" in result["overrides"]


def test_a_failed_resume_leaves_the_run_s_records_alone(tmp_path):
    """Like a failed evaluation: no rewritten .hydra-resume/, no ERROR appended to the run's log."""
    train_tiny(tmp_path, "outputs/run", "trainer.epochs=1")
    run = tmp_path / "outputs" / "run"
    first = cifarnet(tmp_path, f"resume={run}", "trainer.epochs=2")                  # a continuation that ran
    assert first.returncode == 0, first.stdout + first.stderr
    records = lambda: {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and "checkpoints" not in p.parts}  # noqa: E731
    before = records()
    for bad in (["trainer.epochs=1"], ["trainer.epochs=3", "optimizer.lr=-1"]):     # below what ran; a bad value
        done = cifarnet(tmp_path, f"resume={run}", *bad)
        assert done.returncode == 1 and len(errors_in(done)) == 1, done.stdout + done.stderr
        assert records() == before, bad
    assert not (run / ".hydra-resume.pending").exists()
    assert "trainer.epochs=2" in (run / ".hydra-resume" / "overrides.yaml").read_text()
