"""Batch norm: running statistics, and eval mode independent of the batch."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import EVAL, TRAIN, BatchNorm
from cifarnet.models import build_model, model_description


def test_training_normalises_with_batch_statistics(backend, rng):
    bn = BatchNorm(3).to(backend)
    x = rng.standard_normal((8, 4, 4, 3)).astype(np.float32) * 5 + 2
    out = to_numpy(bn.forward(backend.asarray(x), TRAIN)[0])
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), 1, atol=1e-3)


def test_running_statistics_update(backend, rng):
    bn = BatchNorm(2, momentum=0.25).astype(np.float64).to(backend)
    x = rng.standard_normal((10, 2)) * 3 + 1
    bn.forward(backend.asarray(x), TRAIN)
    np.testing.assert_allclose(to_numpy(bn.buffers["running_mean"]), 0.25 * x.mean(axis=0))
    np.testing.assert_allclose(to_numpy(bn.buffers["running_var"]), 0.75 + 0.25 * x.var(axis=0, ddof=1))


def test_eval_uses_running_statistics(backend, rng):
    bn = BatchNorm(2).astype(np.float64)
    bn.buffers["running_mean"][:] = [1.0, -2.0]
    bn.buffers["running_var"][:] = [4.0, 0.25]
    bn.to(backend)
    x = rng.standard_normal((5, 2))
    expected = (x - [1.0, -2.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)
    np.testing.assert_allclose(to_numpy(bn.forward(backend.asarray(x), EVAL)[0]), expected)
    assert to_numpy(bn.buffers["running_mean"]).tolist() == [1.0, -2.0]       # untouched in eval


@pytest.mark.parametrize("model_name", ["simplecnn", "resnet20"])
def test_eval_prediction_does_not_depend_on_the_batch(backend, rng, model_name):
    model = build_model(model_description(model_name), seed=0).to(backend)
    images = rng.standard_normal((9, 32, 32, 3)).astype(np.float32)
    for _ in range(3):                                    # give the running statistics some history
        model.forward(backend.asarray(images * 2 + 1), TRAIN)
    alone = to_numpy(model.forward_eval(backend.asarray(images[:1])))
    for batch in (images[:4], np.concatenate([images[:1], images[5:] * 100 - 50])):
        inside = to_numpy(model.forward_eval(backend.asarray(batch)))[:1]
        np.testing.assert_allclose(inside, alone, rtol=1e-5, atol=1e-5)
    trained = to_numpy(model.forward(backend.asarray(np.concatenate([images[:1], images[5:] * 100])), TRAIN)[0])[:1]
    assert not np.allclose(trained, alone, atol=1e-3)      # training mode does depend on the batch


def test_single_value_per_channel_in_training_is_refused(backend):
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm(3).to(backend).forward(backend.asarray(np.ones((1, 3), np.float32)), TRAIN)
    BatchNorm(3).to(backend).forward(backend.asarray(np.ones((1, 2, 2, 3), np.float32)), TRAIN)  # 4 values: fine
