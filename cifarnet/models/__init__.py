"""Model descriptions (plain data) and the builders that turn them into layer graphs."""
from . import airbench, resnet  # noqa: F401  (register the 'airbench' and 'resnet' architectures)
from .builder import ARCHITECTURES, CIFAR_INPUT_SHAPE, ModelSpecError, build_layers, build_model
from .data_init import fit_to_data, fits_data
from .presets import MODELS, model_description
from .restore import restore_model
from .summary import summary

__all__ = ["ARCHITECTURES", "CIFAR_INPUT_SHAPE", "MODELS", "ModelSpecError", "build_layers",
           "build_model", "fit_to_data", "fits_data", "model_description", "restore_model", "summary"]
