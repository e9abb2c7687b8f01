"""Training primitives that need no configuration system."""
from .evaluate import EvalResult, evaluate
from .step import accuracy, train_step

__all__ = ["EvalResult", "accuracy", "evaluate", "train_step"]
