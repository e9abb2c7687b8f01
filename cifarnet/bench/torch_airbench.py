"""airbench94 in PyTorch, as cifarnet builds it: the twin the parity check and the time
comparison run (NCHW, GELU's tanh form, batch norms with the scale fixed at 1).

Written from the paper and the published script's description (Jordan 2024), in PyTorch's own
idiom; only imported where torch is importable, never a dependency of cifarnet.
"""
from __future__ import annotations

import numpy as np


def build(widths=(64, 256, 256), num_classes: int = 10, bn_momentum: float = 0.4):
    """The network as a ``torch.nn.Sequential`` whose modules are named like cifarnet's layers
    (``whiten``, ``group1_conv1``, ``group1_norm1``, ..., ``head``), so weights copy by name."""
    import torch
    from torch import nn

    class Scale(nn.Module):
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

    def norm(c):
        layer = nn.BatchNorm2d(c, eps=1e-12, momentum=bn_momentum)
        layer.weight.requires_grad_(False)                 # the scale stays 1
        return layer

    layers = [("whiten", nn.Conv2d(3, 24, 2, bias=True)), ("whiten_gelu", nn.GELU(approximate="tanh"))]
    c_in = 24
    for g, width in enumerate(widths, start=1):
        layers += [(f"group{g}_conv1", nn.Conv2d(c_in, width, 3, padding=1, bias=False)),
                   (f"group{g}_pool", nn.MaxPool2d(2)), (f"group{g}_norm1", norm(width)),
                   (f"group{g}_gelu1", nn.GELU(approximate="tanh")),
                   (f"group{g}_conv2", nn.Conv2d(width, width, 3, padding=1, bias=False)),
                   (f"group{g}_norm2", norm(width)), (f"group{g}_gelu2", nn.GELU(approximate="tanh"))]
        c_in = width
    layers += [("pool", nn.MaxPool2d(3)), ("flatten", nn.Flatten()),
               ("head", nn.Linear(c_in, num_classes, bias=False)), ("logit_scale", Scale(1 / 9))]
    from collections import OrderedDict

    net = nn.Sequential(OrderedDict(layers))
    net.whiten.weight.requires_grad_(False)                # fitted to data, never trained
    return net.to(torch.float64)


def whitening_weights(images_nchw, kernel: int = 2, eps: float = 5e-4):
    """The whitening filters ``(2*k*k*C, C, k, k)`` from images ``(N, C, H, W)``: the eigenvectors
    of the patches' second moments over ``sqrt(eigenvalue + eps)``, largest first, then negated."""
    import torch

    n, c = images_nchw.shape[:2]
    patches = images_nchw.unfold(2, kernel, 1).unfold(3, kernel, 1)      # N, C, H', W', k, k
    rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kernel * kernel)
    values, vectors = torch.linalg.eigh(rows.T @ rows / rows.shape[0])
    values, vectors = values.flip(0), vectors.flip(1)
    filters = (vectors / torch.sqrt(values + eps)).T.reshape(-1, c, kernel, kernel)
    return torch.cat([filters, -filters])


def copy_from_cifarnet(net, model) -> None:
    """Every parameter and buffer of cifarnet's ``model`` into ``net`` by name (NHWC/HWIO ->
    NCHW/OIHW, linear transposed); the fixed scales (``gamma``) go to the batch norms' weights."""
    import torch

    names = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias", "running_mean": "running_mean",
             "running_var": "running_var"}
    theirs = dict(net.state_dict())
    mine = model.state_dict()
    with torch.no_grad():
        for key, value in mine.items():
            layer, array = key.rsplit(".", 1)
            target = f"{layer}.{names[array]}"
            value = np.asarray(value, dtype=np.float64)
            if value.ndim == 4:
                value = value.transpose(3, 2, 0, 1)
            elif value.ndim == 2:
                value = value.T
            theirs[target].copy_(torch.from_numpy(np.ascontiguousarray(value)))


def optimizer(net, batch: int = 1024, lr: float = 11.5, momentum: float = 0.85, weight_decay: float = 0.0153):
    """airbench's optimizer for ``net``: Nesterov SGD with its decoupled hyper-parameters turned into
    PyTorch's (lr / d, weight decay * batch / d, d = 1024 (1 + 1 / (1 - momentum))), batch-norm
    shifts at 64x the learning rate with the same absolute decay."""
    import torch

    d = 1024 * (1 + 1 / (1 - momentum))
    lr, decay = lr / d, weight_decay * batch / d
    norms = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    return torch.optim.SGD([{"params": norms, "lr": 64 * lr, "weight_decay": decay / (64 * lr)},
                            {"params": others, "lr": lr, "weight_decay": decay / lr}], momentum=momentum, nesterov=True)
