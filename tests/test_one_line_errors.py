"""Every expected failure is one line on stderr, at once, naming the cause; and the smaller
promises of the command line (help, version, completion, partial predictions, quick subsets)."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from .cli_helpers import TINY, cifarnet, errors_in, run_driver, train_tiny

pytestmark = pytest.mark.slow          # end to end: each test starts python -m cifarnet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("errors")
    train_tiny(cwd, "outputs/run", "trainer.epochs=1")
    return cwd, cwd / "outputs" / "run"


def one_error_on_stderr(done) -> str:
    """The single error line, which must be on stderr (and only there, once) with exit status 1."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert errors_in(done) == [line for line in done.stderr.splitlines() if "cifarnet: error:" in line]
    assert len(errors_in(done)) == 1, done.stdout + done.stderr
    return errors_in(done)[0]


# -- errors after the job started go to stderr -------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["data.root=nowhere", "data.download=false"], "CIFAR-10 not found"),
    (["mode=eval", "ckpt=missing.npz"], "missing.npz"),
    (["backend=cupy", *TINY], "CuPy"),
])
def test_errors_after_the_job_starts_go_to_stderr(tmp_path, args, expected):
    done = cifarnet(tmp_path, *args, "hydra.run.dir=outputs/x")
    assert expected in one_error_on_stderr(done)


# -- tracebacks where one line was promised ----------------------------------------------------------
def test_a_run_directory_under_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    message = one_error_on_stderr(cifarnet(tmp_path, *TINY, "hydra.run.dir=afile/run"))
    assert message == "cifarnet: error: afile/run: not a directory"


READ_ONLY = """
import errno, pathlib
real = pathlib.Path.mkdir
def mkdir(self, *args, **kwargs):
    if "readonly" in str(self):
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    return real(self, *args, **kwargs)
pathlib.Path.mkdir = mkdir
"""


def test_a_read_only_run_directory_is_one_line(tmp_path):
    done = run_driver(tmp_path, READ_ONLY, *TINY, "hydra.run.dir=readonly/run")
    assert one_error_on_stderr(done) == "cifarnet: error: readonly/run: read-only file system"


HIDE = """
import pathlib, sys, tempfile
hide = pathlib.Path(tempfile.mkdtemp())
for name in {names!r}:
    (hide / name).mkdir()
    (hide / name / "__init__.py").write_text("raise ImportError('hidden by the test')")
sys.path.insert(0, str(hide))
"""


@pytest.mark.parametrize("logger, names, extra", [
    ("logger=[csv,tensorboard]", ["tensorboardX"], "tensorboard"),
    ("logger=mlflow", ["mlflow"], "mlflow"),
])
def test_a_tracker_without_its_package_names_the_extra(tmp_path, logger, names, extra):
    done = run_driver(tmp_path, HIDE.format(names=names), *TINY, logger, "hydra.run.dir=outputs/x")
    assert f"pip install 'cifarnet[{extra}]'" in one_error_on_stderr(done)
    assert not (tmp_path / "outputs").exists()


def test_an_empty_logger_list_trains_with_metrics_csv_only(tmp_path):
    done = train_tiny(tmp_path, "outputs/run", "logger=[]", "trainer.epochs=1")
    assert (tmp_path / "outputs" / "run" / "metrics.csv").is_file(), done.stdout


def test_help_piped_into_head_ends_quietly(tmp_path):
    done = subprocess.run(f"{sys.executable} -m cifarnet --help | head -1", shell=True, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("cifarnet: ") and "Error" not in done.stderr and "Traceback" not in done.stderr


def test_an_unreachable_mlflow_server_fails_at_once(tmp_path):
    pytest.importorskip("mlflow")
    started = time.perf_counter()
    done = cifarnet(tmp_path, *TINY, "logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9",
                    "hydra.run.dir=outputs/x", timeout=90)
    assert time.perf_counter() - started < 60
    assert "http://127.0.0.1:9 does not answer" in one_error_on_stderr(done)
    assert not (tmp_path / "outputs").exists()                       # nothing left behind


# -- fine-tuning from a shipped checkpoint ------------------------------------------------------------
def test_resume_of_a_shipped_checkpoint_says_to_use_init_from(tmp_path):
    message = one_error_on_stderr(cifarnet(tmp_path, "resume=pretrained:simplecnn", "trainer.epochs=31", *TINY))
    assert "init_from=pretrained:simplecnn" in message


def test_init_from_starts_a_new_run_from_the_checkpoint_weights(trained, tmp_path):
    from cifarnet import checkpoint as ckpt

    cwd, run = trained
    train_tiny(cwd, "outputs/tuned", f"init_from={run}", "trainer.epochs=1", "optimizer.lr=1e-9")
    source = ckpt.load(run / "checkpoints" / "best_numpy.npz").model_state
    tuned = ckpt.load(cwd / "outputs" / "tuned" / "checkpoints" / "epoch001_numpy.npz").model_state
    weights = [k for k in source if not k.endswith(("running_mean", "running_var"))]
    assert all(np.allclose(source[k], tuned[k], atol=1e-6) for k in weights)        # lr 1e-9: barely moved
    log = (cwd / "outputs" / "tuned" / "cifarnet.log").read_text()      # the statistics came with the weights:
    assert "have seen only 16 steps" in log                               # 8 steps there, 8 here
    wrong = cifarnet(cwd, f"init_from={run}", "model=resnet20", *TINY, "hydra.run.dir=outputs/wrong")
    assert "holds model 'simplecnn'" in one_error_on_stderr(wrong)


# -- mismatches refused --------------------------------------------------------------------------------
def test_eval_on_data_with_other_class_names_is_refused(trained, tmp_path):
    cwd, run = trained                                              # trained on synthetic data
    image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for i, name in enumerate(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck"]):
            (cwd / "cifar" / split / name).mkdir(parents=True, exist_ok=True)
            image.new("RGB", (32, 32), (i * 20, 0, 0)).save(cwd / "cifar" / split / name / "0.png")
    done = cifarnet(cwd, "mode=eval", f"ckpt={run}", "data=image_folder", "data.root=cifar",
                    "hydra.run.dir=outputs/eval_other")
    assert "trained on other classes" in one_error_on_stderr(done)


def test_export_with_another_model_is_refused(trained):
    cwd, run = trained
    done = cifarnet(cwd, "mode=export", f"ckpt={run}", "model=resnet32", "hydra.run.dir=outputs/export_other")
    assert "holds a different architecture" in one_error_on_stderr(done)


def test_a_setting_the_model_does_not_have_is_refused(tmp_path):
    done = cifarnet(tmp_path, *TINY, "model.shortcut=zero_pad", "hydra.run.dir=outputs/x")
    assert "model.shortcut does not apply to simplecnn" in one_error_on_stderr(done)


def test_a_bad_optimizer_setting_is_refused_before_the_data_loads(tmp_path):
    started = time.perf_counter()
    done = cifarnet(tmp_path, "optimizer.lr=-1", "data.root=nowhere", "data.download=false")
    assert "lr" in one_error_on_stderr(done) and "CIFAR-10" not in done.stderr
    assert time.perf_counter() - started < 30


# -- predictions --------------------------------------------------------------------------------------
def test_prediction_skips_an_unreadable_image_and_names_it(trained):
    image = pytest.importorskip("PIL.Image")
    cwd, run = trained
    (cwd / "photos").mkdir()
    image.new("RGB", (40, 30), (200, 30, 30)).save(cwd / "photos" / "good.png")
    (cwd / "photos" / "broken.jpg").write_bytes(b"not an image")
    done = cifarnet(cwd, "mode=predict", f"ckpt={run}", "images=photos", "topk=1", "hydra.run.dir=outputs/p")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "top-1 classes for 1 image (1 unreadable, skipped)" in done.stdout
    assert "cifarnet: skipped photos/broken.jpg" in done.stderr                  # the warning, on stderr
    rows = (cwd / "outputs" / "p" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("photos/good.png,")
    (cwd / "photos" / "good.png").unlink()
    none = cifarnet(cwd, "mode=predict", f"ckpt={run}", "images=photos", "hydra.run.dir=outputs/p2")
    assert "none of the 1 images could be read" in one_error_on_stderr(none)


# -- help, version, completion ------------------------------------------------------------------------
def test_help_starts_with_cifarnet_and_its_modes(tmp_path):
    done = cifarnet(tmp_path, "--help")
    head = done.stdout.split("== Configuration groups ==")[0]
    assert head.startswith("cifarnet: ") and "mode=train (default), eval, predict or export" in head
    assert "python -m cifarnet mode=eval ckpt=" in head and "Hydra" not in head


def test_version_is_the_package_version(tmp_path):
    from cifarnet import __version__

    done = cifarnet(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.startswith(f"cifarnet {__version__} (Hydra ")


def test_the_suggested_completion_command_installs_completion(tmp_path):
    done = cifarnet(tmp_path, "--hydra-help")
    install = next(line.strip() for line in done.stdout.splitlines() if "-sc install=bash" in line)
    assert install == 'eval "$(cifarnet -sc install=bash)"'
    script = cifarnet(tmp_path, "-sc", "install=bash")
    assert script.returncode == 0 and "complete -o nospace -o default -F hydra_bash_completion cifarnet" in \
        script.stdout


# -- a quick look at real data ------------------------------------------------------------------------
def test_any_data_source_can_be_limited_to_a_subset(tmp_path):
    from cifarnet.data import load_dataset

    full = load_dataset("synthetic", train_size=300, test_size=50)
    part = load_dataset("synthetic", train_size=300, test_size=50, max_train_images=64, max_test_images=16,
                        val_size=8, val_seed=3)
    assert (len(part.train), len(part.val), len(part.test)) == (56, 8, 16)
    rows = {tuple(r.ravel()[:64]) for r in full.train.images}
    assert all(tuple(r.ravel()[:64]) in rows for r in part.train.images)            # a subset of the images
    again = load_dataset("synthetic", train_size=300, test_size=50, max_train_images=64, max_test_images=16,
                         val_size=8, val_seed=3)
    assert np.array_equal(again.train.images, part.train.images)                   # the same for the same seed
    with pytest.raises(ValueError, match="data.max_train_images must be >= 1"):
        load_dataset("synthetic", train_size=300, test_size=50, max_train_images=0)
    done = train_tiny(tmp_path, "outputs/run", "data.max_train_images=96", "data.max_test_images=32",
                      "trainer.epochs=1")
    assert "96 train, 32 test images" in done.stdout
    result = json.loads((tmp_path / "outputs" / "run" / "result.json").read_text())
    assert result["final"]["step"] == 96 // 32


# -- a bug is not a user error ---------------------------------------------------------------------------
def test_a_bug_keeps_its_traceback_and_says_it_is_one(tmp_path):
    """A ValueError from deep in the code (a broadcasting error, say) is not bad input: it must not
    end in one tidy line that reads like a user's mistake."""
    patch = """
import cifarnet.losses as losses
def broken(self, logits, labels, keep=True):
    raise ValueError("operands could not be broadcast together with shapes (32,10) (31,10)")
losses.SoftmaxCrossEntropy.forward = broken
"""
    done = run_driver(tmp_path, patch, *TINY, "trainer.epochs=1", "hydra.run.dir=outputs/bug")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" in done.stderr and "operands could not be broadcast" in done.stderr
    assert "internal error: ValueError: this is a bug in cifarnet, not a problem with your input" in done.stderr
    assert not errors_in(done)                                           # no "cifarnet: error:" line
    bad = one_error_on_stderr(cifarnet(tmp_path, *TINY, "trainer.keep_last=0", "hydra.run.dir=outputs/bad"))
    assert "trainer.keep_last must be >= 1, got 0" in bad               # bad input still ends in one line
