"""Training primitives that need no configuration system."""
from .evaluate import EvalResult, evaluate
from .step import StepResult, accuracy, forward_backward, train_step

__all__ = ["EvalResult", "StepResult", "accuracy", "evaluate", "forward_backward", "train_step"]
