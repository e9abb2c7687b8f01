"""From a plain config dict to a trained (or evaluated) model: the one place that reads config.

The command line composes the config with Hydra and hands over a plain ``dict`` (groups
``model``, ``optimizer``, ``data``, ``backend``, ``schedule``, ``trainer``; keys ``seed``, ``mode``,
``ckpt``, ``resume``, ``overwrite``). Tests and notebooks can build the same dict and call
:func:`train` or :func:`evaluate_checkpoint` directly; nothing here imports Hydra.

Modules, one job each: :mod:`.components` (config group -> object), :mod:`.resume` (a
checkpoint's config merged with the command line; the best checkpoint carried over),
:mod:`.training`, :mod:`.checkpoint_eval` (``mode=eval``), :mod:`.report` (JSON files and the
evaluation text).
"""
from ..models import restore_model  # re-exported: a checkpoint's model, on a backend
from .checkpoint_eval import evaluate_checkpoint
from .components import (
                         ConfigError,
                         describe_model,
                         dtype_of,
                         load_data,
                         make_backend,
                         make_loaders,
                         make_lr_schedule_from,
                         make_optimizer,
                         settle_kernels,
)
from .report import format_eval_report, write_json
from .resume import carry_best_checkpoint, merge_with_checkpoint
from .training import train

__all__ = ["ConfigError", "carry_best_checkpoint", "describe_model", "dtype_of", "evaluate_checkpoint",
           "format_eval_report", "load_data", "make_backend", "make_loaders", "make_lr_schedule_from",
           "make_optimizer", "merge_with_checkpoint", "restore_model", "settle_kernels", "train", "write_json"]
