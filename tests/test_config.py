"""The real config from conf/ composes for every choice, with the recommended settings."""
import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cifarnet.cli import schema
from cifarnet.cli.app import config_dir
from cifarnet.cli.errors import hydra_message
from cifarnet.experiment import describe_model, make_lr_schedule_from, make_optimizer
from cifarnet.experiment.components import LOADER_KEYS
from cifarnet.models import MODELS
from cifarnet.models import model_description as preset
from cifarnet.schedules import LR_SCHEDULES

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
    assert choices("schedule") == sorted(LR_SCHEDULES.names())


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
    assert (cfg["optimizer"]["lr"], describe_model(cfg["model"])["dropout"], cfg["data"]["batch_size"],
            cfg["trainer"]["epochs"]) == (0.01, 0.5, 64, 20)
    assert cfg["data"]["source"] == "cifar10" and cfg["data"]["root"] == "data" and cfg["data"]["download"]


def test_resnet32_brings_its_recommended_settings(composer):
    cfg = composer("model=resnet32")
    assert cfg["optimizer"]["name"] == "adam"
    assert (cfg["optimizer"]["lr"], describe_model(cfg["model"])["dropout"], cfg["data"]["batch_size"],
            cfg["trainer"]["epochs"]) == (0.01, 0.3, 128, 50)


def test_explicit_choices_win_over_recommendations(composer):
    cfg = composer("model=resnet32", "optimizer=sgd", "optimizer.lr=0.2", "data.batch_size=32",
                   "trainer.epochs=3", "model.dropout=0.1", "seed=1", "backend=cupy")
    assert cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.2
    assert (cfg["data"]["batch_size"], cfg["trainer"]["epochs"], cfg["model"]["dropout"], cfg["seed"]) == \
        (32, 3, 0.1, 1)
    assert cfg["backend"]["name"] == "cupy"


@pytest.mark.parametrize("name", ["simplecnn", "resnet20", "resnet32", "resnet110"])
def test_model_yaml_names_the_builtin_description(composer, name):
    cfg = composer(f"model={name}")
    shown = {k: v for k, v in cfg["model"].items() if v is not None and k != "name"}
    assert shown == {k: preset(name)[k] for k in shown}      # values shown for --help are the preset's own
    assert describe_model(cfg["model"]) == preset(name)
    assert describe_model(composer(f"model={name}", "model.dropout=0.1")["model"]) == {**preset(name), "dropout": 0.1}


def test_group_schemas_come_from_the_registered_signatures(composer):
    """optimizer=adam has Adam's arguments and defaults, schedule=step its factory's, data=synthetic
    the loader keys plus load_synthetic's."""
    import inspect

    from cifarnet.data.synthetic import load_synthetic
    from cifarnet.optim import Adam

    adam = composer("optimizer=adam")["optimizer"]
    defaults = {k: list(p.default) if isinstance(p.default, tuple) else p.default       # a tuple is a list there
                for k, p in inspect.signature(Adam.__init__).parameters.items() if k != "self"}
    assert adam == {"name": "adam", **defaults, "lr": 0.01}          # lr: the model's recommendation
    assert composer("schedule=step")["schedule"] == {"name": "step", "milestones": [10, 15], "gamma": 0.1,
                                                     "warmup_epochs": 0.0}
    data = composer("data=synthetic")["data"]
    assert set(data) == set(LOADER_KEYS) | set(inspect.signature(load_synthetic).parameters)
    assert data["data_seed"] == 0 and data["train_size"] == 5000


@pytest.mark.parametrize("overrides, message", [
    (["trainer.epoch=3"], "Could not override 'trainer.epoch'. Key 'epoch' not in 'TrainerSchema'"),
    (["trainer.epochs=abc"], "Value 'abc' of type 'str' could not be converted to Float"),
    (["optimizer=adam", "optimizer.momentum=0.9"], "Key 'momentum' not in 'AdamSchema'"),
    (["data.augment.pad_mode=wrap"], "Invalid value 'wrap', expected one of [zero, reflect]"),
    (["mode=serve"], "Invalid value 'serve', expected one of [train, eval, predict, export]"),
    (["model=resnet18"],
     "unknown model 'resnet18'; known: airbench94, resnet110, resnet20, resnet32, resnet44, resnet56, simplecnn"),
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


@pytest.mark.parametrize("experiment", choices("experiment"))
@pytest.mark.parametrize("backend", choices("backend"))
def test_every_experiment_composes_with_every_backend(composer, experiment, backend):
    cfg = composer(f"+experiment={experiment}", f"backend={backend}")
    assert cfg["backend"]["name"] == backend
    make_optimizer(cfg["optimizer"])
    describe_model(cfg["model"])
    schedule = make_lr_schedule_from(cfg["schedule"], cfg["optimizer"]["lr"], cfg["trainer"]["epochs"], 390)
    assert schedule(0) > 0


def test_the_paper_recipe_is_the_papers(composer):
    """He et al. 2016: SGD 0.1, momentum 0.9, decay 1e-4, batch 128, /10 at 32k and 48k, stop at 64k."""
    cfg = composer("+experiment=resnet32_paper")
    steps_per_epoch = 50_000 // cfg["data"]["batch_size"]
    schedule = make_lr_schedule_from(cfg["schedule"], cfg["optimizer"]["lr"], cfg["trainer"]["epochs"],
                                     steps_per_epoch)
    assert (cfg["optimizer"]["name"], cfg["optimizer"]["momentum"], cfg["optimizer"]["weight_decay"]) == \
        ("sgd", 0.9, 1e-4)
    assert schedule(31_999) == pytest.approx(0.1) and schedule(32_000) == pytest.approx(0.01)
    assert schedule(47_999) == pytest.approx(0.01) and schedule(48_000) == pytest.approx(0.001)
    assert 63_500 <= schedule.total_steps <= 64_000
    assert describe_model(cfg["model"])["shortcut"] == "zero_pad" and describe_model(cfg["model"])["dropout"] == 0


@pytest.mark.parametrize("model", ["resnet32", "simplecnn"])
def test_the_fine_tuning_recipe_overrides_the_from_scratch_preset(composer, model):
    """ResNet-32's preset trains from scratch with Adam at 0.01 and dropout 0.3: from trained weights
    that destroys them; +experiment=finetune is a small SGD rate without dropout, whatever the model."""
    cfg = composer(f"model={model}", "+experiment=finetune", "init_from=pretrained:resnet32")
    assert (cfg["optimizer"]["name"], cfg["optimizer"]["lr"], cfg["optimizer"]["weight_decay"]) == ("sgd", 0.001, 0)
    assert describe_model(cfg["model"])["dropout"] == 0 and cfg["schedule"]["name"] == "constant"
    assert cfg["model"]["name"] == model and cfg["init_from"] == "pretrained:resnet32"


@pytest.mark.parametrize("model", choices("model"))
def test_a_model_s_config_shows_the_values_its_preset_gives(composer, model):
    """--help and --cfg job show the composed config: a preset's dropout 0.5 must not read ``null``."""
    import dataclasses

    cfg = composer(f"model={model}")["model"]
    fields = {f.name for f in dataclasses.fields(schema.ModelConfig)} - {"name", "arch", "layers", "num_classes"}
    given = preset(model)
    shown = {k: cfg[k] for k in fields & set(given)}
    assert shown == {k: given[k] for k in shown} and shown                     # the preset's, none left null


def test_on_cupy_the_fused_kernels_are_the_default_and_the_switch_leaves_numpy_alone(composer, monkeypatch):
    """``backend=cupy`` composes ``kernels: auto`` (the fused kernels, checked on an H200: docs/gpu.md);
    the runner's backend turns the process-wide switch on only for CuPy (the counting stand-in, also
    named ``cupy``, must not inherit it from a NumPy run); another value is refused in one line."""
    from cifarnet.experiment import make_backend
    from cifarnet.experiment.components import ConfigError
    from cifarnet.functional import dispatch

    assert composer("backend=cupy")["backend"]["kernels"] == "auto"
    assert composer("backend=cupy", "backend.kernels=reference")["backend"]["kernels"] == "reference"
    monkeypatch.setitem(dispatch._fused, "on", True)
    make_backend({"name": "numpy", "kernels": "fused", "keep_freed_memory": False})
    assert dispatch._fused["on"] is False
    with pytest.raises(ConfigError, match="must be 'auto', 'fused' or 'reference'"):
        make_backend({"name": "numpy", "kernels": "tuned"})


def test_tf32_is_off_by_default_and_refused_on_numpy_in_one_line(composer):
    """``backend.tf32`` (CuPy's float32 products in TF32) composes false on both backends and true
    when asked; with ``backend=numpy`` the runner refuses it, naming the key and what NumPy does."""
    from cifarnet.experiment import make_backend
    from cifarnet.experiment.components import ConfigError

    assert composer("backend=cupy")["backend"]["tf32"] is False and composer()["backend"]["tf32"] is False
    assert composer("backend=cupy", "backend.tf32=true")["backend"]["tf32"] is True
    with pytest.raises(ConfigError, match=r"backend.tf32=true needs backend=cupy .*backend=numpy computes in float32"):
        make_backend({"name": "numpy", "tf32": True, "keep_freed_memory": False})
    make_backend({"name": "numpy", "tf32": False, "keep_freed_memory": False})


@pytest.mark.parametrize("model, kernels, unchecked, fused_after", [
    ("resnet20", "auto", None, True), ("airbench94", "auto", None, True),           # every kind ran on a GPU
    ("airbench94", "auto", ("gelu",), False), ("resnet20", "auto", ("gelu",), True),
    ("airbench94", "fused", ("gelu",), True)])
def test_auto_kernels_keep_a_model_off_fused_forms_that_have_not_run_on_a_gpu(monkeypatch, caplog, model, kernels,
                                                                              unchecked, fused_after):
    """``auto``: a model with a layer kind whose fused forms have not run on a GPU (here GELU, named
    as such) takes the reference kernels and the log says why; a model without one keeps the fused
    kernels; ``fused`` takes them for any model (opt-in); NumPy's runs are left alone. Today no kind
    is unchecked (GELU's forms passed gpu_check on an H200), so airbench94 takes the fused ones."""
    from cifarnet.experiment import settle_kernels
    from cifarnet.experiment.components import UNCHECKED_ON_GPU
    from cifarnet.functional import dispatch
    from cifarnet.models import build_model, model_description

    assert UNCHECKED_ON_GPU == ()
    net = build_model(model_description(model), seed=0)
    monkeypatch.setitem(dispatch._fused, "on", True)
    with caplog.at_level("INFO", logger="cifarnet.experiment"):
        settle_kernels({"name": "cupy", "kernels": kernels}, net, unchecked)
    assert dispatch._fused["on"] is fused_after
    assert ("fused forms for gelu have not run on a GPU" in caplog.text) is (not fused_after)
    settle_kernels({"name": "numpy", "kernels": "auto"}, net, unchecked)
    assert dispatch._fused["on"] is fused_after
