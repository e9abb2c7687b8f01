"""Dropout behaviour, loss values, dtype preservation and errors of individual layers."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import Conv2d, Dropout, Linear, ReLU
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description


def test_dropout_is_inverted_and_identity_in_eval(backend):
    layer = Dropout(0.3, rng=np.random.default_rng(0))
    x = backend.asarray(np.ones((200, 500), np.float32))
    out = to_numpy(layer.forward(x))
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(layer.backward(backend.asarray(np.ones_like(out)))), out)
    layer.eval()
    assert layer.forward(x) is x
    layer.train()
    layer.rate = 0.0
    assert layer.forward(x) is x
    with pytest.raises(ValueError):
        layer.rate = 1.0


def test_softmax_cross_entropy_values(backend):
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    labels = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(p[[0, 1], labels]))
    loss = SoftmaxCrossEntropy()
    assert float(loss.forward(backend.asarray(logits), backend.asarray(labels))) == pytest.approx(expected)
    smooth = SoftmaxCrossEntropy(0.3)
    target = np.full((2, 3), 0.1)
    target[[0, 1], labels] += 0.7
    got = float(smooth.forward(backend.asarray(logits), backend.asarray(labels)))
    assert got == pytest.approx(-np.mean((target * np.log(p)).sum(axis=1)))


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend):
    logits = backend.asarray(np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4 - 1]], np.float32))
    loss = SoftmaxCrossEntropy()
    value = float(loss.forward(logits, backend.asarray(np.array([0, 2]))))
    grad = to_numpy(loss.backward())
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx((0 + 1 + np.log1p(np.exp(-1))) / 2, rel=1e-5)


def test_float32_stays_float32(backend, rng):
    model = build_model(model_description("resnet20"), seed=0).to(backend)
    x = backend.asarray(rng.standard_normal((2, 32, 32, 3)).astype(np.float32))
    out = model.forward(x)
    assert out.dtype == np.float32
    assert model.backward(out).dtype == np.float32
    assert all(g.dtype == np.float32 for _, g in model.named_gradients())


def test_wrong_input_shapes_are_named(rng):
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        Conv2d(3, 4, rng=rng).forward(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        Linear(5, 2, rng=rng).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="without a preceding forward"):
        ReLU().backward(np.zeros(3))


def test_relu_lets_nan_through(backend):
    out = to_numpy(ReLU().forward(backend.asarray(np.array([np.nan, -1.0, 2.0]))))
    assert np.isnan(out[0]) and out[1:].tolist() == [0.0, 2.0]


def test_first_layer_skips_the_input_gradient_but_not_the_weight_gradient(rng):
    model = build_model(model_description("simplecnn", dropout=0.0), seed=0)
    x = rng.standard_normal((4, 32, 32, 3)).astype(np.float32)
    model.backward(model.forward(x))
    dW_full = model["conv1"].grads["W"].copy()
    model.set_input_grad(False)
    assert model.backward(model.forward(x)) is None
    np.testing.assert_array_equal(model["conv1"].grads["W"], dW_full)


def test_relu_backward_is_the_same_in_eval_mode(backend, rng):
    x = backend.asarray(rng.standard_normal((3, 4)))
    dout = backend.asarray(rng.standard_normal((3, 4)))
    grads = []
    for training in (True, False):
        layer = ReLU().train(training)
        layer.forward(x)
        grads.append(to_numpy(layer.backward(dout)))
    np.testing.assert_array_equal(grads[0], grads[1])
    assert (grads[0] == 0).any() and (grads[0] != 0).any()
