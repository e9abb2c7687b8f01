"""Layers: parameters and configuration around the ops of :mod:`cifarnet.functional`, and the one
registry of their kinds (:mod:`cifarnet.layers.kinds`). A kind's name is what model descriptions
use in their ``type`` field; importing this package registers every kind.
"""
from .activation import GELU, ReLU
from .base import EVAL, INFER, TRAIN, Layer, Mode
from .batchnorm import BatchNorm
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .kinds import KINDS, Kind, kind_of, register_kind
from .linear import Linear
from .pooling import GlobalAvgPool, MaxPool2d
from .residual import BasicBlock
from .scale import Scale
from .sequential import Sequential
from .whitening import Whitening

__all__ = ["EVAL", "INFER", "KINDS", "TRAIN", "BasicBlock", "BatchNorm", "Conv2d", "Dropout", "Flatten", "GELU",
           "GlobalAvgPool", "Kind", "Layer", "Linear", "MaxPool2d", "Mode", "ReLU", "Scale", "Sequential",
           "Whitening", "kind_of", "register_kind"]
