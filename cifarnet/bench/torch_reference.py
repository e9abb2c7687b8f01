"""PyTorch reference models equivalent to cifarnet's, for the benchmark's comparison mode.

Only imported when torch is importable; torch is never a dependency of cifarnet.
"""
from __future__ import annotations


def build(name: str, dropout: float | None = None):
    """``simplecnn`` or ``resnet<depth>`` as a ``torch.nn.Module`` (NCHW, as PyTorch expects), with
    the dropout rate of cifarnet's preset (0.5, 0.3) unless ``dropout`` says otherwise."""
    import torch.nn as nn

    if name == "simplecnn":
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(1800, 128), nn.BatchNorm1d(128), nn.ReLU(),
                             nn.Dropout(0.5 if dropout is None else dropout), nn.Linear(128, 10))
    depth = int(name.removeprefix("resnet"))
    n = (depth - 2) // 6

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.main = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                      nn.ReLU(), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.main(x) + self.short(x))

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for b in range(n):
            layers.append(Block(cin, width, 2 if stage and not b else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3 if dropout is None else dropout),
               nn.Linear(64, 10)]
    return nn.Sequential(*layers)
