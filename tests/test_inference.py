"""``infer``: eval-mode forward with batch norm folded into the layer before it, ReLU and the
residual addition applied inside the convolution's chunk loop; it must equal ``forward``."""
import contextlib

import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import BatchNorm, Conv2d, Flatten, Linear, ReLU, Sequential
from cifarnet.layers.residual import BasicBlock
from cifarnet.models import build_model, model_description

from .model_helpers import randomise_batch_norms


def _same_as_forward(model, x, backend, rtol=1e-10):
    model.to(backend).eval()
    expected = to_numpy(model.forward(backend.asarray(x)))
    got = to_numpy(model.infer(backend.asarray(x)))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("desc, shape", [
    ({"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5}, (8, 8, 3)),
    (model_description("simplecnn"), (12, 12, 3)),
])
def test_models_infer_like_forward(backend, rng, desc, shape):
    model = randomise_batch_norms(build_model(desc, input_shape=shape, seed=0, dtype=np.float64), rng)
    _same_as_forward(model, rng.standard_normal((5,) + shape), backend)


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("chunk", [None, 2])
def test_basic_block_infers_like_forward(backend, rng, projection, chunk):
    block = BasicBlock(4, 6 if projection else 4, 2 if projection else 1, rng=rng, dtype=np.float64)
    for layer in block.children().values():
        if isinstance(layer, Conv2d):
            layer.chunk = chunk
    _same_as_forward(randomise_batch_norms(block, rng), rng.standard_normal((5, 8, 8, 4)), backend)


@pytest.mark.parametrize("relu", [False, True])
def test_sequential_folds_conv_and_linear_with_or_without_relu(backend, rng, relu):
    layers = [("conv", Conv2d(3, 4, 3, 1, 1, rng=rng, dtype=np.float64)), ("bn", BatchNorm(4, dtype=np.float64))]
    layers += [("relu", ReLU())] if relu else []
    layers += [("flat", Flatten()), ("fc", Linear(4 * 6 * 6, 3, rng=rng, dtype=np.float64)),
               ("bn_fc", BatchNorm(3, dtype=np.float64))]
    model = Sequential(layers)
    model.layers["conv"].params["b"] = rng.standard_normal(4)
    model.layers["fc"].params["b"] = rng.standard_normal(3)
    _same_as_forward(randomise_batch_norms(model, rng), rng.standard_normal((4, 6, 6, 3)), backend)


def test_training_mode_infer_is_forward_and_keeps_backward(backend, rng):
    model = build_model({"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5},
                        input_shape=(8, 8, 3), seed=0, dtype=np.float64).to(backend)
    x = backend.asarray(rng.standard_normal((4, 8, 8, 3)))
    out = model.infer(x)
    model.backward(backend.asarray(np.ones(out.shape)))        # caches were kept: backward runs
    assert all(g is not None for _, g in model.named_gradients())


def test_relu_inside_the_fold_propagates_nan(backend, rng):
    block = BasicBlock(2, 2, 1, rng=rng, dtype=np.float64).to(backend).eval()
    x = rng.standard_normal((2, 4, 4, 2))
    x[0, 1, 1, 0] = np.nan
    assert np.isnan(to_numpy(block.infer(backend.asarray(x)))[0]).any()
    assert not np.isnan(to_numpy(block.infer(backend.asarray(x)))[1]).any()


@pytest.mark.parametrize("workers", [2, 3])
def test_batch_split_across_workers_gives_the_same_output(rng, workers, monkeypatch):
    from cifarnet import inference

    monkeypatch.setattr(inference, "MIN_IMAGES_PER_WORKER", 2)
    model = randomise_batch_norms(build_model({"arch": "resnet", "depth": 8, "widths": [4, 8, 16],
                                                "num_classes": 5}, input_shape=(8, 8, 3), seed=0,
                                               dtype=np.float64), rng).eval()
    x = rng.standard_normal((7, 8, 8, 3))                      # parts of 2, 2, 3 (uneven)
    np.testing.assert_allclose(inference.infer(model, x, workers=workers), model.infer(x), rtol=1e-12, atol=1e-12)


def test_blas_threads_are_restored_after_a_split_batch(rng, monkeypatch):
    from cifarnet import blas, inference

    before = blas.blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose threads can be set")
    seen = []
    monkeypatch.setattr(inference, "MIN_IMAGES_PER_WORKER", 1)
    model = Sequential([("probe", _BlasProbe(seen))])
    inference.infer(model.eval(), np.zeros((4, 3)), workers=2)
    assert seen == [1, 1] and blas.blas_threads() == before   # one BLAS thread per part, then back


def test_without_blas_control_the_batch_is_not_split(rng, monkeypatch):
    from cifarnet import inference

    monkeypatch.setattr(inference, "MIN_IMAGES_PER_WORKER", 1)
    monkeypatch.setattr(inference, "limited_blas_threads", lambda threads: contextlib.nullcontext(False))
    seen = []
    model = Sequential([("probe", _BlasProbe(seen))])
    out = inference.infer(model.eval(), np.zeros((4, 3)), workers=2)
    assert len(seen) == 1 and out.shape == (4, 3)


class _BlasProbe(ReLU):
    """Records the BLAS thread count each time it runs."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def forward(self, x):
        from cifarnet import blas

        self.seen.append(blas.blas_threads())
        return x

