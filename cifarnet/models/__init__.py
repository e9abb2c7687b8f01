"""Model descriptions (plain data) and the builders that turn them into layer graphs."""
from . import resnet  # noqa: F401  (registers the 'resnet' architecture)
from .builder import ARCHITECTURES, CIFAR_INPUT_SHAPE, ModelSpecError, build_layers, build_model
from .presets import MODELS, model_description
from .restore import restore_model
from .summary import summary

__all__ = ["ARCHITECTURES", "CIFAR_INPUT_SHAPE", "MODELS", "ModelSpecError", "build_layers",
           "build_model", "model_description", "restore_model", "summary"]
