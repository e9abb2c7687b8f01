"""ResNet for CIFAR: depth 6n+2 (ResNet-20, 32, 44, 56, 110) from one builder."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .builder import ARCHITECTURES, ModelSpecError


@ARCHITECTURES.register("resnet")
def resnet_specs(description: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Layer specs of a CIFAR ResNet.

    Description keys (defaults in brackets): ``depth`` [32] = 6n+2; ``widths`` [16, 32, 64], the
    channels of the three stages; ``num_classes`` [10]; ``dropout`` [0.0], the rate before the
    classifier; ``bn_momentum`` [0.1]; ``shortcut`` ["projection"], how the first block of stages
    2 and 3 adapts its input (``projection``: 1x1 convolution + batch norm; ``zero_pad``: the
    paper's parameter-free option A); ``init`` ["he_normal"], the weight initialisation
    (:mod:`cifarnet.layers.init`).

    Layout: conv3x3(widths[0]) + BN + ReLU; three stages of n basic blocks (the first block of
    stages 2 and 3 halves the resolution with stride 2); global average pool; dropout; linear to
    ``num_classes``.
    """
    depth = int(description.get("depth", 32))
    if depth < 8 or (depth - 2) % 6:
        raise ModelSpecError(f"ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, 44, 56, 110, ...), got {depth}")
    n = (depth - 2) // 6
    widths = [int(w) for w in description.get("widths", (16, 32, 64))]
    if len(widths) != 3:
        raise ModelSpecError(f"ResNet needs three stage widths, got {widths}")
    momentum = float(description.get("bn_momentum", 0.1))
    init = str(description.get("init", "he_normal"))
    shortcut = str(description.get("shortcut", "projection"))
    specs: list[dict[str, Any]] = [
        {"type": "conv", "name": "stem_conv", "out_channels": widths[0], "kernel_size": 3,
         "padding": 1, "bias": False, "init": init},
        {"type": "batchnorm", "name": "stem_bn", "momentum": momentum},
        {"type": "relu", "name": "stem_relu"},
    ]
    for stage, width in enumerate(widths, start=1):
        for block in range(1, n + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            specs.append({"type": "basic_block", "name": f"stage{stage}_block{block}", "out_channels": width,
                          "stride": stride, "bn_momentum": momentum, "shortcut": shortcut, "init": init})
    specs += [
        {"type": "global_avg_pool", "name": "pool"},
        {"type": "dropout", "name": "dropout", "rate": float(description.get("dropout", 0.0))},
        {"type": "linear", "name": "fc", "out_features": int(description.get("num_classes", 10)), "init": init},
    ]
    return specs
