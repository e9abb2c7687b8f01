"""Optimizers, by name."""
from ..registry import Registry
from .adam import Adam, AdamW
from .base import Optimizer
from .sgd import SGD

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd")(SGD)
OPTIMIZERS.register("adam")(Adam)
OPTIMIZERS.register("adamw")(AdamW)

__all__ = ["OPTIMIZERS", "Adam", "AdamW", "Optimizer", "SGD"]
