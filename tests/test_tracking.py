"""Experiment trackers: TensorBoard event files and MLflow runs hold what metrics.csv holds."""
import csv
import struct

import pytest

from .cli_helpers import compose_plain


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def read_events(folder):
    """Every event of every TensorBoard event file under ``folder``, parsed with tensorboardX's
    protocol buffers (event files are TFRecords: length, its CRC, the record, its CRC)."""
    from tensorboardX.proto import event_pb2

    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i:i + 8])
            yield event_pb2.Event.FromString(data[i + 12:i + 12 + length])
            i += 12 + length + 4


def test_tensorboard_scalars_read_back_equal_metrics_csv(tmp_path):
    pytest.importorskip("tensorboardX", reason="logger=tensorboard needs tensorboardX (the [tensorboard] extra)")
    from cifarnet.experiment import train

    train(compose_plain("trainer.epochs=2", "logger=[csv,tensorboard]"), tmp_path)
    scalars: dict[str, dict[int, float]] = {}
    texts = []
    for event in read_events(tmp_path / "tensorboard"):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
            else:
                texts.append(value.tag)
    rows = read_metrics(tmp_path)
    for tag, column in (("train/loss", "train_loss"), ("train/acc", "train_acc"), ("test/loss", "test_loss"),
                        ("test/acc", "test_acc")):
        assert scalars[tag] == {int(r["epoch"]): pytest.approx(float(r[column]), rel=1e-6) for r in rows}, tag
    assert sorted(scalars["lr"]) == list(range(int(rows[-1]["step"])))          # the rate at every step
    assert any(tag.startswith("config") for tag in texts)


@pytest.mark.slow                     # MLflow creates its SQLite store: about 10 s
def test_mlflow_records_one_run_with_config_metrics_and_artifacts(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="logger=mlflow needs mlflow-skinny (the [mlflow] extra)")
    from mlflow.tracking import MlflowClient

    from cifarnet.experiment import train

    monkeypatch.chdir(tmp_path)                                   # the default store: ./outputs/mlflow.db
    run_dir = tmp_path / "outputs" / "run"
    train(compose_plain("trainer.epochs=2", "logger=[csv,mlflow]", "plots=true"), run_dir)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cifarnet")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["cifarnet.run_dir"] == str(run_dir.resolve())
    assert run.data.params["optimizer.lr"] == "0.01" and run.data.params["data.source"] == "synthetic"
    # the model as built (the preset's values), not the config's unset keys
    assert run.data.params["model.dropout"] == "0.5" and run.data.params["model.init"] == "pytorch"
    rows = read_metrics(run_dir)
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "test_acc")}
    assert history == {int(r["epoch"]): pytest.approx(float(r["test_acc"])) for r in rows}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "best_numpy.npz" in artifacts and "accuracy.png" in artifacts


def test_lr_csv_records_every_step_and_a_resume_continues_it(tmp_path):
    """The csv logger writes the rate of every step; a run resumed from epoch 1 rewrites nothing
    before its step and repeats nothing after it."""
    from cifarnet import checkpoint as ckpt
    from cifarnet.experiment import make_lr_schedule_from, merge_with_checkpoint, train

    cfg = compose_plain("trainer.epochs=3", "schedule=cosine", "schedule.warmup_epochs=1")
    train(cfg, tmp_path / "straight")
    with open(tmp_path / "straight" / "lr.csv") as f:
        straight = [(int(r["step"]), float(r["lr"])) for r in csv.DictReader(f)]
    schedule = make_lr_schedule_from(cfg["schedule"], cfg["optimizer"]["lr"], 3, 8)      # 256 / 32 steps per epoch
    assert straight == [(s, schedule(s)) for s in range(24)]
    train(compose_plain("trainer.epochs=1", "schedule=cosine", "schedule.warmup_epochs=1"), tmp_path / "pieces")
    first = ckpt.load(tmp_path / "pieces" / "checkpoints" / "epoch001_numpy.npz")
    (tmp_path / "pieces" / "lr.csv").write_text("step,lr\n" + "".join(f"{s},9.0\n" for s in range(30)))   # stale rows
    resumed = merge_with_checkpoint(first.meta["config"], cfg, ["trainer.epochs"], str(first.path))
    train(resumed, tmp_path / "pieces", first)
    with open(tmp_path / "pieces" / "lr.csv") as f:
        pieces = [(int(r["step"]), float(r["lr"])) for r in csv.DictReader(f)]
    assert [s for s, _ in pieces] == list(range(24)) and pieces[8:] == straight[8:]
