"""Typed schemas for the composed config (Hydra structured configs).

Every YAML file under ``conf/`` is validated against these: an unknown key, a misspelt option or a
wrong type is rejected before any work starts, with a message naming the key. Only the command-line
layer uses them; the library itself takes plain arguments.

The schemas of the trainer settings and of the optimizer, schedule, data-source and logger
choices are read off the signatures of their classes or registry entries (:func:`schema_of`):
the keys, types and defaults of ``optimizer=adam`` are ``Adam.__init__``'s and those of
``trainer`` are :class:`cifarnet.training.settings.TrainerSettings`'s, so they are written in
one place, and a new optimizer, schedule or data source gets its schema by being registered.
The rest (model, backend, the loader side of ``data``, top-level keys) is written out below.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, List, Optional

from omegaconf import MISSING


class ModeChoice(Enum):
    """The run's ``mode=`` (not the layers' pass mode, :class:`cifarnet.layers.Mode`)."""

    train = "train"
    eval = "eval"
    predict = "predict"
    export = "export"


class PadMode(Enum):
    zero = "zero"
    reflect = "reflect"


class NormalizationChoice(Enum):
    dataset = "dataset"     # mean/std of the training split
    cifar10 = "cifar10"     # the standard CIFAR-10 constants


@dataclass
class ModelConfig:
    """A reference model's name plus the description-wide fields to override, or a whole
    description of your own (see cifarnet.models.builder); unset fields are left out."""

    name: str = MISSING
    arch: Optional[str] = None
    layers: Optional[List[Any]] = None
    depth: Optional[int] = None
    widths: Optional[List[int]] = None
    dropout: Optional[float] = None
    num_classes: Optional[int] = None        # null: as many as the data has classes
    bn_momentum: Optional[float] = None
    init: Optional[str] = None               # he_normal | he_uniform | pytorch | pytorch_dirac
    shortcut: Optional[str] = None           # ResNets: projection | zero_pad
    fit_images: Optional[int] = None         # airbench: training images the whitening layer is fitted to


@dataclass
class AugmentConfig:
    enabled: bool = True
    crop_padding: int = 4
    pad_mode: PadMode = PadMode.reflect      # measured: README, Results (zero: the ResNet paper's)
    flip: bool = True
    alternate_flip: bool = False             # airbench: each image's flip drawn once, all mirrored on odd epochs


@dataclass
class LoaderConfig:
    """The data group's keys that configure batches (cifarnet.experiment.components.LOADER_KEYS);
    each data source's own options are added from its loader's signature."""

    source: str = MISSING
    batch_size: int = 64
    eval_batch_size: int = 500
    val_size: int = 0
    max_train_images: Optional[int] = None   # a seeded random subset of this many (null: all): a quick look
    max_test_images: Optional[int] = None
    normalization: NormalizationChoice = NormalizationChoice.dataset
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    prefetch: int = 2


@dataclass
class BackendConfig:
    name: str = "numpy"
    dtype: str = "float32"
    keep_freed_memory: bool = True       # NumPy: reuse freed memory instead of re-faulting it (cifarnet.memory)
    kernels: str = "auto"                # CuPy: fused CUDA kernels where checked on a GPU; "fused", "reference"
    tf32: bool = False                   # CuPy: float32 products on tensor cores in TF32 (10-bit mantissa)


@dataclass
class EvalConfig:
    tta: int = 0                     # test-time augmentation level: 0 none, 1 mirror, 2 mirror + translations


@dataclass
class Config:
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    data: Any = MISSING
    backend: BackendConfig = MISSING
    schedule: Any = MISSING
    logger: Any = field(default_factory=dict)   # logger=[]: none besides metrics.csv
    trainer: Any = MISSING           # read off cifarnet.training.TrainerSettings (register())
    mode: ModeChoice = ModeChoice.train
    seed: int = 0
    ckpt: Optional[str] = None
    resume: Optional[str] = None
    init_from: Optional[str] = None  # train: start from this checkpoint's weights (fine-tuning)
    overwrite: bool = False          # replace an earlier run's outputs in hydra.run.dir
    plots: bool = True
    images: Optional[str] = None     # mode=predict: an image file, a directory or a glob
    topk: int = 3                    # mode=predict: classes shown per image
    eval: EvalConfig = field(default_factory=EvalConfig)


def _config_type(annotation: Any) -> Any:
    """The OmegaConf-friendly type for a signature's annotation: scalars as they are, a sequence
    as ``List[item]``, ``X | None`` as ``Optional[X]``, paths as ``str``, anything else ``Any``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if type(None) in args and len(rest) == 1:
            return Optional[_config_type(rest[0])]
        return str if str in rest else Any                   # str | Path
    if origin in (list, tuple, collections.abc.Sequence):
        item = args[0] if args else Any
        return List[_config_type(item)]
    return annotation if annotation in (int, float, bool, str) else Any


def schema_of(target: Callable, name: str, skip: tuple[str, ...] = (), base: type | None = None,
              named: bool = True) -> type:
    """A dataclass schema with ``name: str = name`` (unless ``named`` is False) and one field per
    keyword parameter of ``target`` (a class's ``__init__`` or a function) not in ``skip``, typed
    and defaulted as the signature says. Fields of ``base`` come first.

    Raises:
        TypeError: a parameter without a default (a config must be able to leave it out).
    """
    function = target.__init__ if inspect.isclass(target) else target
    hints = typing.get_type_hints(function)
    fields: list[tuple[str, Any, Any]] = [("name", str, field(default=name))] if base is None and named else []
    for p in list(inspect.signature(function).parameters.values()):
        if p.name in ("self", *skip) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise TypeError(f"{name}: parameter {p.name!r} of {function.__qualname__} needs a default to be configured")
        default = list(p.default) if isinstance(p.default, (list, tuple)) else p.default
        spec = field(default_factory=lambda d=default: list(d)) if isinstance(default, list) else field(default=default)
        fields.append((p.name, _config_type(hints.get(p.name, Any)), spec))
    if base is not None:
        fields.append(("source", str, field(default=name)))
    return dataclasses.make_dataclass(f"{name.title().replace('_', '')}Schema", fields,
                                      bases=(base,) if base else ())


def register() -> None:
    """Put the schemas in Hydra's ConfigStore under the names the YAML defaults lists use.

    They are stored outside the config groups (``/schema_optimizer_sgd``, used in a group file as
    ``- /schema_optimizer_sgd@_here_``), so that ``--help`` and the group choices list only real
    options: a schema is not something to choose.
    """
    from hydra.core.config_store import ConfigStore

    from ..data import DATA_SOURCES
    from ..optim import OPTIMIZERS
    from ..schedules import LR_SCHEDULES
    from ..tracking import TRACKERS
    from ..training.settings import TrainerSettings

    cs = ConfigStore.instance()
    cs.store(name="cifarnet_schema", node=Config)
    cs.store(name="schema_trainer", node=schema_of(TrainerSettings, "trainer", skip=("handle_signals",), named=False))
    cs.store(name="schema_backend", node=BackendConfig)
    for name in OPTIMIZERS:
        cs.store(name=f"schema_optimizer_{name}", node=schema_of(OPTIMIZERS.get(name), name))
    for name in LR_SCHEDULES:
        cs.store(name=f"schema_schedule_{name}",
                 node=schema_of(LR_SCHEDULES.get(name), name, skip=("base_lr", "epochs", "steps_per_epoch")))
    for name in DATA_SOURCES:
        cs.store(name=f"schema_data_{name}", node=schema_of(DATA_SOURCES.get(name), name, base=LoaderConfig))
    for name in TRACKERS:
        cs.store(name=f"schema_logger_{name}", node=schema_of(TRACKERS.get(name), name, named=False))
