"""Build a layer graph from a plain-data model description.

A description is what a YAML file under ``conf/model/`` holds, e.g.::

    {"arch": "sequential", "name": "tiny",
     "layers": [{"type": "conv", "out_channels": 8, "kernel_size": 3},
                {"type": "relu"}, {"type": "flatten"},
                {"type": "linear", "out_features": 10}]}

``arch`` names an entry of :data:`ARCHITECTURES`, a function turning the description into a list
of layer specs; each spec's ``type`` names a kind of :data:`cifarnet.layers.KINDS` that builds a layer, and the
remaining keys are that layer's options. Input widths (``in_channels``, ``in_features``) are
inferred from the input shape by walking the specs in order, so nobody writes ``1800`` by hand.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidValue
from ..layers import KINDS, Sequential, kind_of
from ..registry import Registry, UnknownNameError

ARCHITECTURES = Registry("model architecture")

CIFAR_INPUT_SHAPE = (32, 32, 3)   # H, W, C


class ModelSpecError(InvalidValue):
    """A model description that cannot be built; the message says which layer and why."""


@ARCHITECTURES.register("sequential")
def sequential_specs(description: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``layers`` list of a sequential description, as plain dicts.

    Description-wide settings reach into the list: ``dropout`` is the rate of every dropout layer
    that does not set its own, ``init`` the initialisation of every weighted layer that does not
    set its own, and ``num_classes`` (when given) sets the width of the last linear layer, so
    ``model.dropout=0.3`` or a 2-class dataset need no edit of the list.
    """
    layers = description.get("layers")
    if not layers:
        raise ModelSpecError("a sequential model description needs a non-empty 'layers' list")
    specs = [dict(spec) for spec in layers]
    for spec in specs:
        if spec.get("type") == "dropout" and description.get("dropout") is not None:
            spec.setdefault("rate", float(description["dropout"]))
        if kind_of(spec.get("type", "")).weighted and description.get("init") is not None:
            spec.setdefault("init", description["init"])
    if description.get("num_classes") is not None:
        linear = [spec for spec in specs if spec.get("type") == "linear"]
        if not linear:
            raise ModelSpecError("num_classes needs a linear layer to size")
        linear[-1]["out_features"] = int(description["num_classes"])
    return specs


def build_layers(specs: Sequence[Mapping[str, Any]], input_shape: Sequence[int],
                 rng: np.random.Generator, dtype: Any = np.float32) -> Sequential:
    """Instantiate layer specs in order, inferring each layer's input shape from the previous.

    Args:
        specs: dicts with a ``type``, an optional ``name`` and the layer's options.
        input_shape: per-example input shape, ``(H, W, C)`` for images.
        rng: the generator all initial weights (and dropout streams) come from.
    """
    shape = tuple(int(s) for s in input_shape)
    counts: Counter[str] = Counter()
    layers = []
    for index, raw in enumerate(specs):
        spec = dict(raw)
        kind = spec.pop("type", None)
        if kind is None:
            raise ModelSpecError(f"layer {index} has no 'type' (spec: {dict(raw)})")
        counts[kind] += 1
        name = spec.pop("name", f"{kind}{counts[kind]}")
        try:
            cls = KINDS.get(kind).layer
        except UnknownNameError as err:
            raise ModelSpecError(f"layer {index} ({name}): {err}") from None
        if cls is None:
            raise ModelSpecError(f"layer {index} ({name}): {kind!r} is an op that containers emit, not a layer type")
        try:
            layer = cls.build(shape, rng, dtype, **spec)
            shape = tuple(layer.output_shape(shape))
        except (TypeError, ValueError) as err:
            raise ModelSpecError(f"layer {index} ({name}, type {kind}) on input {shape}: {err}") from None
        layers.append((name, layer))
    return Sequential(layers)


def build_model(description: Mapping[str, Any], input_shape: Sequence[int] = CIFAR_INPUT_SHAPE,
                seed: int | np.random.Generator = 0, dtype: Any = np.float32) -> Sequential:
    """Build the model a description names, with weights drawn from ``seed``.

    The same description, input shape and seed always give identical weights.

    Args:
        description: plain data, see the module docstring; ``arch`` defaults to ``sequential``.
        input_shape: per-example input shape ``(H, W, C)``.
        seed: an int or a NumPy generator.
        dtype: parameter dtype (float32 for training, float64 for gradient checks).
    Returns:
        A :class:`Sequential` on the NumPy backend, its parameters views of one flat buffer
        (:mod:`cifarnet.store`); move it with ``model.to(backend)``.
    """
    arch = description.get("arch", "sequential")
    try:
        to_specs = ARCHITECTURES.get(arch)
    except UnknownNameError as err:
        raise ModelSpecError(str(err)) from None
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return build_layers(to_specs(description), input_shape, rng, dtype).flatten()
