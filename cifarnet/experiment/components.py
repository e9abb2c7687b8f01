"""From the groups of a plain config dict to the objects they name: backend, data, model,
optimizer, schedules. Each group's options go straight to its registry entry (the way
optimizers' do), so a new optimizer, schedule or data source needs no edit here."""
from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import get_backend, use_tf32
from ..data import DATA_SOURCES, Augmentation, BatchLoader, Dataset, Normalization, load_dataset
from ..data.normalize import CIFAR10_STATS
from ..errors import InvalidValue
from ..functional.dispatch import use_fused_kernels
from ..memory import keep_freed_memory
from ..models import MODELS, model_description
from ..optim import OPTIMIZERS
from ..schedules import LR_SCHEDULES, make_dropout_schedule, make_lr_schedule

log = logging.getLogger("cifarnet.experiment")
DTYPES = {"float32": np.float32, "float64": np.float64}
# The keys of the data group that configure batches; the rest are the data source's options.
LOADER_KEYS = ("source", "batch_size", "eval_batch_size", "val_size", "max_train_images", "max_test_images",
               "normalization", "augment", "prefetch")


class ConfigError(InvalidValue):
    """A config that names something impossible; the message says which key and why."""


def enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


def settle_kernels(backend_cfg: dict[str, Any], model, unchecked_kinds: tuple[str, ...] | None = None) -> None:
    """With ``backend.kernels=auto`` on CuPy, the reference kernels for a model with a layer kind in
    ``unchecked_kinds`` (default :data:`UNCHECKED_ON_GPU`: kinds whose fused forms have not run on a
    GPU), said in the log; ``fused`` takes them anyway, ``reference`` never."""
    if backend_cfg["name"] != "cupy" or backend_cfg.get("kernels", "auto") != "auto":
        return
    kinds = UNCHECKED_ON_GPU if unchecked_kinds is None else unchecked_kinds
    unchecked = sorted({layer.kind for _, layer in model.walk() if getattr(layer, "kind", None) in kinds})
    if unchecked:
        use_fused_kernels(False)
        log.info("backend.kernels=auto: the reference kernels, since the fused forms for %s have not run on a GPU "
                 "yet (backend.kernels=fused takes them anyway: docs/gpu.md)", ", ".join(unchecked))


def accepted(target: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``target`` (a function or class) takes. A composed config holds no
    others (its schema is read off the same signature); the config saved in a checkpoint of an
    older cifarnet may (e.g. every data source's keys side by side), and those are dropped."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    dropped = sorted(set(options) - set(parameters))
    if dropped:
        log.info("%s takes no %s (from an older config); left out", getattr(target, "__name__", target),
                 ", ".join(dropped))
    return {k: v for k, v in options.items() if k in parameters}


KERNEL_SETTINGS = ("auto", "fused", "reference")
# Layer kinds whose fused kernel forms have not run on a GPU; a new kind with fused forms goes here
# until `python -m cifarnet.bench.gpu_check` has passed them on one (docs/gpu.md). GELU's passed on an
# H200 in December 2026, so every kind today takes the fused kernels under `auto`.
UNCHECKED_ON_GPU: tuple[str, ...] = ()


def make_backend(backend_cfg: dict[str, Any]):
    """The backend ``backend_cfg["name"]`` names; on NumPy, keep freed memory for reuse unless
    ``keep_freed_memory`` is false (see :mod:`cifarnet.memory`); on CuPy, the fused kernels
    (:mod:`cifarnet.functional.fused`) unless ``kernels`` is ``reference`` (CuPy's own expressions,
    the formulas as written; ``docs/gpu.md`` has both on an H200). With ``auto`` (the default) a
    model may still take the reference kernels: :func:`settle_kernels`. ``tf32`` (CuPy only): the
    float32 products on tensor cores in TF32 (:func:`cifarnet.backend.use_tf32`)."""
    kernels, tf32 = backend_cfg.get("kernels", "auto"), bool(backend_cfg.get("tf32", False))
    if kernels not in KERNEL_SETTINGS:
        raise ConfigError(f"backend.kernels must be 'auto', 'fused' or 'reference', got {kernels!r}")
    if tf32 and backend_cfg["name"] != "cupy":
        raise ConfigError(f"backend.tf32=true needs backend=cupy (TF32 is a mode of NVIDIA tensor cores); "
                          f"backend={backend_cfg['name']} computes in {backend_cfg.get('dtype', 'float32')}")
    use_fused_kernels(kernels != "reference" and backend_cfg["name"] == "cupy")   # (a process-wide switch)
    backend = get_backend(backend_cfg["name"])
    use_tf32(backend, tf32)                                                        # (so is this)
    if tf32:
        log.info("backend.tf32: float32 products (convolutions, linear layers) on tensor cores in TF32")
    if backend.name == "numpy" and backend_cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    return backend


def dtype_of(cfg: dict[str, Any]):
    """The parameter dtype ``backend.dtype`` names."""
    name = cfg["backend"].get("dtype", "float32")
    if name not in DTYPES:
        raise ConfigError(f"backend.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def describe_model(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model description the ``model`` group stands for.

    A reference model (``name`` in :data:`cifarnet.models.MODELS`) is its built-in description
    with the group's set fields on top (``dropout``, ``num_classes``, ``init``, ``shortcut``...);
    any other name must bring its own description (``arch``, ``layers`` or ``depth``...).
    Unset (None) fields are left out.
    """
    given = {k: copy.deepcopy(v) for k, v in model_cfg.items() if v is not None}
    if given.get("name") in MODELS:
        return model_description(given.pop("name"), **given)
    return given


def load_data(data_cfg: dict[str, Any], seed: int) -> Dataset:
    """The dataset the ``data`` group names (every key but the loader's goes to the source), limited
    to ``max_train_images``/``max_test_images`` and with its validation split carved, both by ``seed``."""
    options = {k: enum_value(v) for k, v in data_cfg.items() if k not in LOADER_KEYS}
    options = accepted(DATA_SOURCES.get(data_cfg["source"]), options)
    return load_dataset(data_cfg["source"], val_size=data_cfg["val_size"], val_seed=seed,
                        max_train_images=data_cfg.get("max_train_images"),
                        max_test_images=data_cfg.get("max_test_images"), **options)


def normalization_for(data_cfg: dict[str, Any], dataset: Dataset) -> Normalization:
    choice = enum_value(data_cfg.get("normalization", "dataset"))
    if choice == "cifar10":
        return CIFAR10_STATS
    return Normalization.from_images(dataset.train.images)


def make_loaders(data_cfg: dict[str, Any], dataset: Dataset, norm: Normalization, backend, seed: int,
                 dtype, shard: tuple[int, int] = (0, 1)) -> tuple[BatchLoader, dict[str, BatchLoader]]:
    """The shuffled, augmented training loader (this process's ``shard`` of every batch: ``(rank,
    size)``) and the evaluation loaders (``val`` if carved, ``test``)."""
    aug_cfg = data_cfg["augment"]
    augmentation = None
    if aug_cfg["enabled"]:
        augmentation = Augmentation(aug_cfg["crop_padding"], enum_value(aug_cfg["pad_mode"]), aug_cfg["flip"],
                                    aug_cfg.get("alternate_flip", False))      # configs from before it lack it
    common = {"backend": backend, "prefetch": data_cfg["prefetch"], "dtype": dtype}
    train = BatchLoader(dataset.train, data_cfg["batch_size"], norm, augmentation=augmentation, shuffle=True,
                        drop_last=True, seed=seed, shard=shard, **common)
    evals = {}
    if dataset.val is not None:
        evals["val"] = BatchLoader(dataset.val, data_cfg["eval_batch_size"], norm, **common)
    evals["test"] = BatchLoader(dataset.test, data_cfg["eval_batch_size"], norm, **common)
    return train, evals


def make_optimizer(opt_cfg: dict[str, Any]):
    """The optimizer the ``optimizer`` group names, its options passed straight through."""
    options = dict(opt_cfg)
    cls = OPTIMIZERS.get(options.pop("name"))
    return cls(**accepted(cls, options))


def make_lr_schedule_from(sched_cfg: dict[str, Any], base_lr: float, epochs: int, steps_per_epoch: int):
    """The ``schedule`` group's schedule: its options (in epochs) go to the registered factory."""
    options = dict(sched_cfg)
    name = options.pop("name")
    return make_lr_schedule(name, base_lr, epochs, steps_per_epoch, **accepted(LR_SCHEDULES.get(name), options))


def make_dropout_schedule_from(trainer_cfg: dict[str, Any], initial: float, epochs: int):
    """The dropout schedule ``trainer.dropout_schedule`` names, or None for ``none``."""
    if trainer_cfg["dropout_schedule"] == "none":
        return None
    return make_dropout_schedule(trainer_cfg["dropout_schedule"], initial, epochs, final=trainer_cfg["dropout_final"])
