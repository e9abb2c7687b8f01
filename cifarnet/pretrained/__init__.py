"""Trained checkpoints shipped inside the package, by name: ``ckpt=pretrained:simplecnn``.

Each is a best checkpoint of a recorded run, stripped of its optimizer state, whose metadata says
how it was made (``meta["pretrained"]``: the recipe and command, the epochs, the data it was
trained on and the test accuracy measured there). :func:`strip` makes one from a run's checkpoint.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt

PREFIX = "pretrained:"
NAMES = ("simplecnn",)


def path(name: str) -> Path:
    """The file of the shipped checkpoint ``name``.

    Raises:
        CheckpointError: no such shipped checkpoint; the message lists the ones there are.
    """
    if name not in NAMES:
        raise ckpt.CheckpointError(f"no pre-trained checkpoint {name!r}; there are: {', '.join(NAMES)}")
    return Path(str(resources.files(__name__) / f"{name}.npz"))


def strip(source: str | Path, target: str | Path, provenance: dict[str, Any]) -> Path:
    """Write ``source``'s model (without optimizer state or run history) to ``target``, with
    ``provenance`` under ``meta["pretrained"]``."""
    found = ckpt.load(source)
    keep = ("model", "input_shape", "normalization", "class_names", "backend", "dtype", "seed")
    meta = {k: found.meta[k] for k in keep if k in found.meta}
    state = found.meta["state"]
    meta.update(state={"epoch": state["epoch"], "batch": 0, "step": state["step"]},
                config={k: found.meta["config"][k] for k in ("model", "data", "backend", "seed")},
                rng=found.meta.get("rng", {}), pretrained=dict(provenance))
    return ckpt.save(target, found.model_state, None, meta)
