"""Weight initialisation: each scheme draws the distribution it names, the same for the same seed."""
import numpy as np
import pytest

from cifarnet.layers import Conv2d, Linear
from cifarnet.layers.init import INITS
from cifarnet.models import build_model, model_description

FAN_IN = 3 * 3 * 64                       # a large layer: 73,728 weights, so moments are tight


def conv(scheme, seed=0):
    return Conv2d(64, 128, 3, rng=np.random.default_rng(seed), dtype=np.float64, init=scheme)


def test_he_normal_is_normal_with_variance_two_over_fan_in():
    W, b = conv("he_normal").params["W"], conv("he_normal").params["b"]
    std = np.sqrt(2.0 / FAN_IN)
    assert abs(W.mean()) < 4 * std / np.sqrt(W.size)                     # four standard errors
    assert W.std() == pytest.approx(std, rel=0.02)
    assert abs(np.mean(np.abs(W)) - std * np.sqrt(2 / np.pi)) < 0.02 * std   # normal, not uniform: E|W|
    assert not b.any()


@pytest.mark.parametrize("scheme, bound, bias", [("he_uniform", np.sqrt(6.0 / FAN_IN), False),
                                                  ("pytorch", 1.0 / np.sqrt(FAN_IN), True)])
def test_uniform_schemes_fill_their_bounds(scheme, bound, bias):
    layer = conv(scheme)
    W, b = layer.params["W"], layer.params["b"]
    assert np.abs(W).max() <= bound and np.abs(W).max() > 0.999 * bound
    assert W.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)         # uniform in +-bound
    assert abs(W.mean()) < 4 * bound / np.sqrt(3 * W.size)
    if bias:                                                              # PyTorch: biases in the same range
        assert np.abs(b).max() <= bound and b.std() == pytest.approx(bound / np.sqrt(3), rel=0.25)
    else:
        assert not b.any()


def test_pytorch_scheme_for_linear_layers_uses_their_fan_in():
    layer = Linear(1800, 128, rng=np.random.default_rng(0), dtype=np.float64, init="pytorch")
    bound = 1 / np.sqrt(1800)
    assert np.abs(layer.params["W"]).max() <= bound and np.abs(layer.params["b"]).max() <= bound
    assert layer.params["W"].std() == pytest.approx(bound / np.sqrt(3), rel=0.02)


@pytest.mark.parametrize("scheme", sorted(INITS))
def test_each_scheme_is_deterministic_per_seed(scheme):
    a, b, c = conv(scheme, 1).params["W"], conv(scheme, 1).params["W"], conv(scheme, 2).params["W"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("name", ["simplecnn", "resnet20"])
def test_a_description_wide_init_reaches_every_weighted_layer(name):
    model = build_model(model_description(name, init="pytorch"), seed=0)
    for layer_name, layer in model.walk():
        if isinstance(layer, (Conv2d, Linear)):
            W = layer.params["W"]
            fan_in = int(np.prod(W.shape[:-1]))
            assert np.abs(W).max() <= 1 / np.sqrt(fan_in), layer_name
    first = lambda m: next(m.named_parameters())[1]                      # noqa: E731
    assert not np.array_equal(first(build_model(model_description(name, init="he_normal"), seed=0)), first(model))


def test_an_unknown_scheme_lists_the_known_ones():
    with pytest.raises(KeyError, match="known: he_normal, he_uniform, pytorch"):
        conv("xavier")
