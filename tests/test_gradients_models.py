"""Whole-model gradient checks: tiny ResNets (both shortcuts) and SimpleCNN, in float64."""
import numpy as np
import pytest

from cifarnet.layers import Dropout
from cifarnet.models import build_model, model_description

from .gradcheck import check_layer

KINKED = 1e-5


def replay_dropout(model, seed=11):
    """Return a callable that reseeds every dropout layer, so each forward draws the same mask."""
    drops = [layer for _, layer in model.walk() if isinstance(layer, Dropout)]

    def reset():
        for i, layer in enumerate(drops):
            layer.rng = np.random.default_rng(seed + i)
    return reset


@pytest.mark.parametrize("shortcut", ["projection", "zero_pad"])
def test_tiny_resnet_gradients(backend, rng, shortcut):
    desc = {"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "dropout": 0.2, "num_classes": 5,
            "shortcut": shortcut}
    model = build_model(desc, input_shape=(8, 8, 3), seed=0, dtype=np.float64).to(backend)
    x = backend.asarray(rng.standard_normal((3, 8, 8, 3)))
    errors = check_layer(model, x, max_probes=6, before_forward=replay_dropout(model))
    assert len(errors) == len(list(model.named_parameters())) + 1
    worst = max(errors, key=errors.get)
    assert errors[worst] <= KINKED, f"{worst}: {errors[worst]:.2e}"


def test_simplecnn_gradients(backend, rng):
    model = build_model(model_description("simplecnn"), input_shape=(8, 8, 3), seed=0,
                        dtype=np.float64).to(backend)
    x = backend.asarray(rng.standard_normal((4, 8, 8, 3)))
    errors = check_layer(model, x, max_probes=12, before_forward=replay_dropout(model))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= KINKED, f"{worst}: {errors[worst]:.2e}"
