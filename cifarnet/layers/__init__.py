"""Layers: parameters and configuration around the ops of :mod:`cifarnet.functional`, and the
registry that names them. The names below are what model descriptions use in their ``type`` field.
"""
from ..registry import Registry
from .activation import ReLU
from .base import EVAL, INFER, TRAIN, Layer, Mode
from .batchnorm import BatchNorm
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .pooling import GlobalAvgPool, MaxPool2d
from .residual import BasicBlock
from .sequential import Sequential

LAYERS = Registry("layer type")
for _name, _cls in {
    "conv": Conv2d,
    "batchnorm": BatchNorm,
    "relu": ReLU,
    "maxpool": MaxPool2d,
    "linear": Linear,
    "flatten": Flatten,
    "dropout": Dropout,
    "global_avg_pool": GlobalAvgPool,
    "basic_block": BasicBlock,
}.items():
    LAYERS.register(_name)(_cls)

__all__ = ["EVAL", "INFER", "LAYERS", "TRAIN", "BasicBlock", "BatchNorm", "Conv2d", "Dropout", "Flatten",
           "GlobalAvgPool", "Layer", "Linear", "MaxPool2d", "Mode", "ReLU", "Sequential"]
