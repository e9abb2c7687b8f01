"""Checkpoint files: round trip, integrity, no pickle, atomic writes, cross-backend loading."""
import errno
import os
import pickle
import zipfile

import numpy as np
import pytest

from cifarnet import checkpoint as ckpt
from cifarnet.backend import NUMPY, to_numpy
from cifarnet.experiment import restore_model
from cifarnet.layers import TRAIN
from cifarnet.models import build_model, model_description
from cifarnet.optim import Adam

from .payloads import TouchPayload


@pytest.fixture
def saved(tmp_path):
    model = build_model(model_description("simplecnn"), seed=3)
    opt = Adam(lr=0.01)
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    out, ctx = model.forward(x, TRAIN)
    opt.step(model, model.backward(ctx, out)[1])
    meta = {"model": model_description("simplecnn"), "input_shape": [32, 32, 3], "backend": "numpy",
            "state": {"epoch": 1}, "rng": model.generator_states()}
    path = ckpt.save(tmp_path / "ckpts" / "epoch001_numpy.npz", model.state_dict(), opt.state_dict(), meta)
    return path, model, opt


def test_round_trip(saved):
    path, model, opt = saved
    loaded = ckpt.load(path)
    assert loaded.meta["model"]["name"] == "simplecnn" and loaded.meta["cifarnet_version"]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.model_state[name], value)
    assert loaded.optimizer_state["steps"] == 1
    for name, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(loaded.optimizer_state["state"][name][key], value)
    restored = restore_model(loaded, NUMPY)
    x = np.ones((2, 32, 32, 3), np.float32)
    np.testing.assert_array_equal(model.forward_eval(x), restored.forward_eval(x))


def test_cross_backend_load(saved, backend):
    """A checkpoint written from NumPy loads onto either backend and gives the same predictions."""
    path, model, _ = saved
    restored = restore_model(ckpt.load(path), backend)
    x = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(to_numpy(restored.forward_eval(backend.asarray(x))), model.forward_eval(x), rtol=1e-5,
                               atol=1e-5)


def test_only_plain_arrays_inside(saved):
    path, _, _ = saved
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    assert "__meta__.npy" in names and "__checksum__.npy" in names
    with np.load(path, allow_pickle=False) as npz:                    # would raise on any object array
        assert all(npz[k].dtype != object for k in npz.files)
        assert {k.split("/")[0] for k in npz.files} == {"model", "optim", "__meta__", "__checksum__"}


def test_flipped_byte_fails_with_a_checksum_error(saved, tmp_path):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=r"flipped\.npz.*checksum"):
        ckpt.load(bad)


def test_truncation_fails_with_a_checksum_error(saved, tmp_path):
    path, _, _ = saved
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ckpt.CheckpointError, match=r"truncated\.npz.*checksum"):
        ckpt.load(bad)


def test_altered_array_in_a_valid_archive_fails_the_checksum(saved, tmp_path):
    path, _, _ = saved
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["model/conv1.W"] = arrays["model/conv1.W"] + 1e-3          # a well-formed but altered file
    np.savez(tmp_path / "altered.npz", **arrays)
    with pytest.raises(ckpt.CheckpointError, match=r"altered\.npz failed its checksum: stored"):
        ckpt.load(tmp_path / "altered.npz")


def test_pickled_payloads_are_refused_and_never_run(tmp_path):
    sentinel = tmp_path / "ran"
    with open(tmp_path / "plain_pickle.npz", "wb") as f:              # a pickle posing as a checkpoint
        pickle.dump(TouchPayload(sentinel), f)
    with pytest.raises(ckpt.CheckpointError, match="plain_pickle.npz holds pickled objects"):
        ckpt.load(tmp_path / "plain_pickle.npz")
    np.savez(tmp_path / "object_array.npz", evil=np.array([TouchPayload(sentinel)], dtype=object))
    with pytest.raises(ckpt.CheckpointError, match="object_array.npz holds pickled objects"):
        ckpt.load(tmp_path / "object_array.npz")
    assert not sentinel.exists()


def test_crash_between_write_and_rename_keeps_the_previous_file(saved, monkeypatch):
    path, model, opt = saved
    before = path.read_bytes()

    def crash(tmp, final):
        raise KeyboardInterrupt("power cut")                          # not an OSError: re-raised as is

    monkeypatch.setattr(ckpt, "_before_rename", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(path, {k: v * 0 for k, v in model.state_dict().items()}, opt.state_dict(), {"x": 1})
    assert path.read_bytes() == before and ckpt.load(path).meta["state"]["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]          # no temporary left
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(path.with_name("epoch002_numpy.npz"), model.state_dict(), None, {})
    assert not path.with_name("epoch002_numpy.npz").exists()


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".epoch003_numpy.npz.k2j3.tmp").write_bytes(b"half a file")
    (tmp_path / "epoch002_numpy.npz").write_bytes(b"kept")
    assert [p.name for p in ckpt.remove_stale_temporaries(tmp_path)] == [".epoch003_numpy.npz.k2j3.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["epoch002_numpy.npz"]


def test_disk_full_during_write(saved, monkeypatch):
    path, model, opt = saved
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_fail(f, **arrays):
        real_savez(f, **arrays)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(ckpt.CheckpointError, match=r"epoch001_numpy.npz: No space left on device; the previous"):
        ckpt.save(path, model.state_dict(), opt.state_dict(), {})
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == [path.name]


def test_read_only_directory(saved, tmp_path, monkeypatch):
    path, model, opt = saved
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:
            # root ignores permission bits, so make the file system answer as a read-only one would
            def read_only(*args, **kwargs):
                raise OSError(errno.EROFS, "Read-only file system")

            monkeypatch.setattr(ckpt.tempfile, "mkstemp", read_only)
        with pytest.raises(ckpt.CheckpointError, match=r"cannot write checkpoint .*locked/epoch001_numpy.npz: "):
            ckpt.save(locked / "epoch001_numpy.npz", model.state_dict(), opt.state_dict(), {})
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_architecture_mismatch_names_the_parameter(saved):
    path, _, _ = saved
    state = ckpt.load(path).model_state
    with pytest.raises(KeyError, match="stem_conv.W"):
        build_model(model_description("resnet20")).load_state_dict(state)
    wider = build_model({**model_description("simplecnn"), "layers": [
        {"type": "conv", "out_channels": 16, "kernel_size": 3}, *model_description("simplecnn")["layers"][1:]]})
    with pytest.raises(ValueError, match=r"'conv1.W': model has \(3, 3, 3, 16\), state has \(3, 3, 3, 8\)"):
        wider.load_state_dict(state)


def test_missing_file(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match=f"checkpoint {tmp_path}/gone.npz not found"):
        ckpt.load(tmp_path / "gone.npz")


def test_a_checkpoint_of_the_previous_config_layout_evaluates_and_resumes(tmp_path, caplog):
    """Checkpoints written before the schemas were read off signatures saved every data source's
    keys side by side, every schedule's, and the whole model description in ``model``."""
    import logging

    from cifarnet.experiment import evaluate_checkpoint, merge_with_checkpoint, train

    from .cli_helpers import compose_plain

    cfg = compose_plain("trainer.epochs=1", "schedule=step")
    train(cfg, tmp_path / "run")
    path = tmp_path / "run" / "checkpoints" / "epoch001_numpy.npz"
    old = ckpt.load(path)
    config = old.meta["config"]
    config["data"].update(root="data", download=True, image_size=32)        # the old DataConfig's union
    config["schedule"].update(min_lr=0.0, end_lr=0.0)                       # the old ScheduleConfig's
    config["model"].update(model_description("simplecnn"), num_classes=10)  # the description itself
    ckpt.save(path, old.model_state, old.optimizer_state, dict(old.meta, config=config))

    saved = ckpt.load(path)
    caplog.set_level(logging.INFO, logger="cifarnet.experiment")
    report = evaluate_checkpoint(merge_with_checkpoint(saved.meta["config"], cfg, [], str(path), "eval"), saved,
                                 tmp_path / "eval")
    assert report["images"] == 64
    assert "load_synthetic takes no download, root (from an older config); left out" in caplog.text
    resumed = merge_with_checkpoint(saved.meta["config"], compose_plain("trainer.epochs=2"), ["trainer.epochs"],
                                    str(path))
    assert train(resumed, tmp_path / "run", saved)["epochs"] == 2


def test_a_resumed_run_keeps_its_checkpoints_model_whatever_the_presets_say_now(tmp_path):
    """A preset edited after the run started (here: SimpleCNN's dropout) must not change it."""
    from cifarnet.experiment import merge_with_checkpoint, train
    from cifarnet.models import presets

    from .cli_helpers import compose_plain

    train(compose_plain("trainer.epochs=1"), tmp_path / "run")
    saved = ckpt.load(tmp_path / "run" / "checkpoints" / "epoch001_numpy.npz")
    original = presets.MODELS.get("simplecnn")
    with presets.MODELS.replaced("simplecnn", lambda: {**original(), "dropout": 0.9}):
        resumed = merge_with_checkpoint(saved.meta["config"], compose_plain("trainer.epochs=2"), ["trainer.epochs"],
                                        str(saved.path))
        train(resumed, tmp_path / "run", saved)
    after = ckpt.load(tmp_path / "run" / "checkpoints" / "epoch002_numpy.npz")
    assert after.meta["model"] == saved.meta["model"] and after.meta["model"]["dropout"] == 0.5
