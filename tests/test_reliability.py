"""Faults injected into real training runs: signals, bad numbers, damaged checkpoints."""
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cifarnet import checkpoint as ckpt
from cifarnet.experiment import train
from cifarnet.training.guard import NonFiniteError
from cifarnet.training.hooks import Hook

from .cli_helpers import TINY, cifarnet, compose_plain

pytestmark = pytest.mark.slow          # faults injected into whole training runs

# Epochs of 94 steps of 16 images: the signal is sent a third of the way into the second (interrupt_run).
SLOW = [*TINY, "data.train_size=1500", "data.batch_size=16", "trainer.epochs=3"]
EPOCH_SECONDS = re.compile(r"  (\d+\.\d+) s  ")


def weights(path):
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files if k.startswith(("model/", "optim/"))}


def interrupt_run(cwd, signum, errors=None):
    """Start a run, send ``signum`` a third of an epoch's time after epoch 1 is logged (whatever the
    machine's speed, inside epoch 2), return (exit code, seconds to exit, output);
    ``errors`` (a list) receives stderr apart, if given, else stderr is part of the output."""
    proc = subprocess.Popen([sys.executable, "-m", "cifarnet", *SLOW, "hydra.run.dir=outputs/interrupted"],
                            cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if errors is None else subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 1/3 " in line:
            time.sleep(float(EPOCH_SECONDS.search(line).group(1)) / 3)
            sent = time.monotonic()
            proc.send_signal(signum)
            break
    rest, err = proc.communicate(timeout=60)
    if errors is not None:
        errors.append(err)
    return proc.returncode, time.monotonic() - sent, "".join(lines) + rest


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("straight")
    done = cifarnet(cwd, *SLOW, "hydra.run.dir=outputs/straight")
    assert done.returncode == 0, done.stderr
    return cwd / "outputs" / "straight"


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_epoch_checkpoints_and_resumes_bit_identically(tmp_path, straight, signum, code):
    stderr = []
    rc, seconds, output = interrupt_run(tmp_path, signum, stderr)
    assert rc == code, output + stderr[0]
    assert "received" not in output and "resume with" not in output     # with stdout redirected, the terminal
    output = stderr[0]                                                   # still shows where it stopped
    assert seconds < 10
    interrupts = list((tmp_path / "outputs" / "interrupted" / "checkpoints").glob("interrupt_*.npz"))
    assert len(interrupts) == 1, output
    saved = ckpt.load(interrupts[0])                                   # loadable
    state = saved.meta["state"]
    assert 0 < state["batch"] < 93 and state["epoch"] >= 1, state     # stopped inside an epoch
    assert f"{signal.Signals(signum).name} received" in output and "resume with: python -m cifarnet resume=" in output
    assert "Traceback" not in output

    done = cifarnet(tmp_path, f"resume={interrupts[0]}", "hydra.run.dir=outputs/resumed")
    assert done.returncode == 0, done.stdout + done.stderr
    final = tmp_path / "outputs" / "resumed" / "checkpoints" / "epoch003_numpy.npz"
    a, b = weights(straight / "checkpoints" / "epoch003_numpy.npz"), weights(final)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    def losses(run):
        return [line.split(",")[2] for line in (run / "metrics.csv").read_text().splitlines()[1:]]

    assert losses(straight) == losses(tmp_path / "outputs" / "resumed")


def test_handlers_are_restored_after_training(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train(compose_plain("trainer.epochs=1", "data.train_size=64"), tmp_path)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.fixture
def poisoned(monkeypatch):
    """Make chosen (epoch, batch) pairs of every training loader deliver a batch holding NaN."""
    from cifarnet.data import BatchLoader

    targets = set()
    real = BatchLoader.batch

    def batch(self, epoch, index, order=None):
        x, y = real(self, epoch, index, order)
        if self.shuffle and (epoch, index) in targets:
            x = x.copy()
            x[0, 0, 0, 0] = np.nan
        return x, y

    monkeypatch.setattr(BatchLoader, "batch", batch)
    return targets


def test_poisoned_batch_stops_within_one_step_and_keeps_checkpoints(tmp_path, poisoned):
    poisoned.add((1, 2))                                      # epoch 2, third batch: step 8 + 3 = 11
    first = tmp_path / "checkpoints" / "epoch001_numpy.npz"
    cfg = compose_plain("trainer.epochs=3", "data.train_size=256")
    snapshot = {}

    class Snapshot(Hook):
        def on_checkpoint(self, path, kind, written):
            if written and path == first:
                snapshot.setdefault("bytes", first.read_bytes())      # the last good checkpoint, as written

    with pytest.raises(NonFiniteError) as err:
        train(cfg, tmp_path, hooks=[Snapshot()])
    message = str(err.value)
    assert "non-finite loss at epoch 2, step 11 (batch 3 of the epoch)" in message
    assert first.read_bytes() == snapshot["bytes"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best_numpy.npz", "epoch001_numpy.npz"]


def test_poisoned_batches_can_be_skipped_and_counted(tmp_path, poisoned):
    poisoned.update({(0, 3), (1, 0), (1, 5)})
    summary = train(compose_plain("trainer.epochs=2", "data.train_size=256", "trainer.nonfinite=skip"), tmp_path)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[-1]) for r in rows[1:]] == [1, 2]
    assert [int(r.split(",")[1]) for r in rows[1:]] == [7, 13]            # skipped batches take no step
    assert summary["epochs"] == 2 and np.isfinite(float(rows[-1].split(",")[2]))


def test_exploding_learning_rate_exits_with_one_line(tmp_path):
    """lr 1e30 overflows float32 weights on the second step; the guard stops on that step."""
    done = cifarnet(tmp_path, *TINY, "optimizer.lr=1e30", "trainer.epochs=1", "hydra.run.dir=outputs/x")
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output and "RuntimeWarning" not in output
    errors = [line for line in output.splitlines() if "cifarnet: error:" in line]
    assert len(errors) == 1 and "non-finite" in errors[0] and "epoch 1, step 2" in errors[0]
    assert not list((tmp_path / "outputs" / "x" / "checkpoints").glob("*"))     # nothing half-trained saved


def test_resume_falls_back_past_a_damaged_checkpoint(tmp_path):
    run = tmp_path / "outputs" / "run"
    done = cifarnet(tmp_path, *TINY, "trainer.epochs=2", "trainer.keep_last=2", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr
    newest = run / "checkpoints" / "epoch002_numpy.npz"
    newest.write_bytes(newest.read_bytes()[:-2000])                   # truncated by a crash
    (run / "checkpoints" / ".epoch003_numpy.npz.x1.tmp").write_bytes(b"partial")
    done = cifarnet(tmp_path, f"resume={run}", "trainer.epochs=2", "hydra.run.dir=outputs/resumed")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "epoch002_numpy.npz failed its checksum" in output
    assert "falling back to the previous good checkpoint" in output and "epoch001_numpy.npz" in output
    assert "resuming from" in output and "at epoch 2" in output
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    finals = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(compose_plain("trainer.epochs=1", "data.train_size=96", f"seed={seed}"), tmp_path / name)
        finals.append(weights(tmp_path / name / "checkpoints" / "epoch001_numpy.npz"))
    a, b, c = finals
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_evaluation_does_not_disturb_the_training_rng(tmp_path):
    from cifarnet.data import BatchLoader, Normalization, load_dataset
    from cifarnet.models import build_model, model_description
    from cifarnet.training import evaluate

    model = build_model(model_description("simplecnn"), seed=0)
    before = model.generator_states()
    data = load_dataset("synthetic", train_size=20, test_size=20)
    evaluate(model, BatchLoader(data.test, 10, Normalization.from_images(data.train.images)), 10)
    assert model.generator_states() == before
