"""The layer kinds airbench94 added: GELU, the fixed-scale batch norm, the whitening convolution,
the logit scale, the Dirac initialisation; each backward against finite differences in float64."""
import math

import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import EVAL, GELU, TRAIN, BatchNorm, Scale, Whitening
from cifarnet.layers.init import draw_weights
from cifarnet.layers.whitening import patch_moments, whitening_filters

from .gradcheck import check_layer
from .test_gradients_layers import SMOOTH, as64, assert_all_below, normal


def test_gelu_backward(backend, rng):
    assert_all_below(check_layer(GELU(), normal(backend, rng, 3, 4, 5, 2) * 2), SMOOTH)


def test_gelu_is_the_tanh_form_and_within_5e_4_of_the_erf_form():
    x = np.linspace(-8, 8, 4001)
    out = to_numpy(GELU().forward(x, EVAL)[0])
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    erf_form = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(out, tanh_form, rtol=1e-15, atol=1e-15)
    assert 1e-4 < np.abs(out - erf_form).max() < 5e-4          # the two forms differ, by this little


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_in_blocks_is_the_same_to_the_bit_whatever_the_block(rng, dtype):
    """The NumPy GELU works a block at a time (for the cache): blocks of 7 elements (a ragged last
    one), a view that is not contiguous, and no kept tanh give exactly what one block of everything
    gives, and match the reference's formulas."""
    from cifarnet.functional.activation import GeluNumpy, GeluReference

    x = (rng.standard_normal((3, 5, 4, 6)) * 3).astype(dtype)[:, ::2]          # not contiguous
    dout = rng.standard_normal(x.shape).astype(dtype)
    whole, saved = GeluNumpy.forward(x, chunk_bytes=1 << 30)
    blocks, saved_blocks = GeluNumpy.forward(x, chunk_bytes=7 * x.itemsize)
    unkept, none = GeluNumpy.forward(x, keep=False, chunk_bytes=7 * x.itemsize)
    assert np.array_equal(blocks, whole) and np.array_equal(unkept, whole) and none is None
    assert np.array_equal(saved_blocks[1], saved[1])
    d_whole = GeluNumpy.backward(saved, dout, chunk_bytes=1 << 30)[0]
    d_blocks = GeluNumpy.backward(saved_blocks, dout[:, :, ::-1][:, :, ::-1], chunk_bytes=7 * x.itemsize)[0]
    assert np.array_equal(d_blocks, d_whole)
    reference, ref_saved = GeluReference.forward(x.astype(np.float64))
    tolerance = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(whole, reference, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(d_whole, GeluReference.backward(ref_saved, dout.astype(np.float64))[0],
                               rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("keep", [True, False])
def test_batch_norm_gelu_in_row_blocks_gives_the_output_of_one_block(rng, keep):
    """The fused batch norm + GELU (NumPy) applies GELU to each row block as it is written: blocks of
    one row (of 8 rows) give the output of one block of everything, kept or not, and (kept) the
    same input and parameter gradients, so each block's tanh was kept in its place."""
    from cifarnet.functional.batchnorm_act import batch_norm_act

    impl = batch_norm_act.variants["numpy"]
    x = rng.standard_normal((2, 4, 5, 3)) * 2 + 1
    dout = rng.standard_normal(x.shape)
    gamma, beta = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    outs, backs = [], []
    for chunk in (1 << 30, 1):
        out, saved = impl.forward(x, gamma, beta, np.zeros(3), np.ones(3), activation="gelu", training=True,
                                  keep=keep, chunk_bytes=chunk)
        outs.append(out)
        assert (saved is None) is (not keep)
        if keep:
            dx, grads = impl.backward(saved, dout.copy())
            backs.append([dx, grads["gamma"], grads["beta"]])
    assert np.array_equal(outs[0], outs[1])
    if keep:
        assert all(np.array_equal(a, b) for a, b in zip(*backs, strict=True))


@pytest.mark.parametrize("training", [True, False])
def test_fixed_scale_batch_norm_trains_only_its_shift(backend, rng, training):
    layer = BatchNorm(5, momentum=0.4, eps=1e-12, scale=False)
    assert list(layer.params) == ["beta"] and "gamma" in layer.buffers
    layer.params["beta"] = rng.standard_normal(5)
    layer.buffers["running_mean"] = rng.standard_normal(5) * 0.1
    layer.buffers["running_var"] = rng.uniform(0.5, 2.0, 5)
    layer = as64(layer, backend)
    x = normal(backend, rng, 4, 3, 3, 5) * 2 + 0.5
    assert_all_below(check_layer(layer, x, mode=TRAIN if training else EVAL), SMOOTH)
    _, grads = layer.backward(layer.forward(x, TRAIN)[1], x)
    assert set(grads) == {"beta"}


def test_scale_backward(backend, rng):
    assert_all_below(check_layer(Scale(1 / 9), normal(backend, rng, 4, 10)), SMOOTH)


def test_whitening_backward_trains_the_bias_not_the_filters(backend, rng):
    layer = Whitening(3, kernel_size=2)
    layer.fit(rng.standard_normal((6, 8, 8, 3)))
    layer.params["b"] = rng.standard_normal(24)
    layer = as64(layer, backend)
    assert list(layer.params) == ["b"] and list(layer.buffers) == ["W"]
    assert_all_below(check_layer(layer, normal(backend, rng, 2, 5, 6, 3)), SMOOTH)


def loop_patches(images, k):
    """Every k x k patch as a row, values in (KH, KW, C) order: the slow, obvious way."""
    n, h, w, c = images.shape
    return np.array([images[i, y:y + k, x:x + k, :].reshape(-1)
                     for i in range(n) for y in range(h - k + 1) for x in range(w - k + 1)])


def test_patch_moments_equal_the_loop_reference(rng):
    images = rng.standard_normal((3, 6, 5, 3))
    rows = loop_patches(images, 2)
    np.testing.assert_allclose(patch_moments(images, 2), rows.T @ rows / len(rows), rtol=1e-12)


def test_whitening_filters_whiten_the_patches_they_were_fitted_to(rng):
    """The first half of the filters maps the patches to values whose second moment is
    ``L / (L + eps)`` on the diagonal and 0 elsewhere (identity up to eps); the second half is the
    negated first; the eigenvalues come in decreasing order."""
    mix = rng.standard_normal((3, 3))
    images = rng.standard_normal((40, 9, 9, 3)) @ mix + 0.3       # correlated channels, not centred
    layer = Whitening(3, kernel_size=2, eps=5e-4)
    layer.fit(images)
    W = layer.buffers["W"].astype(np.float64).reshape(12, 24)
    np.testing.assert_array_equal(W[:, 12:], -W[:, :12])
    rows = loop_patches(images, 2)
    white = rows @ W[:, :12]
    moments = white.T @ white / len(white)
    values = np.linalg.eigvalsh(rows.T @ rows / len(rows))[::-1]
    np.testing.assert_allclose(moments, np.diag(values / (values + 5e-4)), atol=2e-5)


def test_whitening_filters_follow_the_formula(rng):
    m = rng.standard_normal((12, 12))
    moments = m @ m.T
    filters = whitening_filters(moments, 2, 3, 5e-4).reshape(12, 24)
    values, vectors = np.linalg.eigh(moments)
    for j in range(12):                                         # column j: the j-th largest, up to sign
        expected = vectors[:, 11 - j] / np.sqrt(values[11 - j] + 5e-4)
        sign = np.sign(filters[:, j] @ expected)
        np.testing.assert_allclose(filters[:, j] * sign, expected, rtol=1e-10, atol=1e-12)


def test_whitening_refuses_images_of_the_wrong_shape(rng):
    with pytest.raises(ValueError, match=r"expects \(N, H, W, 3\) images"):
        Whitening(3).fit(rng.standard_normal((2, 8, 8, 4)))


def test_dirac_init_is_the_identity_on_the_first_filters_and_uniform_elsewhere(rng):
    W = draw_weights("pytorch_dirac", rng, (3, 3, 4, 6), 36, None, np.float64)["W"]
    identity = np.zeros((3, 3, 4, 4))
    identity[1, 1, np.arange(4), np.arange(4)] = 1
    np.testing.assert_array_equal(W[..., :4], identity)
    rest = W[..., 4:]
    assert np.abs(rest).max() <= 1 / 6 and rest.std() > 0.05          # uniform in +-1/sqrt(36)
    narrow = draw_weights("pytorch_dirac", rng, (3, 3, 8, 4), 72, 4, np.float64)
    np.testing.assert_array_equal(narrow["W"][1, 1, np.arange(4), np.arange(4)], 1)
    np.testing.assert_array_equal(narrow["b"], 0)
