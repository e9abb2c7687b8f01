"""airbench94 (Keller Jordan, 2024, arXiv 2404.00498): the fastest known CIFAR-10 network to 94%.

A whitening convolution whose filters come from the training data, three groups of two 3x3
convolutions with max pooling and GELU, a max-pooled linear head with scaled logits.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .builder import ARCHITECTURES, ModelSpecError


@ARCHITECTURES.register("airbench")
def airbench_specs(description: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Layer specs of airbench94.

    Description keys (defaults in brackets): ``widths`` [64, 256, 256], the three groups' channels;
    ``num_classes`` [10]; ``bn_momentum`` [0.4], PyTorch's convention (airbench writes it 0.6);
    ``init`` ["pytorch_dirac"].

    Layout, for a 32x32x3 input: whitening 2x2 (3 -> 24 channels, 31x31; filters fitted to the
    training data, bias trained) -> GELU; three groups, each conv 3x3 "same" without bias ->
    max-pool 2x2 -> batch norm -> GELU -> conv 3x3 without bias -> batch norm -> GELU (31 -> 15 ->
    7 -> 3); max-pool 3x3 (3 -> 1); flatten; linear to ``num_classes`` without bias; logits x 1/9.
    Batch norms: eps 1e-12, the scale fixed at 1 (``scale=False``), the shift trained.
    """
    widths = [int(w) for w in description.get("widths", (64, 256, 256))]
    if len(widths) != 3 or min(widths) < 1:
        raise ModelSpecError(f"airbench needs three positive group widths, got {widths}")
    momentum = float(description.get("bn_momentum", 0.4))
    init = str(description.get("init", "pytorch_dirac"))
    norm = {"type": "batchnorm", "momentum": momentum, "eps": 1e-12, "scale": False}
    specs: list[dict[str, Any]] = [
        {"type": "whitening", "name": "whiten", "kernel_size": 2, "eps": 5e-4},
        {"type": "gelu", "name": "whiten_gelu"},
    ]
    for group, width in enumerate(widths, start=1):
        g = f"group{group}"
        specs += [
            {"type": "conv", "name": f"{g}_conv1", "out_channels": width, "kernel_size": 3, "padding": 1,
             "bias": False, "init": init},
            {"type": "maxpool", "name": f"{g}_pool", "kernel_size": 2},
            {**norm, "name": f"{g}_norm1"},
            {"type": "gelu", "name": f"{g}_gelu1"},
            {"type": "conv", "name": f"{g}_conv2", "out_channels": width, "kernel_size": 3, "padding": 1,
             "bias": False, "init": init},
            {**norm, "name": f"{g}_norm2"},
            {"type": "gelu", "name": f"{g}_gelu2"},
        ]
    specs += [
        {"type": "maxpool", "name": "pool", "kernel_size": 3},
        {"type": "flatten", "name": "flatten"},
        {"type": "linear", "name": "head", "out_features": int(description.get("num_classes", 10)), "bias": False,
         "init": init},
        {"type": "scale", "name": "logit_scale", "factor": 1 / 9},
    ]
    return specs
