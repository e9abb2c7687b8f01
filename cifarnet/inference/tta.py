"""Test-time augmentation: logits averaged over mirrored and translated views of each image
(airbench's levels).

* level 0: the image;
* level 1: the image and its mirror (left-right), 0.5 each;
* level 2: those two at 0.25 each, and both translated by one pixel up-left and by one pixel
  down-right (reflect-padded), 0.125 each: six views.
"""
from __future__ import annotations

from ..backend import array_module
from ..errors import InvalidValue

LEVELS = (0, 1, 2)


def mirrored(x):
    """Left-right mirror of NHWC images."""
    return x[:, :, ::-1, :]


def translated(x, dy: int, dx: int):
    """Images moved by one pixel, ``dy, dx`` in {-1, 1}, the edge reflected: ``(N, H, W, C)``."""
    xp = array_module(x)
    padded = xp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    return padded[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w, :]


def views(x, level: int) -> list[tuple[float, object]]:
    """``(weight, images)`` of each view at ``level`` (weights sum to 1)."""
    if level not in LEVELS:
        raise InvalidValue(f"test-time augmentation level must be one of {LEVELS}, got {level}")
    if level == 0:
        return [(1.0, x)]
    if level == 1:
        return [(0.5, x), (0.5, mirrored(x))]
    up_left, down_right = translated(x, -1, -1), translated(x, 1, 1)
    return [(0.25, x), (0.25, mirrored(x)), (0.125, up_left), (0.125, mirrored(up_left)),
            (0.125, down_right), (0.125, mirrored(down_right))]


def tta_logits(run, x, level: int):
    """The weighted sum of ``run(view)`` (a function from images to logits) over the views."""
    total = None
    for weight, view in views(x, level):
        logits = run(view) * weight
        total = logits if total is None else total + logits
    return total
