"""Every layer's backward against centred finite differences in float64."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.functional import Ctx
from cifarnet.layers import (
    EVAL,
    TRAIN,
    BasicBlock,
    BatchNorm,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from cifarnet.losses import SoftmaxCrossEntropy

from .gradcheck import check_gradients, check_layer

SMOOTH = 1e-6   # layers without kinks
KINKED = 1e-5   # ReLU and max, with inputs built to avoid ties and zeros


def as64(layer, backend):
    return layer.astype(np.float64).to(backend)


def normal(backend, rng, *shape):
    return backend.asarray(rng.standard_normal(shape))


def assert_all_below(errors, tol):
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tol, f"{worst}: relative error {errors[worst]:.2e} > {tol:.0e} (all: {errors})"


@pytest.mark.parametrize("shape, c_out, kernel, stride, padding, bias", [
    ((2, 5, 5, 3), 4, 3, 1, 1, True),      # same padding
    ((2, 7, 7, 3), 4, 3, 2, 1, True),      # stride 2, padding 1
    ((2, 4, 4, 5), 3, 1, 1, 0, True),      # 1x1
    ((2, 6, 6, 4), 5, 1, 2, 0, False),     # strided 1x1 projection
    ((2, 5, 8, 2), 3, 3, 1, 0, True),      # non-square input
    ((1, 6, 5, 3), 2, (2, 3), 1, 1, True), # batch 1, non-square kernel
    ((2, 8, 8, 2), 3, 5, 3, 2, False),     # large kernel and stride
])
def test_conv2d(backend, rng, shape, c_out, kernel, stride, padding, bias):
    layer = as64(Conv2d(shape[-1], c_out, kernel, stride, padding, bias, rng=rng), backend)
    assert_all_below(check_layer(layer, normal(backend, rng, *shape)), SMOOTH)


@pytest.mark.parametrize("shape", [(4, 3, 3, 5), (1, 4, 3, 2), (6, 7)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(backend, rng, shape, training):
    layer = BatchNorm(shape[-1])
    layer.params["gamma"] = rng.uniform(0.5, 1.5, shape[-1])
    layer.params["beta"] = rng.standard_normal(shape[-1])
    layer.buffers["running_mean"] = rng.standard_normal(shape[-1]) * 0.1
    layer.buffers["running_var"] = rng.uniform(0.5, 2.0, shape[-1])
    layer = as64(layer, backend)
    x = normal(backend, rng, *shape) * 2.0 + 0.5
    assert_all_below(check_layer(layer, x, mode=TRAIN if training else EVAL), SMOOTH)


def test_relu(backend, rng):
    x = rng.standard_normal((3, 4, 5, 2))
    x = np.where(np.abs(x) < 0.05, 0.5, x)     # keep every entry far from the kink at 0
    assert_all_below(check_layer(ReLU(), backend.asarray(x)), KINKED)


def distinct_values(rng, shape):
    """A random arrangement of well separated values: no ties anywhere, so max is smooth near x."""
    return rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) * 0.01


@pytest.mark.parametrize("shape, k, stride", [((2, 6, 6, 3), 2, 2), ((1, 7, 5, 2), 3, 2), ((2, 5, 5, 1), 2, 1)])
def test_maxpool(backend, rng, shape, k, stride):
    x = backend.asarray(distinct_values(rng, shape))
    assert_all_below(check_layer(MaxPool2d(k, stride), x), KINKED)


def test_linear(backend, rng):
    layer = as64(Linear(7, 4, rng=rng), backend)
    layer.params["b"] += backend.asarray(rng.standard_normal(4))
    assert_all_below(check_layer(layer, normal(backend, rng, 3, 7)), SMOOTH)


def test_linear_batch_one(backend, rng):
    layer = as64(Linear(5, 3, rng=rng), backend)
    assert_all_below(check_layer(layer, normal(backend, rng, 1, 5)), SMOOTH)


def test_flatten_and_global_avg_pool(backend, rng):
    assert_all_below(check_layer(Flatten(), normal(backend, rng, 2, 3, 4, 5)), SMOOTH)
    assert_all_below(check_layer(GlobalAvgPool(), normal(backend, rng, 2, 3, 4, 5)), SMOOTH)


def test_dropout_with_fixed_mask(backend, rng):
    layer = Dropout(0.4)
    def replay():                                           # the same mask every forward
        layer.rng = np.random.default_rng(7)

    x = normal(backend, rng, 4, 6)
    errors = check_layer(layer, x, before_forward=replay)
    assert_all_below(errors, SMOOTH)
    replay()
    out = to_numpy(layer.forward(x, TRAIN)[0])
    assert (out == 0).any() and (out != 0).any(), "the fixed mask must actually drop something"


@pytest.mark.parametrize("shortcut", ["projection", "zero_pad"])
@pytest.mark.parametrize("c_in, c_out, stride", [(3, 3, 1), (3, 5, 2), (2, 4, 1), (2, 4, 2)])
def test_basic_block(backend, rng, c_in, c_out, stride, shortcut):
    block = as64(BasicBlock(c_in, c_out, stride, rng=rng, shortcut=shortcut), backend)
    reshapes = stride != 1 or c_in != c_out
    assert block.shortcut == (shortcut if reshapes else "identity")
    assert ("shortcut_conv" in block.children) == (reshapes and shortcut == "projection")
    x = normal(backend, rng, 2, 6, 6, c_in)
    assert_all_below(check_layer(block, x, seed=3), KINKED)


def test_sequential(backend, rng):
    model = as64(Sequential([("conv", Conv2d(2, 3, 3, padding=1, rng=rng)), ("bn", BatchNorm(3)),
                             ("flat", Flatten()), ("fc", Linear(48, 4, rng=rng))]), backend)
    assert_all_below(check_layer(model, normal(backend, rng, 3, 4, 4, 2)), SMOOTH)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy(backend, rng, smoothing):
    loss = SoftmaxCrossEntropy(smoothing)
    labels = backend.asarray(rng.integers(0, 5, 6))
    logits = normal(backend, rng, 6, 5) * 3
    errors = check_gradients(lambda z: loss.forward(z, labels), lambda ctx, d: (loss.backward(ctx) * d, {}), logits, {})
    assert_all_below(errors, SMOOTH)


def test_the_check_catches_a_wrong_backward(rng):
    """The checker itself must fail a gradient that is off by 0.1% or that forgets a term."""

    class SlightlyWrongLinear(Linear):
        def backward(self, ctx, dout, need_dx=True, into=None):
            dx, grads = super().backward(ctx, dout, need_dx)
            return dx * 1.001, grads

    layer = SlightlyWrongLinear(4, 3, rng=rng).astype(np.float64)
    errors = check_layer(layer, rng.standard_normal((2, 4)))
    assert errors["x"] > 1e-4 and errors["W"] < SMOOTH

    class BatchStatsIgnored(BatchNorm):       # treats the batch mean and variance as constants
        def backward(self, ctx, dout, need_dx=True, into=None):
            centred, invstd, _, gamma, _, reducer, workspace, offset = ctx.saved   # the NumPy variant's context
            eval_like = (centred, invstd, None, gamma, np.zeros_like(gamma), reducer, workspace, offset)
            return super().backward(Ctx(ctx.variant, eval_like), dout, need_dx)

    bn = BatchStatsIgnored(3).astype(np.float64)
    assert check_layer(bn, rng.standard_normal((5, 3)))["x"] > 1e-2
