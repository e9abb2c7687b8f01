"""What a new user runs into around the README's commands: results kept, errors that name the cause.

Each test reproduces one report of a user trying cifarnet for the first time; the names say what
must hold.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from cifarnet import checkpoint as ckpt
from cifarnet.cli.errors import hydra_message

from .cli_helpers import TINY, cifarnet, compose_plain, errors_in, run_driver, train_tiny

pytestmark = pytest.mark.slow          # end to end: each test starts python -m cifarnet


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A finished 2-epoch run whose best epoch is its last."""
    cwd = tmp_path_factory.mktemp("first")
    train_tiny(cwd, "outputs/first", "trainer.epochs=2")
    run = cwd / "outputs" / "first"
    assert json.loads((run / "result.json").read_text())["best_epoch"] == 2
    return cwd, run


# -- results that were lost or misreported -------------------------------------------------------
def test_resume_into_a_new_directory_carries_the_best_checkpoint(first):
    cwd, run = first
    # a learning rate that wrecks epoch 3, so that the best epoch comes before the resume
    done = cifarnet(cwd, f"resume={run}", "trainer.epochs=3", "optimizer.lr=5", "hydra.run.dir=outputs/resumed")
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = cwd / "outputs" / "resumed"
    result = json.loads((resumed / "result.json").read_text())
    assert result["best_epoch"] == 2                                   # the best came before the resume
    best = ckpt.load(result["best_checkpoint"])                          # ... and its file is there
    assert best.path.parent == resumed / "checkpoints" and best.meta["state"]["epoch"] == 2
    report = json.loads((resumed / "best_eval.json").read_text())
    assert report["epoch"] == 2 and len(report["confusion_matrix"]) == 10
    again = cifarnet(cwd, "mode=eval", f"ckpt={result['best_checkpoint']}", "hydra.run.dir=outputs/eval_best")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_reused_run_directory_is_refused_unless_overwrite(first, tmp_path):
    cwd, _ = first
    train_tiny(cwd, "outputs/reused", "trainer.epochs=1")
    run = cwd / "outputs" / "reused"
    kept = {p: p.read_bytes() for p in [run / "metrics.csv", run / ".hydra" / "config.yaml",
                                        *(run / "checkpoints").iterdir()]}
    done = cifarnet(cwd, *TINY, "trainer.epochs=1", "seed=5", "hydra.run.dir=outputs/reused")
    assert done.returncode == 1
    assert len(errors_in(done)) == 1 and "already holds an earlier run's metrics.csv" in errors_in(done)[0]
    assert "overwrite=true" in errors_in(done)[0] and "resume=" in errors_in(done)[0]
    assert all(p.read_bytes() == data for p, data in kept.items())      # nothing touched, .hydra included
    replaced = cifarnet(cwd, *TINY, "trainer.epochs=1", "seed=5", "overwrite=true", "hydra.run.dir=outputs/reused")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert (run / "metrics.csv").read_bytes() != kept[run / "metrics.csv"]


def test_every_batch_non_finite_exits_non_zero_and_saves_no_checkpoint(tmp_path):
    done = cifarnet(tmp_path, *TINY, "optimizer.lr=1e30", "trainer.nonfinite=skip", "trainer.epochs=2",
                    "hydra.run.dir=outputs/x")
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(errors_in(done)) == 1 and "non-finite" in errors_in(done)[0]
    assert not list((tmp_path / "outputs").rglob("*.npz"))


def test_skipped_batches_never_leave_non_finite_values_in_checkpoints(tmp_path, monkeypatch):
    from cifarnet.data import BatchLoader
    from cifarnet.experiment import train

    real = BatchLoader.batch

    def batch(self, epoch, index, order=None):                      # two batches carry a NaN pixel
        x, y = real(self, epoch, index, order)
        if self.shuffle and (epoch, index) in {(0, 1), (1, 4)}:
            x = x.copy()
            x[0, 0, 0, 0] = np.nan
        return x, y

    monkeypatch.setattr(BatchLoader, "batch", batch)
    summary = train(compose_plain("trainer.epochs=2", "trainer.nonfinite=skip"), tmp_path)
    assert summary["final"]["skipped_batches"] == 1 and summary["epochs"] == 2
    for path in (tmp_path / "checkpoints").glob("*.npz"):
        with np.load(path) as npz:
            assert all(np.isfinite(npz[k]).all() for k in npz.files if k.startswith(("model/", "optim/"))), path


def test_a_run_that_fails_before_writing_anything_leaves_no_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    done = cifarnet(tmp_path, "data.root=empty", "data.download=false", "hydra.run.dir=outputs/failed")
    assert done.returncode == 1 and len(errors_in(done)) == 1
    assert not (tmp_path / "outputs" / "failed").exists()
    dated = cifarnet(tmp_path, "data.root=empty", "data.download=false")       # the default dated directory
    assert dated.returncode == 1 and not list((tmp_path / "outputs").glob("*"))


# -- errors that named the wrong cause -----------------------------------------------------------
@pytest.mark.parametrize("name, content, what", [
    ("cat.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "it is a JPEG image"),
    ("config.yaml", b"model:\n  name: resnet32\n", "it is a text file"),
    ("notes.txt", b"", "it is an empty file"),
])
def test_eval_of_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path, name, content, what):
    (tmp_path / name).write_bytes(content)
    done = cifarnet(tmp_path, "mode=eval", f"ckpt={name}", "hydra.run.dir=outputs/eval")
    assert done.returncode == 1
    assert len(errors_in(done)) == 1 and f"{name} is not a cifarnet checkpoint: {what}" in errors_in(done)[0]
    assert "pickle" not in errors_in(done)[0]


def test_eval_accepts_a_run_directory(first):
    cwd, run = first
    done = cifarnet(cwd, "mode=eval", f"ckpt={run}", "hydra.run.dir=outputs/eval_dir")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((cwd / "outputs" / "eval_dir" / "eval.json").read_text())
    assert report["checkpoint"] == str(run / "checkpoints" / "best_numpy.npz")


def test_a_missing_launcher_plugin_names_the_extra_to_install(tmp_path):
    """The joblib plugin made unimportable, as in an install without the [parallel] extra."""
    hidden = tmp_path / "hide" / "hydra_plugins" / "hydra_joblib_launcher"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env_path = f"{tmp_path / 'hide'}"
    done = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r}); "
                           "from cifarnet.cli.app import main; sys.argv[0] = 'cifarnet'; main()",
                           "-m", "hydra/launcher=parallel", *TINY, "optimizer.lr=0.1,0.01"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(errors_in(done)) == 1
    assert "hydra/launcher=parallel needs the Hydra plugin hydra-joblib-launcher" in errors_in(done)[0]
    assert "pip install 'cifarnet[parallel]'" in errors_in(done)[0]


@pytest.mark.parametrize("missing, extra", [("hydra/launcher/submitit_slurm", "slurm"),
                                            ("hydra/launcher/submitit_local", "slurm"),
                                            ("hydra/sweeper/optuna", "optuna")])
def test_each_plugin_preset_names_its_extra(missing, extra):
    from hydra.errors import MissingConfigException

    message = hydra_message(MissingConfigException("Could not find", missing_cfg_file=missing, options=[]))
    assert f"pip install 'cifarnet[{extra}]'" in message and "known: (none)" not in message


def test_eval_ignores_the_optimizer_choice(first):
    cwd, run = first
    done = cifarnet(cwd, "mode=eval", f"ckpt={run}/checkpoints/epoch001_numpy.npz", "optimizer=adam",
                    "hydra.run.dir=outputs/eval_adam")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_too_few_epochs_name_trainer_epochs(tmp_path, epochs):
    done = cifarnet(tmp_path, *TINY, f"trainer.epochs={epochs}", "hydra.run.dir=outputs/x")
    assert done.returncode == 1
    assert len(errors_in(done)) == 1 and f"trainer.epochs must be > 0, got {epochs}" in errors_in(done)[0]


def test_help_lists_real_choices_only(tmp_path):
    done = cifarnet(tmp_path, "--help")
    assert done.returncode == 0 and "schema" not in done.stdout
    assert "optimizer: adam, adamw, sgd" in done.stdout and "data: cifar10, image_folder, synthetic" in done.stdout
    wrong = cifarnet(tmp_path, "data=data_schema")
    assert errors_in(wrong) == ["cifarnet: error: unknown data 'data_schema'; known: cifar10, image_folder, "
                                "synthetic"]


def test_predict_without_pillow_says_predict_needs_it(first, monkeypatch):
    from cifarnet.backend import NUMPY
    from cifarnet.data import DataError
    from cifarnet.experiment import restore_model
    from cifarnet.predict import predict

    _, run = first
    checkpoint = ckpt.load(run / "checkpoints" / "best_numpy.npz")
    monkeypatch.setitem(sys.modules, "PIL", None)                       # as if Pillow were not installed
    with pytest.raises(DataError, match=r"mode=predict reads image files and needs Pillow: pip install "
                                        r"'cifarnet\[images\]'"):
        predict(restore_model(checkpoint, NUMPY), checkpoint, [run / "x.png"], NUMPY)


def test_image_folder_with_three_classes_runs_as_the_readme_prints_it(tmp_path):
    image = pytest.importorskip("PIL.Image", reason="the image-folder source needs Pillow")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 4)):
        for c, name in enumerate(["cats", "dogs", "owls"]):
            folder = tmp_path / "photos" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (40, 40, 3)) + 80 * c
                image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    done = cifarnet(tmp_path, "data=image_folder", "data.root=photos", "trainer.epochs=1", "plots=false",
                    "hydra.run.dir=outputs/photos")
    assert done.returncode == 0, done.stdout + done.stderr
    saved = ckpt.load(tmp_path / "outputs" / "photos" / "checkpoints" / "epoch001_numpy.npz")
    assert saved.meta["model"]["num_classes"] == 3 and saved.meta["class_names"] == ["cats", "dogs", "owls"]
    mismatch = cifarnet(tmp_path, "data=image_folder", "data.root=photos", "model.num_classes=10",
                        "hydra.run.dir=outputs/mismatch")
    assert mismatch.returncode == 1 and "model.num_classes=10 but the image_folder data has 3" in \
        errors_in(mismatch)[0]


# -- interrupts ----------------------------------------------------------------------------------
CTRL_C_WHILE_LOADING = """
import cifarnet.experiment.training as experiment
real = experiment.load_data
def load_data(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)                 # Ctrl-C while the data loads
    return real(*args, **kwargs)
experiment.load_data = load_data
"""

CTRL_C_TWICE = """
from cifarnet.tracking import TRACKERS, Tracker
@TRACKERS.register("probe")                             # attached with +logger.probe={}
class Probe(Tracker):
    def log_step(self, step, lr):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)         # the first Ctrl-C, mid-epoch
    def on_checkpoint(self, path, kind, written):
        if kind == "interrupt" and not written:
            os.kill(os.getpid(), signal.SIGINT)         # the second, as the interrupt checkpoint is written
"""



def test_ctrl_c_while_the_data_loads_exits_quietly(tmp_path):
    done = run_driver(tmp_path, CTRL_C_WHILE_LOADING, *TINY, "hydra.run.dir=outputs/x")
    output = done.stdout + done.stderr
    assert done.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "cifarnet: interrupted (SIGINT)" in output and len(output.strip().splitlines()) <= 3, output


def test_a_second_ctrl_c_while_the_interrupt_checkpoint_is_written_exits_quietly(tmp_path):
    done = run_driver(tmp_path, CTRL_C_TWICE, *TINY, "trainer.epochs=2", "+logger.probe={}", "hydra.run.dir=outputs/x")
    output = done.stdout + done.stderr
    assert done.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "second SIGINT: aborted at once" in output and len(output.strip().splitlines()) <= 8, output
    checkpoints = tmp_path / "outputs" / "x" / "checkpoints"
    assert not list(checkpoints.glob("interrupt_*")) and not list(checkpoints.glob(".*.tmp"))


# -- smaller things ------------------------------------------------------------------------------
def test_result_json_writes_missing_metrics_as_null(first):
    _, run = first
    final = json.loads((run / "result.json").read_text())["final"]
    assert final["val_acc"] is None and final["val_loss"] is None and final["test_acc"] is not None


def test_topk_below_one_is_refused(first):
    cwd, run = first
    (cwd / "img.png").write_bytes(b"")
    done = cifarnet(cwd, "mode=predict", f"ckpt={run}", "images=img.png", "topk=0", "hydra.run.dir=outputs/p")
    assert done.returncode == 1 and "topk must be >= 1, got 0" in errors_in(done)[0]


def test_eval_report_places_an_interrupt_checkpoint_inside_its_epoch():
    from cifarnet.experiment import format_eval_report

    names = [str(i) for i in range(2)]
    report = {"checkpoint": "c.npz", "epoch": 3, "batch": 17, "trained_on_backend": "numpy", "backend": "numpy",
              "accuracy": 0.5, "images": 4, "loss": 0.7, "class_names": names,
              "per_class_accuracy": dict.fromkeys(names, 0.5), "confusion_matrix": [[1, 1], [1, 1]]}
    assert "(3 epochs and 17 batches of epoch 4," in format_eval_report(report)


def test_the_epoch_line_warns_while_running_statistics_are_young(first):
    _, run = first
    log = (run / "cifarnet.log").read_text()
    assert "batch-norm running statistics have seen only 8 steps" in log        # 256 / 32 per epoch


def test_the_sweep_summary_shows_the_swept_keys_from_the_first_job_on(tmp_path):
    done = cifarnet(tmp_path, "-m", *TINY, "data.train_size=64", "trainer.epochs=1", "optimizer.lr=0.1,0.01",
                    "hydra.sweep.dir=outputs/sweep")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert rows and all(line.split(" | ")[2] in ("optimizer.lr=0.1", "optimizer.lr=0.01") for line in rows), rows
    assert done.stdout.count("| rank | job |") == 1                     # the table once, at the end
    assert len([line for line in done.stdout.splitlines() if "sweep: job " in line]) == 2   # a line per job
    assert "sweep finished; summary outputs/sweep/sweep_summary.md" in done.stdout
