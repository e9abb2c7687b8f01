"""Trained checkpoints shipped inside the package, by name: ``ckpt=pretrained:simplecnn``.

Each is a best checkpoint of a recorded run, stripped of its optimizer state, whose metadata says
how it was made (``meta["pretrained"]``: the recipe and command, the epochs, the data it was
trained on and the test accuracy measured there). :func:`cifarnet.checkpoint.strip` makes one
from a run's checkpoint; this package only holds the files (and imports nothing of cifarnet).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

PREFIX = "pretrained:"
NAMES = ("simplecnn", "resnet32", "airbench94")


def path(name: str) -> Path:
    """The file of the shipped checkpoint ``name``.

    Raises:
        LookupError: no such shipped checkpoint; the message lists the ones there are.
    """
    if name not in NAMES:
        raise LookupError(f"no pre-trained checkpoint {name!r}; there are: {', '.join(NAMES)}")
    return Path(str(resources.files(__name__) / f"{name}.npz"))
