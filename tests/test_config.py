"""The real config from conf/ composes for every choice, with the recommended settings (issue 4)."""
import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cifarnet.cli import schema
from cifarnet.cli.app import config_dir
from cifarnet.cli.errors import hydra_message
from cifarnet.experiment import make_lr_schedule_from, make_optimizer, model_description
from cifarnet.models import MODELS, model_description as preset

CONF = Path(config_dir())
schema.register()


def choices(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_context():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


@pytest.fixture
def composer(hydra_context):
    return lambda *overrides: OmegaConf.to_container(
        compose(config_name="config", overrides=list(overrides)), resolve=True, enum_to_str=True)


def composition_error(composer, *overrides) -> str:
    """The one-line message the command line would print for these overrides."""
    with pytest.raises(Exception) as err:
        composer(*overrides)
    message = hydra_message(err.value)
    assert message is not None, f"not a composition error: {err.value!r}"
    return message


def test_every_group_offers_what_the_registries_know():
    assert choices("model") == sorted(MODELS.names())
    assert choices("optimizer") == ["adam", "adamw", "sgd"]
    assert choices("data") == ["cifar10", "image_folder", "synthetic"]
    assert choices("backend") == ["cupy", "numpy"]
    assert choices("schedule") == ["constant", "cosine", "linear", "step"]


def every_choice_combinations():
    """Every model x optimizer pair, with data and backend cycling, then every data x backend pair:
    each option of each group composes, and in company of every option of the other groups."""
    datas, backends = itertools.cycle(choices("data")), itertools.cycle(choices("backend"))
    for model, opt in itertools.product(choices("model"), choices("optimizer")):
        yield model, opt, next(datas), next(backends)
    for data, backend in itertools.product(choices("data"), choices("backend")):
        yield "simplecnn", "sgd", data, backend


def test_every_model_optimizer_data_backend_choice_composes(composer):
    for model, opt, data, backend in every_choice_combinations():
        overrides = [f"model={model}", f"optimizer={opt}", f"data={data}", f"backend={backend}"]
        if data == "image_folder":
            overrides.append("data.root=somewhere")
        cfg = composer(*overrides)
        assert cfg["model"]["name"] == model and cfg["optimizer"]["name"] == opt
        assert cfg["data"]["source"] == data and cfg["backend"]["name"] == backend
        make_optimizer(cfg["optimizer"])                       # names resolve through the registry


def test_every_schedule_composes_and_builds(composer):
    for name in choices("schedule"):
        cfg = composer(f"schedule={name}", "schedule.warmup_epochs=1")
        schedule = make_lr_schedule_from(cfg["schedule"], 0.1, epochs=20, steps_per_epoch=10)
        assert schedule(0) == pytest.approx(0.01) and schedule(9) == pytest.approx(0.1)


def test_default_is_simplecnn_with_its_recommended_settings(composer):
    cfg = composer()
    assert cfg["model"]["name"] == "simplecnn" and cfg["optimizer"]["name"] == "sgd"
    assert (cfg["optimizer"]["lr"], cfg["model"]["dropout"], cfg["data"]["batch_size"], cfg["trainer"]["epochs"]) \
        == (0.01, 0.5, 64, 20)
    assert cfg["data"]["source"] == "cifar10" and cfg["data"]["root"] == "data" and cfg["data"]["download"]


def test_resnet32_brings_its_recommended_settings(composer):
    cfg = composer("model=resnet32")
    assert cfg["optimizer"]["name"] == "adam"
    assert (cfg["optimizer"]["lr"], cfg["model"]["dropout"], cfg["data"]["batch_size"], cfg["trainer"]["epochs"]) \
        == (0.01, 0.3, 128, 50)


def test_explicit_choices_win_over_recommendations(composer):
    cfg = composer("model=resnet32", "optimizer=sgd", "optimizer.lr=0.2", "data.batch_size=32",
                   "trainer.epochs=3", "model.dropout=0.1", "seed=1", "backend=cupy")
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.2
    assert (cfg["data"]["batch_size"], cfg["trainer"]["epochs"], cfg["model"]["dropout"], cfg["seed"]) == (32, 3, 0.1, 1)
    assert cfg["backend"]["name"] == "cupy"


@pytest.mark.parametrize("name", ["simplecnn", "resnet20", "resnet32", "resnet110"])
def test_model_yaml_is_the_builtin_description(composer, name):
    description = model_description(composer(f"model={name}")["model"])
    assert "num_classes" not in description                  # taken from the data
    assert {**description, "num_classes": 10} == preset(name)


@pytest.mark.parametrize("overrides, message", [
    (["trainer.epoch=3"], "Could not override 'trainer.epoch'. Key 'epoch' not in 'TrainerConfig'"),
    (["trainer.epochs=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["optimizer=adam", "optimizer.momentum=0.9"], "Key 'momentum' not in 'AdamConfig'"),
    (["data.augment.pad_mode=wrap"], "Invalid value 'wrap', expected one of [zero, reflect]"),
    (["mode=serve"], "Invalid value 'serve', expected one of [train, eval, predict]"),
    (["model=resnet18"], "unknown model 'resnet18'; known: resnet110, resnet20, resnet32, resnet44, resnet56, simplecnn"),
    (["optimizer=rmsprop"], "unknown optimizer 'rmsprop'; known: adam, adamw, sgd"),
])
def test_schema_rejects_bad_keys_and_types(composer, overrides, message):
    text = composition_error(composer, *overrides)
    assert message in text and "\n" not in text
    composer("optimizer.momentum=0.5")                       # momentum is fine for SGD


def test_hydra_settings(hydra_context):
    hydra_cfg = compose(config_name="config", return_hydra_config=True).hydra
    assert hydra_cfg.job.chdir is False and hydra_cfg.job.name == "cifarnet"
    assert "%f" in OmegaConf.to_container(hydra_cfg.run)["dir"]          # sub-second run directories
