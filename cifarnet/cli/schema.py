"""Typed schemas for the composed config (Hydra structured configs).

Every YAML file under ``conf/`` is validated against these: an unknown key, a misspelt option or a
wrong type is rejected before any work starts, with a message naming the key. Only the command-line
layer uses them; the library itself takes plain arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from omegaconf import MISSING


class Mode(Enum):
    train = "train"
    eval = "eval"
    predict = "predict"


class PadMode(Enum):
    zero = "zero"
    reflect = "reflect"


class NormalizationChoice(Enum):
    dataset = "dataset"     # mean/std of the training split
    cifar10 = "cifar10"     # the standard CIFAR-10 constants


class NonFinite(Enum):
    stop = "stop"
    skip = "skip"


@dataclass
class ModelConfig:
    """A model description (see cifarnet.models.builder); unset fields are left out."""

    name: str = MISSING
    arch: str = "sequential"
    layers: Optional[List[Any]] = None
    depth: Optional[int] = None
    widths: Optional[List[int]] = None
    dropout: Optional[float] = None
    num_classes: Optional[int] = None
    bn_momentum: Optional[float] = None


@dataclass
class OptimizerConfig:
    """Fields every optimizer takes."""

    name: str = MISSING
    lr: float = 0.01
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = True


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    """Learning-rate schedule; epochs may be fractional and are converted to steps."""

    name: str = "constant"
    warmup_epochs: float = 0.0
    milestones: List[float] = field(default_factory=list)   # step: epochs at which lr *= gamma
    gamma: float = 0.1                                      # step
    min_lr: float = 0.0                                     # cosine
    end_lr: float = 0.0                                     # linear


@dataclass
class AugmentConfig:
    enabled: bool = True
    crop_padding: int = 4
    pad_mode: PadMode = PadMode.zero
    flip: bool = True


@dataclass
class DataConfig:
    source: str = MISSING                    # cifar10 | synthetic | image_folder
    root: str = "data"                       # cifar10, image_folder
    download: bool = True                    # cifar10
    train_size: int = 5000                   # synthetic
    test_size: int = 1000                    # synthetic
    data_seed: int = 0                       # synthetic
    noise: float = 20.0                      # synthetic
    image_size: int = 32                     # synthetic, image_folder
    batch_size: int = 64
    eval_batch_size: int = 500
    val_size: int = 0
    normalization: NormalizationChoice = NormalizationChoice.dataset
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    prefetch: int = 2


@dataclass
class BackendConfig:
    name: str = "numpy"
    dtype: str = "float32"
    keep_freed_memory: bool = True       # NumPy: reuse freed memory instead of re-faulting it (cifarnet.memory)


@dataclass
class TrainerConfig:
    epochs: int = 20
    label_smoothing: float = 0.0
    dropout_schedule: str = "none"           # none | linear | cosine
    dropout_final: float = 0.0
    keep_last: int = 2
    progress: bool = True
    nonfinite: NonFinite = NonFinite.stop
    workers: Optional[int] = None            # NumPy: threads a training batch is split between (null: one per core)


@dataclass
class Config:
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    data: DataConfig = MISSING
    backend: BackendConfig = MISSING
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mode: Mode = Mode.train
    seed: int = 0
    ckpt: Optional[str] = None
    resume: Optional[str] = None
    overwrite: bool = False          # replace an earlier run's outputs in hydra.run.dir
    plots: bool = True
    images: Optional[str] = None     # mode=predict: an image file, a directory or a glob
    topk: int = 3                    # mode=predict: classes shown per image


def register() -> None:
    """Put the schemas in Hydra's ConfigStore under the names the YAML defaults lists use.

    They are stored outside the config groups (``/schema_optimizer_sgd``, used in a group file as
    ``- /schema_optimizer_sgd@_here_``), so that ``--help`` and the group choices list only real
    options: a schema is not something to choose.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="cifarnet_schema", node=Config)
    cs.store(name="schema_optimizer_sgd", node=SGDConfig)
    cs.store(name="schema_optimizer_adam", node=AdamConfig)
    cs.store(name="schema_data", node=DataConfig)
    cs.store(name="schema_backend", node=BackendConfig)
    cs.store(name="schema_schedule", node=ScheduleConfig)
