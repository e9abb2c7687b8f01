"""Every conv and max-pool variant, plain, blocked and chunked, against slow loop references.

The reference variant runs on every backend; the NumPy variant's layouts (blocks of output pixels,
chunks of images) are forced here through its ``block`` and ``chunk`` options.
"""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.functional import conv, max_pool2d
from cifarnet.functional.conv import Conv2dNumpy
from cifarnet.layers import TRAIN, Conv2d, MaxPool2d

from .reference import conv2d_backward_loops, conv2d_loops, maxpool_backward_loops, maxpool_loops


def _check_against_loops(forward, backward, x, W, b, stride, padding, backend, rng):
    """Forward and backward (dx, dW, db) of a float64 convolution against the loop reference;
    returns the output."""
    out, ctx = forward(backend.asarray(x))
    np.testing.assert_allclose(to_numpy(out), conv2d_loops(x, W, b, stride, padding), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx, grads = backward(ctx, backend.asarray(dout))
    ref_dx, ref_dW, ref_db = conv2d_backward_loops(x, W, dout, stride, padding)
    np.testing.assert_allclose(to_numpy(dx), ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(grads["W"]), ref_dW, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(grads["b"]), ref_db, rtol=1e-10, atol=1e-12)
    return out


def _check_layer(layer, x, backend, rng):
    W, b = to_numpy(layer.params["W"]), to_numpy(layer.params["b"])
    return _check_against_loops(lambda z: layer.forward(z, TRAIN), layer.backward, x, W, b, layer.stride,
                                layer.padding, backend, rng)


def _check_numpy_variant(x, W, b, stride, padding, rng, **layout):
    from cifarnet.backend import NUMPY

    return _check_against_loops(
        lambda z: Conv2dNumpy.forward(z, W, b, stride=stride, padding=padding, **layout),
        lambda saved, d: Conv2dNumpy.backward(saved, d), x, W, b, stride, padding, NUMPY, rng)


@pytest.mark.parametrize("shape, c_out, k, stride, padding", [
    ((2, 7, 7, 3), 4, 3, 1, 1), ((2, 9, 8, 3), 5, 3, 2, 1), ((3, 5, 5, 4), 2, 1, 1, 0),
    ((1, 8, 8, 2), 3, 1, 2, 0), ((2, 10, 10, 2), 3, 5, 3, 2),
])
def test_conv_matches_loops(backend, rng, shape, c_out, k, stride, padding):
    layer = Conv2d(shape[-1], c_out, k, stride, padding, rng=rng).astype(np.float64)
    layer.params["b"] = rng.standard_normal(c_out)
    layer.to(backend)
    _check_layer(layer, rng.standard_normal(shape), backend, rng)


@pytest.mark.parametrize("shape, c_out, k, stride, padding", [
    ((2, 7, 7, 3), 4, 3, 1, 1), ((2, 9, 8, 3), 5, 3, 2, 1), ((1, 8, 8, 2), 3, 1, 2, 0),
])
def test_conv_reference_variant_matches_loops(backend, rng, shape, c_out, k, stride, padding):
    W, b = rng.standard_normal((k, k, shape[-1], c_out)), rng.standard_normal(c_out)
    reference = conv.conv2d.variants["reference"]
    _check_against_loops(
        lambda z: reference.forward(z, backend.asarray(W), backend.asarray(b), stride=stride, padding=padding),
        reference.backward, rng.standard_normal(shape), W, b, stride, padding, backend, rng)


def test_conv_float32_matches_loops(backend, rng):
    layer = Conv2d(3, 8, 3, 1, 1, rng=rng).to(backend)
    x = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
    out, _ = layer.forward(backend.asarray(x))
    assert out.dtype == np.float32
    ref = conv2d_loops(x.astype(np.float64), to_numpy(layer.params["W"]).astype(np.float64),
                       to_numpy(layer.params["b"]), 1, 1)
    np.testing.assert_allclose(to_numpy(out), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, k, stride", [((2, 6, 6, 3), 2, 2), ((2, 7, 9, 2), 3, 2), ((1, 5, 5, 4), 2, 1),
                                              ((2, 31, 31, 2), 2, 2)])
def test_maxpool_matches_loops(backend, rng, shape, k, stride):
    x = rng.standard_normal(shape)
    for variant in max_pool2d.variants.values():               # the reference and the NumPy one
        if variant.variant_name != "reference" and backend.name != variant.variant_name:
            continue
        out, saved = variant.forward(backend.asarray(x), kernel=k, stride=stride)
        ref, _ = maxpool_loops(x, k, stride)
        np.testing.assert_array_equal(to_numpy(out), ref)
        dout = rng.standard_normal(out.shape)
        dx, _ = variant.backward(saved, backend.asarray(dout))
        np.testing.assert_allclose(to_numpy(dx), maxpool_backward_loops(x, dout, k, stride), rtol=0, atol=1e-14)


def test_maxpool_ties_route_to_first_maximum(backend):
    x = np.zeros((1, 2, 2, 1))                    # four equal maxima in one window
    layer = MaxPool2d(2)
    _, ctx = layer.forward(backend.asarray(x))
    dx, _ = layer.backward(ctx, backend.asarray(np.ones((1, 1, 1, 1))))
    assert to_numpy(dx)[0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


@pytest.mark.parametrize("block", [1, 2, 4, (1, 2), (1, 4), (2, 1), (2, 4)])
@pytest.mark.parametrize("shape, c_out, k, padding", [((2, 8, 8, 3), 4, 3, 1), ((1, 10, 6, 2), 3, 3, 0),
                                                      ((2, 8, 4, 5), 2, (3, 1), (1))])
def test_blocked_conv_matches_loops(rng, block, shape, c_out, k, padding):
    """The blocked fast path (several output pixels per patch, square or not) against the loop
    reference; a block that does not tile the output falls back to one pixel per patch."""
    kh, kw = (k, k) if isinstance(k, int) else k
    W, b = rng.standard_normal((kh, kw, shape[-1], c_out)), rng.standard_normal(c_out)
    out = _check_numpy_variant(rng.standard_normal(shape), W, b, 1, padding, rng, block=block)
    used = conv.choose_block(shape[-1], (kh, kw), 1, out.shape[1], out.shape[2], block)
    bh, bw = (block, block) if isinstance(block, int) else block
    tiles = out.shape[1] % bh == 0 and out.shape[2] % bw == 0
    assert used == ((bh, bw) if tiles else (1, 1))


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("stride, padding, block", [(1, 1, 1), (1, 1, 2), (2, 1, 1), (1, 0, 2), (2, 0, 1),
                                                     (1, 1, (1, 2)), (1, 0, (1, 2))])
def test_chunked_conv_matches_loops(rng, chunk, stride, padding, block):
    """Working through the batch a chunk at a time (last chunk short) changes nothing."""
    W, b = rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    _check_numpy_variant(rng.standard_normal((5, 8, 8, 3)), W, b, stride, padding, rng, block=block, chunk=chunk)


def test_numpy_chunks_hold_about_chunk_bytes_of_columns():
    per_image = conv.col_bytes(16, 32, 32, conv.patch_for((3, 3), 1, 2), 2, 4)   # 256 blocks x (4*4*16) floats
    assert per_image == 256 * 256 * 4
    pair = conv.col_bytes(16, 32, 32, conv.patch_for((3, 3), 1, (1, 2)), (1, 2), 4)
    assert pair == 512 * (3 * 4 * 16) * 4                              # 512 pixel pairs x (3*4*16) floats
    assert conv.images_per_chunk(128, per_image) == conv.CHUNK_BYTES // per_image
    assert conv.images_per_chunk(4, per_image) == 4                  # 1 MB: one chunk
    assert conv.images_per_chunk(128, per_image, chunk=3) == 3


def test_narrow_layers_choose_the_blocked_path():
    assert conv.choose_block(16, (3, 3), 1, 32, 32) == (1, 2)     # two neighbours in a row per patch
    assert conv.choose_block(8, (3, 3), 1, 15, 30) == (1, 2)      # only the width must be even
    assert conv.choose_block(3, (3, 3), 1, 30, 30) == (2, 2)      # below ROW_BLOCK_MIN_CHANNELS: 2x2
    assert conv.choose_block(3, (3, 3), 1, 15, 30) == (1, 1)      # ... which needs both sides even
    assert conv.choose_block(32, (3, 3), 1, 16, 16) == (1, 1)     # above BLOCK_MAX_CHANNELS
    assert conv.choose_block(64, (3, 3), 1, 8, 8) == (1, 1)
    assert conv.choose_block(16, (3, 3), 2, 16, 16) == (1, 1)     # strided
    assert conv.choose_block(8, (3, 3), 1, 30, 15) == (1, 1)      # odd output width
    assert conv.choose_block(16, (1, 1), 1, 32, 32) == (1, 1)     # 1x1
    assert conv.choose_block(16, (3, 3), 1, 32, 32, block=2) == (2, 2)   # forced, an int a square


@pytest.mark.parametrize("shape, k, stride", [((2, 6, 6, 3), 2, 2), ((1, 7, 5, 2), 3, 2)])
def test_maxpool_backward_is_the_same_from_either_mode(backend, rng, shape, k, stride):
    from cifarnet.layers import EVAL

    x = np.maximum(rng.standard_normal(shape), 0)                 # many tied zeros, as after ReLU
    results = []
    for mode in (TRAIN, EVAL):
        layer = MaxPool2d(k, stride)
        out, ctx = layer.forward(backend.asarray(x), mode)
        dout = np.arange(np.prod(out.shape), dtype=np.float64).reshape(out.shape) + 1
        results.append((to_numpy(out), to_numpy(layer.backward(ctx, backend.asarray(dout))[0])))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    out, _ = maxpool_loops(x, k, stride)
    dout = np.arange(out.size, dtype=np.float64).reshape(out.shape) + 1
    np.testing.assert_array_equal(results[1][1], maxpool_backward_loops(x, dout, k, stride))


@pytest.mark.parametrize("chunk", [1, 2, None])
def test_wide_pooling_backward_in_chunks_matches_the_reference(rng, chunk):
    """The wide path's backward a chunk of images at a time (the last chunk short, ties in the
    second image only: each chunk decides for itself whether it has ties) gives the reference's
    gradient exactly."""
    x = rng.standard_normal((3, 7, 9, 32))
    x[1] = np.round(x[1])                                   # equal maxima in some windows of image 1
    numpy_variant, reference = max_pool2d.variants["numpy"], max_pool2d.variants["reference"]
    out, saved = numpy_variant.forward(x, kernel=2, chunk=chunk)
    want, saved_ref = reference.forward(x, kernel=2, stride=2)
    np.testing.assert_array_equal(out, want)
    dout = rng.standard_normal(out.shape)
    dx, _ = numpy_variant.backward(saved, dout)
    np.testing.assert_array_equal(dx, reference.backward(saved_ref, dout)[0])


@pytest.mark.parametrize("k, channels", [(2, 1), (2, 8), (3, 3), (3, 16)])
def test_tiled_pooling_routes_ties_to_the_first_maximum_as_the_loops_do(rng, k, channels):
    """The tiled path (fewer than 32 channels, sizes divisible by k) on rounded values, ties in most
    windows (a maximum shared by two rows, or by two columns in different rows): output and gradient
    equal to the loop reference's exactly; for k = 2 the gradient is routed by one product and one
    difference per window row and column."""
    numpy_variant = max_pool2d.variants["numpy"]
    x = np.round(rng.standard_normal((3, 2 * k, 3 * k, channels)))
    out, saved = numpy_variant.forward(x, kernel=k)
    assert saved[0] == "tiled"
    np.testing.assert_array_equal(out, maxpool_loops(x, k, k)[0])
    dout = rng.standard_normal(out.shape)
    dx, _ = numpy_variant.backward(saved, dout)
    np.testing.assert_array_equal(dx, maxpool_backward_loops(x, dout, k, k))
