"""The vectorised conv and max-pool against slow loop references (issue 2, point 3)."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import Conv2d, MaxPool2d

from .reference import conv2d_backward_loops, conv2d_loops, maxpool_backward_loops, maxpool_loops


def _check_against_loops(layer, x, backend, rng):
    """Forward and backward (dx, dW, db) of a float64 ``layer`` against the loop reference;
    returns the output and the block size the forward used."""
    stride, padding = layer.stride, layer.padding
    out = layer.forward(backend.asarray(x))
    block = layer._cache[1]
    W, b = to_numpy(layer.params["W"]), to_numpy(layer.params["b"])
    np.testing.assert_allclose(to_numpy(out), conv2d_loops(x, W, b, stride, padding), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(backend.asarray(dout))
    ref_dx, ref_dW, ref_db = conv2d_backward_loops(x, W, dout, stride, padding)
    np.testing.assert_allclose(to_numpy(dx), ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.grads["W"]), ref_dW, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.grads["b"]), ref_db, rtol=1e-10, atol=1e-12)
    return out, block


@pytest.mark.parametrize("shape, c_out, k, stride, padding", [
    ((2, 7, 7, 3), 4, 3, 1, 1), ((2, 9, 8, 3), 5, 3, 2, 1), ((3, 5, 5, 4), 2, 1, 1, 0),
    ((1, 8, 8, 2), 3, 1, 2, 0), ((2, 10, 10, 2), 3, 5, 3, 2),
])
def test_conv_matches_loops(backend, rng, shape, c_out, k, stride, padding):
    layer = Conv2d(shape[-1], c_out, k, stride, padding, rng=rng).astype(np.float64)
    layer.params["b"] = rng.standard_normal(c_out)
    layer.to(backend)
    _check_against_loops(layer, rng.standard_normal(shape), backend, rng)


def test_conv_float32_matches_loops(backend, rng):
    layer = Conv2d(3, 8, 3, 1, 1, rng=rng).to(backend)
    x = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
    out = layer.forward(backend.asarray(x))
    assert out.dtype == np.float32
    ref = conv2d_loops(x.astype(np.float64), to_numpy(layer.params["W"]).astype(np.float64),
                       to_numpy(layer.params["b"]), 1, 1)
    np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, k, stride", [((2, 6, 6, 3), 2, 2), ((2, 7, 9, 2), 3, 2), ((1, 5, 5, 4), 2, 1),
                                              ((2, 31, 31, 2), 2, 2)])
def test_maxpool_matches_loops(backend, rng, shape, k, stride):
    x = rng.standard_normal(shape)
    layer = MaxPool2d(k, stride)
    out = layer.forward(backend.asarray(x))
    ref, _ = maxpool_loops(x, k, stride)
    np.testing.assert_array_equal(to_numpy(out), ref)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(to_numpy(layer.backward(backend.asarray(dout))),
                               maxpool_backward_loops(x, dout, k, stride), rtol=0, atol=1e-14)


def test_maxpool_ties_route_to_first_maximum(backend):
    x = np.zeros((1, 2, 2, 1))                    # four equal maxima in one window
    layer = MaxPool2d(2)
    layer.forward(backend.asarray(x))
    dx = to_numpy(layer.backward(backend.asarray(np.ones((1, 1, 1, 1)))))
    assert dx[0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("shape, c_out, k, padding", [((2, 8, 8, 3), 4, 3, 1), ((1, 10, 6, 2), 3, 3, 0),
                                                      ((2, 8, 4, 5), 2, (3, 1), (1))])
def test_blocked_conv_matches_loops(backend, rng, block, shape, c_out, k, padding):
    """The blocked fast path (several output pixels per patch) against the loop reference."""
    layer = Conv2d(shape[-1], c_out, k, 1, padding, rng=rng).astype(np.float64)
    layer.params["b"] = rng.standard_normal(c_out)
    layer.block = block
    layer.to(backend)
    out, used = _check_against_loops(layer, rng.standard_normal(shape), backend, rng)
    assert used == block or out.shape[1] % block or out.shape[2] % block


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("stride, padding, block", [(1, 1, 1), (1, 1, 2), (2, 1, 1), (1, 0, 2), (2, 0, 1)])
def test_chunked_conv_matches_loops(backend, rng, chunk, stride, padding, block):
    """Working through the batch a chunk at a time (last chunk short) changes nothing."""
    layer = Conv2d(3, 4, 3, stride, padding, rng=rng).astype(np.float64)
    layer.params["b"] = rng.standard_normal(4)
    layer.block, layer.chunk = block, chunk
    layer.to(backend)
    _check_against_loops(layer, rng.standard_normal((5, 8, 8, 3)), backend, rng)


def test_numpy_chunks_hold_about_chunk_bytes_of_columns(rng):
    from cifarnet.layers import conv

    layer = Conv2d(16, 16, 3, 1, 1, rng=rng)
    per_image = layer._col_bytes(16, 32, 32, 2, 4)               # 256 blocks x (4*4*16) floats
    assert per_image == 256 * 256 * 4
    assert layer._images_per_chunk(np, 128, per_image) == conv.CHUNK_BYTES // per_image
    assert layer._images_per_chunk(np, 4, per_image) == 4                  # 1 MB: one chunk
    layer.chunk = 3
    assert layer._images_per_chunk(np, 128, per_image) == 3


def test_narrow_layers_choose_the_blocked_path(rng):
    assert Conv2d(16, 16, 3, 1, 1, rng=rng)._block_for(16, 32, 32) == 2
    assert Conv2d(32, 32, 3, 1, 1, rng=rng)._block_for(32, 16, 16) == 1     # above BLOCK_MAX_CHANNELS
    assert Conv2d(64, 64, 3, 1, 1, rng=rng)._block_for(64, 8, 8) == 1
    assert Conv2d(16, 32, 3, 2, 1, rng=rng)._block_for(16, 16, 16) == 1
    assert Conv2d(8, 8, 3, 1, 0, rng=rng)._block_for(8, 15, 15) == 1


@pytest.mark.parametrize("shape, k, stride", [((2, 6, 6, 3), 2, 2), ((1, 7, 5, 2), 3, 2)])
def test_maxpool_eval_mode_routes_like_training_mode(backend, rng, shape, k, stride):
    x = np.maximum(rng.standard_normal(shape), 0)                 # many tied zeros, as after ReLU
    results = []
    for training in (True, False):
        layer = MaxPool2d(k, stride).train(training)
        out = layer.forward(backend.asarray(x))
        dout = np.arange(np.prod(out.shape), dtype=np.float64).reshape(out.shape) + 1
        results.append((to_numpy(out), to_numpy(layer.backward(backend.asarray(dout)))))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    out, _ = maxpool_loops(x, k, stride)
    dout = np.arange(out.size, dtype=np.float64).reshape(out.shape) + 1
    np.testing.assert_array_equal(results[1][1], maxpool_backward_loops(x, dout, k, stride))
