"""Dropout behaviour, loss values, dtype preservation, errors and statelessness of individual layers."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import EVAL, INFER, TRAIN, Conv2d, Dropout, Linear, ReLU
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description


def test_dropout_is_inverted_and_identity_in_eval(backend):
    layer = Dropout(0.3, rng=np.random.default_rng(0))
    x = backend.asarray(np.ones((200, 500), np.float32))
    out, ctx = layer.forward(x, TRAIN)
    out = to_numpy(out)
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(layer.backward(ctx, backend.asarray(np.ones_like(out)))[0]), out)
    assert layer.forward(x, EVAL)[0] is x and layer.forward_eval(x) is x
    layer.rate = 0.0
    assert (to_numpy(layer.forward(x, TRAIN)[0]) == 1).all()
    with pytest.raises(ValueError):
        layer.rate = 1.0


def test_softmax_cross_entropy_values(backend):
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    labels = np.array([0, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(p[[0, 1], labels]))
    loss = SoftmaxCrossEntropy()
    assert float(loss(backend.asarray(logits), backend.asarray(labels))) == pytest.approx(expected)
    smooth = SoftmaxCrossEntropy(0.3)
    target = np.full((2, 3), 0.1)
    target[[0, 1], labels] += 0.7
    got = float(smooth(backend.asarray(logits), backend.asarray(labels)))
    assert got == pytest.approx(-np.mean((target * np.log(p)).sum(axis=1)))


def test_softmax_cross_entropy_is_stable_for_huge_logits(backend):
    logits = backend.asarray(np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4 - 1]], np.float32))
    loss = SoftmaxCrossEntropy()
    value, ctx = loss.forward(logits, backend.asarray(np.array([0, 2])))
    value, grad = float(value), to_numpy(loss.backward(ctx))
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx((0 + 1 + np.log1p(np.exp(-1))) / 2, rel=1e-5)


def test_float32_stays_float32(backend, rng):
    model = build_model(model_description("resnet20"), seed=0).to(backend)
    x = backend.asarray(rng.standard_normal((2, 32, 32, 3)).astype(np.float32))
    out, ctx = model.forward(x, TRAIN)
    assert out.dtype == np.float32
    dx, grads = model.backward(ctx, out)
    assert dx.dtype == np.float32 and len(grads) == len(list(model.named_parameters()))
    assert all(g.dtype == np.float32 for g in grads.values())


def test_wrong_input_shapes_are_named(rng):
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        Conv2d(3, 4, rng=rng).forward(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        Linear(5, 2, rng=rng).forward(np.zeros((2, 4), np.float32))
    _, kept_nothing = ReLU().forward(np.zeros(3), INFER)
    with pytest.raises(RuntimeError, match="backward needs the context of a forward called with keep=True"):
        ReLU().backward(kept_nothing, np.zeros(3))


def test_relu_lets_nan_through(backend):
    out = to_numpy(ReLU().forward_eval(backend.asarray(np.array([np.nan, -1.0, 2.0]))))
    assert np.isnan(out[0]) and out[1:].tolist() == [0.0, 2.0]


def test_first_layer_skips_the_input_gradient_but_not_the_weight_gradient(rng):
    model = build_model(model_description("simplecnn", dropout=0.0), seed=0)
    x = rng.standard_normal((4, 32, 32, 3)).astype(np.float32)
    out, ctx = model.forward(x, TRAIN)
    dx, full = model.backward(ctx, out)
    assert dx is not None
    out, ctx = model.forward(x, TRAIN)
    dx, skipped = model.backward(ctx, out, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(skipped["conv1.W"], full["conv1.W"])


def test_relu_backward_is_the_same_from_either_mode(backend, rng):
    x = backend.asarray(rng.standard_normal((3, 4)))
    dout = backend.asarray(rng.standard_normal((3, 4)))
    grads = []
    for mode in (TRAIN, EVAL):
        _, ctx = ReLU().forward(x, mode)
        grads.append(to_numpy(ReLU().backward(ctx, dout)[0]))
    np.testing.assert_array_equal(grads[0], grads[1])
    assert (grads[0] == 0).any() and (grads[0] != 0).any()


def test_layers_keep_nothing_between_calls(rng):
    """Two forwards of one layer, then their backwards in either order: each uses its own context."""
    layer = Conv2d(2, 3, 3, 1, 1, rng=rng).astype(np.float64)
    a, b = rng.standard_normal((2, 5, 5, 2)), rng.standard_normal((3, 5, 5, 2))
    (_, ctx_a), (_, ctx_b) = layer.forward(a, TRAIN), layer.forward(b, TRAIN)
    dout_b, dout_a = rng.standard_normal((3, 5, 5, 3)), rng.standard_normal((2, 5, 5, 3))
    late = layer.backward(ctx_b, dout_b), layer.backward(ctx_a, dout_a)
    _, fresh_a = layer.forward(a, TRAIN)
    np.testing.assert_array_equal(late[1][1]["W"], layer.backward(fresh_a, dout_a)[1]["W"])
    assert vars(layer).keys() == {"params", "buffers", "children", "in_channels", "out_channels", "kernel_size",
                                  "stride", "padding"}
