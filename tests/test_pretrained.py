"""The checkpoints shipped with cifarnet: intact, documented, and usable with no training."""
import json

import numpy as np
import pytest

from cifarnet import checkpoint as ckpt
from cifarnet import pretrained
from cifarnet.backend import NUMPY
from cifarnet.experiment import restore_model

from .cifar_fixtures import write_cifar
from .cli_helpers import cifarnet


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_each_shipped_checkpoint_is_intact_and_says_how_it_was_made(name):
    path = pretrained.path(name)
    found = ckpt.resolve(f"pretrained:{name}")                 # verifies the SHA-256 checksum
    assert path.stat().st_size < 1.02 * sum(a.nbytes for a in found.model_state.values()) + 100_000   # weights only
    assert found.optimizer_state is None and found.meta["model"]["name"] == name
    made = found.meta["pretrained"]
    assert {"recipe", "command", "epochs_trained", "data", "test_accuracy"} <= set(made)
    assert 0.5 < made["test_accuracy"] < 1 and "JPEG copy" in made["data"]
    model = restore_model(found, NUMPY)
    logits = model.forward_eval(np.zeros((2, *found.meta["input_shape"]), np.float32))
    assert logits.shape == (2, len(found.meta["class_names"])) and np.isfinite(logits).all()


def test_an_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ckpt.CheckpointError,
                       match="no pre-trained checkpoint 'vgg'; there are: simplecnn, resnet32, airbench94"):
        ckpt.resolve("pretrained:vgg")


@pytest.mark.slow
@pytest.mark.parametrize("name", pretrained.NAMES)
def test_evaluate_and_predict_with_each_shipped_checkpoint(tmp_path, name):
    """As the README says: from a fresh directory with the data in ./data, no data overrides."""
    image = pytest.importorskip("PIL.Image", reason="predict reads images with Pillow")
    write_cifar(tmp_path / "data", test=30)                   # the CIFAR-10 layout and class names, tiny
    done = cifarnet(tmp_path, "mode=eval", f"ckpt=pretrained:{name}", "hydra.run.dir=outputs/eval")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "outputs" / "eval" / "eval.json").read_text())["images"] == 30
    for i, colour in enumerate([(200, 40, 40), (40, 200, 40)]):
        image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
    done = cifarnet(tmp_path, "mode=predict", f"ckpt=pretrained:{name}", "images=*.png",
                    "hydra.run.dir=outputs/predict")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = (tmp_path / "outputs" / "predict" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("path,class_1,prob_1")


def test_strip_keeps_the_model_and_drops_the_machine_s_data_folder(tmp_path):
    from cifarnet.experiment import train

    from .cli_helpers import compose_plain

    train(compose_plain("trainer.epochs=1", "trainer.ema_every=2"), tmp_path / "run")
    source = tmp_path / "run" / "checkpoints" / "epoch001_numpy.npz"
    run = ckpt.load(source)
    run.meta["config"]["data"].update(root="/home/someone/datasets", download=False)     # as a CIFAR-10 run has them
    ckpt.save(source, run.model_state, run.optimizer_state, run.meta)
    shipped = ckpt.load(ckpt.strip(source, tmp_path / "shipped.npz", {"recipe": "tiny"}))
    assert shipped.optimizer_state is None and shipped.extras == {} and shipped.meta["pretrained"] == {"recipe": "tiny"}
    assert shipped.meta["config"]["data"]["root"] == "data" and shipped.meta["config"]["data"]["download"] is True
    assert all(np.array_equal(shipped.model_state[k], v) for k, v in run.model_state.items())


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_no_shipped_checkpoint_names_a_machine_s_data_folder(name):
    data = ckpt.resolve(f"pretrained:{name}").meta["config"]["data"]
    assert {k: data[k] for k in ckpt.SHIPPED_DATA} == ckpt.SHIPPED_DATA


def test_evaluation_reads_the_data_where_the_user_s_config_says():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from cifarnet.cli import schema
    from cifarnet.cli.app import config_dir
    from cifarnet.experiment import merge_with_checkpoint

    from .cli_helpers import compose_plain

    schema.register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        saved, current = (OmegaConf.to_container(compose(config_name="config", overrides=o), resolve=True,
                                                 enum_to_str=True)
                          for o in (["data.eval_batch_size=100"], ["mode=eval"]))
    saved["data"].update(root="/home/someone/datasets", download=False, normalization="cifar10")
    merged = merge_with_checkpoint(saved, current, [], source="x.npz", purpose="eval")
    assert (merged["data"]["root"], merged["data"]["download"]) == ("data", True)           # this machine's
    assert merged["data"]["eval_batch_size"] == current["data"]["eval_batch_size"]
    assert merged["data"]["normalization"] == "cifar10"                                    # the checkpoint's
    resumed = merge_with_checkpoint(saved, current, [], source="x.npz", purpose="resume")
    assert resumed["data"]["root"] == "/home/someone/datasets"                   # a resumed run keeps its data
    synthetic = compose_plain("data.test_size=48")                                  # another source: the saved one
    merged = merge_with_checkpoint(synthetic, current, [], source="x.npz", purpose="eval")
    assert merged["data"]["source"] == "synthetic" and merged["data"]["test_size"] == 48
