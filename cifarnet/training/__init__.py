"""Training primitives that need no configuration system."""
from .step import accuracy, train_step

__all__ = ["accuracy", "train_step"]
