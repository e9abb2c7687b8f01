"""Data-dependent initialisation: the build step that shows a fresh model training images.

A layer that sets part of itself from data has a ``fit(images)`` method (the whitening layer,
:class:`cifarnet.layers.Whitening`). What it sets is a parameter or buffer, so it is saved in
every checkpoint and a checkpoint loads without data; only a fresh model (not a resumed one, not
one started from trained weights) is fitted.
"""
from __future__ import annotations

import logging

log = logging.getLogger("cifarnet.models")

FIT_IMAGES = 5000          # airbench's: the whitening filters of the first 5,000 training images


def fits_data(model) -> list[str]:
    """The dotted names of ``model``'s layers that take data at build time."""
    return [name for name, layer in model.walk() if callable(getattr(layer, "fit", None))]


def fit_to_data(model, images) -> list[str]:
    """Run each such layer's ``fit`` on ``images`` as that layer's input sees them.

    A layer placed after others gets the images through the layers before it (in eval mode), so
    it is fitted to what it will receive. Only top-level layers of a sequential model can be
    fitted this way; a fitted layer inside a container raises.

    Args:
        images: ``(N, H, W, C)`` normalised images, on the model's backend.
    Returns:
        The names of the layers fitted.
    """
    from ..layers.base import INFER

    names = fits_data(model)
    top = dict(model.children)
    inside = [n for n in names if n not in top]
    if inside:
        raise ValueError(f"layer {inside[0]!r} takes data at build time but sits inside a container")
    remaining, x = set(names), images
    for name, layer in top.items():
        if not remaining:
            break
        if name in remaining:
            layer.fit(x)
            remaining.discard(name)
            log.info("%s fitted to %d training images", name, x.shape[0])
        if remaining:
            x = layer.forward(x, INFER)[0]
    return names
