"""End to end: ``python -m cifarnet`` trains, evaluates, resumes and sweeps."""
import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from cifarnet.backend import cupy_available

from .cli_helpers import TINY, cifarnet, train_tiny

pytestmark = pytest.mark.slow          # end to end: each test starts python -m cifarnet


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-epoch run shared by the tests that only read it."""
    cwd = tmp_path_factory.mktemp("runs")
    done = train_tiny(cwd, "outputs/first", "trainer.epochs=2")
    return cwd, cwd / "outputs" / "first", done


def test_run_directory_contents(trained):
    cwd, run, done = trained
    assert {p.name for p in (run / ".hydra").iterdir()} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        ["best_numpy.npz", "epoch001_numpy.npz", "epoch002_numpy.npz"]
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["step"] == "16"     # 256 / 32 per epoch
    for column in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds", "images_per_second"):
        assert all(r[column] != "" for r in rows), column
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert rows[0]["lr"] == "0.01" and float(rows[0]["images_per_second"]) > 0
    result = json.loads((run / "result.json").read_text())
    assert result["best_metric"] == max(float(r["test_acc"]) for r in rows)


def test_log_lines_appear_once_on_console_and_in_file(trained):
    _, run, done = trained
    log = (run / "cifarnet.log").read_text()
    console = done.stdout + done.stderr
    for text in (log, console):
        assert len(re.findall(r"epoch 1/2 ", text)) == 1 and len(re.findall(r"epoch 2/2 ", text)) == 1
        assert "\r" not in text and "[####" not in text          # no progress bar off a terminal
    assert "[INFO] model simplecnn: 232,314 parameters" in log


def test_two_runs_started_together_get_their_own_directories(tmp_path):
    args = [sys.executable, "-m", "cifarnet", *TINY, "data.train_size=64", "trainer.epochs=1"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 2 and all(re.fullmatch(r"\d\d-\d\d-\d\d\.\d{6}", r.name) for r in runs)


def test_eval_reproduces_the_recorded_accuracy(trained):
    cwd, run, _ = trained
    done = cifarnet(cwd, "mode=eval", f"ckpt={run}/checkpoints/epoch001_numpy.npz", "hydra.run.dir=outputs/eval")
    assert done.returncode == 0, done.stderr
    report = json.loads((cwd / "outputs" / "eval" / "eval.json").read_text())
    assert report["accuracy"] == float(read_metrics(run)[0]["test_acc"])
    assert report["images"] == 64 and len(report["confusion_matrix"]) == 10
    assert len(report["per_class_accuracy"]) == 10 and "disk" in report["per_class_accuracy"]
    assert f"test accuracy {report['accuracy']:.2%}" in done.stdout and "confusion matrix" in done.stdout


def test_resume_is_bit_identical(trained, tmp_path):
    cwd, first, _ = trained
    train_tiny(cwd, "outputs/straight", "trainer.epochs=3")
    done = cifarnet(cwd, f"resume={first}", "trainer.epochs=3", "hydra.run.dir=outputs/resumed")
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    straight, resumed = cwd / "outputs" / "straight", cwd / "outputs" / "resumed"
    def losses(rows):
        return [(r["epoch"], r["step"], r["train_loss"], r["test_loss"], r["lr"]) for r in rows]

    assert losses(read_metrics(straight)) == losses(read_metrics(resumed))
    a = np.load(straight / "checkpoints" / "epoch003_numpy.npz")
    b = np.load(resumed / "checkpoints" / "epoch003_numpy.npz")
    weights = [k for k in a.files if k.startswith(("model/", "optim/"))]
    assert len(weights) > 20 and all(np.array_equal(a[k], b[k]) for k in weights)


def test_resume_needs_more_epochs(trained):
    cwd, first, _ = trained
    done = cifarnet(cwd, f"resume={first}", "hydra.run.dir=outputs/again")
    assert done.returncode == 1 and "trainer.epochs=3" in done.stdout + done.stderr


def test_sweep_2x2_writes_four_jobs_and_a_summary(tmp_path):
    done = cifarnet(tmp_path, "-m", *TINY, "data.train_size=64", "trainer.epochs=1", "optimizer=sgd,adam",
                    "optimizer.lr=0.1,0.01", "hydra.sweep.dir=outputs/sweep")
    assert done.returncode == 0, done.stderr
    sweep = tmp_path / "outputs" / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert all((sweep / j / "metrics.csv").exists() for j in "0123")
    with open(sweep / "sweep_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    accs = [float(r["best_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)
    assert {r["overrides"] for r in rows} == {f"optimizer={o} optimizer.lr={lr}" for o in ("sgd", "adam")
                                             for lr in ("0.1", "0.01")}
    assert "| rank | job | overrides |" in (sweep / "sweep_summary.md").read_text()
    assert "optimizer=adam optimizer.lr=0.01" in done.stdout


def corrupt_copy(src, dst):
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "unknown_model", "unknown_optimizer",
                                  "unknown_arch", "missing_ckpt", "corrupt_ckpt", "other_architecture", "cupy",
                                  "bad_value", "bad_workers"])
def test_bad_input_fails_with_one_line(trained, tmp_path, case):
    cwd, run, _ = trained
    ckpt = run / "checkpoints" / "epoch001_numpy.npz"
    args, expected = {
        "unknown_key": (["trainer.epoch=3"], "Key 'epoch' not in 'TrainerSchema'"),
        "wrong_type": (["trainer.epochs=abc"], "Value 'abc' of type 'str' could not be converted to Float"),
        "unknown_model": (["model=vgg16"], "unknown model 'vgg16'; known: airbench94, resnet110, resnet20, resnet32"),
        "unknown_optimizer": (["optimizer=rmsprop"], "unknown optimizer 'rmsprop'; known: adam, adamw, sgd"),
        "unknown_arch": ([*TINY, "model.arch=vgg"],
                         "unknown model architecture 'vgg'; known: airbench, resnet, sequential"),
        "missing_ckpt": (["mode=eval", f"ckpt={tmp_path}/nope.npz"], f"checkpoint {tmp_path}/nope.npz not found"),
        "corrupt_ckpt": (["mode=eval", f"ckpt={corrupt_copy(ckpt, tmp_path / 'bad.npz')}"], "bad.npz"),
        "other_architecture": (["mode=eval", f"ckpt={ckpt}", "model=resnet20"],
                               "holds a different architecture (model 'simplecnn') than requested (model=resnet20)"),
        "cupy": ([*TINY, "backend=cupy"], "backend 'cupy' was requested"),
        "bad_value": ([*TINY, "data.val_size=100000"], "val_size must be in [0, 256) for 256 training images"),
        "bad_workers": ([*TINY, "trainer.workers=0"], "workers must be >= 1"),
    }[case]
    if case == "cupy" and cupy_available()[0]:
        pytest.skip("CuPy and a GPU are present here, so backend=cupy is not an error")
    done = cifarnet(cwd, *args, f"hydra.run.dir={tmp_path}/run")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output
    errors = [line for line in output.splitlines() if "cifarnet: error:" in line]
    assert len(errors) == 1 and expected in errors[0], output


def continue_command(output: str) -> list[str]:
    """The arguments of the ``continue with: python -m cifarnet ...`` line a stopped run printed."""
    line = next(line for line in output.splitlines() if "continue with: " in line)
    return line.split("continue with: ", 1)[1].split()[3:]            # after "python -m cifarnet"


def test_a_long_run_goes_in_pieces_that_each_stop_in_time(trained):
    """trainer.stop_after_minutes ends each piece at an epoch boundary with exit 0 and the command
    that continues it; the pieces together equal one uninterrupted run."""
    cwd, _, _ = trained
    train_tiny(cwd, "outputs/straight3", "trainer.epochs=3")
    piece = cifarnet(cwd, *TINY, "trainer.epochs=3", "trainer.stop_after_minutes=0.0001",
                     "hydra.run.dir=outputs/pieces")
    assert piece.returncode == 0, piece.stdout + piece.stderr
    assert "stopping after epoch 1 of 3: trainer.stop_after_minutes=0.0001" in piece.stdout
    for done_epochs in (2, 3):
        piece = cifarnet(cwd, *continue_command(piece.stdout))
        assert piece.returncode == 0, piece.stdout + piece.stderr
        rows = read_metrics(cwd / "outputs" / "pieces")                # one directory, the whole history
        assert [r["epoch"] for r in rows] == [str(e) for e in range(1, done_epochs + 1)]
    result = json.loads((cwd / "outputs" / "pieces" / "result.json").read_text())
    assert result["epochs"] == 3 and not result["stopped_early"]

    def losses(run):
        return [(r["epoch"], r["train_loss"], r["test_loss"]) for r in read_metrics(run)]

    assert losses(cwd / "outputs" / "pieces") == losses(cwd / "outputs" / "straight3")
