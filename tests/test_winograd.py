"""Winograd F(4x4, 3x3) (cifarnet.arrays.winograd) against the direct correlation, and when the
NumPy convolution uses it."""
from __future__ import annotations

import numpy as np
import pytest

from cifarnet.arrays import winograd
from cifarnet.functional import conv
from cifarnet.functional.conv import Conv2dNumpy, Conv2dReference


def _direct(x, W, padding):
    return Conv2dReference.forward(x, W, None, stride=1, padding=padding)


@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("shape", [(3, 7, 5, 4), (2, 9, 10, 3), (1, 4, 4, 2)])
@pytest.mark.parametrize("tiles_per_chunk", [1, 5, None])
@pytest.mark.parametrize("split", [None, True, False])
def test_correlation_equals_the_direct_one_in_float64(rng, padding, shape, tiles_per_chunk, split):
    """Every padding, sizes that are and are not multiples of the tile, chunks whose last one is
    short; the transforms by rows and columns and by the Kronecker products."""
    x, W = rng.standard_normal(shape), rng.standard_normal((3, 3, shape[-1], 5))
    want, _ = _direct(x, W, padding)
    got = np.full(want.shape, np.nan)
    winograd.correlate_into(got, x, winograd.transform_filters(W), (padding, padding), tiles_per_chunk, split=split)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("tiles_per_chunk", [1, 7, None])
@pytest.mark.parametrize("split", [None, True, False])
def test_weight_gradient_equals_the_direct_one_in_float64(rng, padding, tiles_per_chunk, split):
    x, W = rng.standard_normal((3, 9, 6, 4)), rng.standard_normal((3, 3, 4, 5))
    _, saved = _direct(x, W, padding)
    dout = rng.standard_normal((3, 9 + 2 * padding - 2, 6 + 2 * padding - 2, 5))
    _, grads = Conv2dReference.backward(saved, dout, need_dx=False)
    into = np.full(W.shape, np.nan)
    got = winograd.weight_gradient(x, dout, (padding, padding), out=into, tiles_per_chunk=tiles_per_chunk,
                                   split=split)
    assert got is into
    np.testing.assert_allclose(got, grads["W"], rtol=0, atol=1e-12 * np.abs(grads["W"]).max())


@pytest.mark.parametrize("split", [False, True])
def test_float32_error_is_about_1e5_of_the_largest_output(rng, split):
    """The float32 error stated in the module's docstring (docs/correctness.md), at airbench's widths,
    with either form of the transforms."""
    x = rng.standard_normal((4, 7, 7, 256)).astype(np.float32)
    W = (rng.standard_normal((3, 3, 256, 64)) / 48).astype(np.float32)
    want, _ = _direct(x.astype(np.float64), W.astype(np.float64), 1)
    got = np.empty(want.shape, np.float32)
    winograd.correlate_into(got, x, winograd.transform_filters(W), (1, 1), split=split)
    err = np.abs(got - want).max() / np.abs(want).max()
    direct32, _ = _direct(x, W, 1)
    err_direct = np.abs(direct32 - want).max() / np.abs(want).max()
    assert err < 5e-5, err
    assert err > err_direct        # the transforms do add rounding: the bound is not vacuous


@pytest.mark.parametrize("one_axis, kron, shape", [(winograd.BT, np.kron(winograd.BT, winograd.BT), (36, 40)),
                                                   (winograd.AT, np.kron(winograd.AT, winograd.AT), (36, 24)),
                                                   (winograd.AT.T, np.kron(winograd.AT, winograd.AT).T, (16, 24))])
def test_a_transform_by_rows_then_columns_is_the_kronecker_product(rng, one_axis, kron, shape):
    """Input (BT), output (AT) and the output's adjoint (AT^T), on tiles of row-major positions:
    the two 1-D passes give the Kronecker product's result."""
    tiles = rng.standard_normal(shape)
    want = kron @ tiles
    for split in (True, False):
        got = np.full(want.shape, np.nan)
        winograd._Transform(one_axis, kron, shape[1], split, np.float64, "half")(tiles, got)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_the_transforms_split_on_a_thread_alone_and_within_the_cache():
    """Alone, a chunk that fits SEPARABLE_MAX_BYTES is transformed by rows and columns, and a
    64-channel layer takes 64-tile chunks to fit; beside another thread of run_side_by_side (whose
    calls wait for the interpreter lock), the Kronecker products in 128-tile chunks."""
    from cifarnet.threads import run_side_by_side, side_by_side

    def choices():
        return (side_by_side(), winograd.separable(128 * 32, 4), winograd.separable(128 * 64, 4),
                winograd.tiles_for(32, 4), winograd.tiles_for(64, 4), winograd.tiles_for(256, 4),
                winograd.tiles_for(64, 8))

    alone = (False, True, False, 128, 64, 128, 128)        # 256 channels would need chunks under 64 tiles
    assert choices() == alone
    assert run_side_by_side([choices]) == [alone]          # one task: still alone
    assert run_side_by_side([choices, choices]) == [(True, False, False, 128, 128, 128, 128)] * 2
    assert choices() == alone                              # and alone again after
    assert winograd.separable(128 * 64, 4, forced=True) and not winograd.separable(4, 4, forced=False)
    assert winograd.tiles_for(64, 4, split=False) == 128


def test_bad_shapes_are_refused(rng):
    with pytest.raises(ValueError, match="3x3"):
        winograd.transform_filters(np.zeros((5, 5, 2, 2)))
    with pytest.raises(ValueError, match="out has shape"):
        winograd.correlate_into(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4, 3)), np.zeros((36, 3, 2)), (0, 0))
    with pytest.raises(ValueError, match="dout has 4x4"):
        winograd.weight_gradient(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 2)), (0, 0))


def test_the_numpy_convolution_chooses_winograd_for_wide_3x3_layers():
    from cifarnet.threads import run_side_by_side

    assert conv.use_winograd(64, 256, (3, 3), 1, 1)
    assert conv.use_winograd(24, 64, (3, 3), 1, 1)                   # airbench's first convolution
    assert conv.use_winograd(16, 16, (3, 3), 1, 1)                   # 16 channels: Winograd on a thread alone,
    beside = run_side_by_side([lambda: conv.use_winograd(16, 16, (3, 3), 1, 1)] * 2)
    assert beside == [False, False]                                  # blocked im2col beside another
    assert run_side_by_side([lambda: conv.use_winograd(24, 24, (3, 3), 1, 1)] * 2) == [True, True]
    assert not conv.use_winograd(8, 16, (3, 3), 1, 1)                # narrower: blocked im2col
    assert not conv.use_winograd(64, 64, (3, 3), 2, 1)               # strided
    assert not conv.use_winograd(64, 64, (1, 1), 1, 0)               # 1x1
    assert not conv.use_winograd(64, 64, (3, 3), 1, 3)               # more padding than the transform covers
    assert conv.use_winograd(8, 8, (3, 3), 1, 1, winograd=True)      # forced (tests)
    assert not conv.use_winograd(64, 64, (3, 3), 1, 1, winograd=False)


@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("need_dx", [True, False])
def test_forced_winograd_convolution_equals_the_reference(rng, padding, need_dx):
    """The NumPy variant through Winograd (forward, input and weight gradients, bias) on a narrow
    layer where it would not choose it, against the reference, in float64."""
    x, W, b = rng.standard_normal((2, 8, 5, 3)), rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    out, saved = Conv2dNumpy.forward(x, W, b, padding=padding, winograd=True)
    want, saved_ref = Conv2dReference.forward(x, W, b, padding=padding)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx, grads = Conv2dNumpy.backward(saved, dout, need_dx=need_dx)
    dx_ref, grads_ref = Conv2dReference.backward(saved_ref, dout, need_dx=need_dx)
    if need_dx:
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    else:
        assert dx is None
    for name in ("W", "b"):
        np.testing.assert_allclose(grads[name], grads_ref[name], rtol=1e-12, atol=1e-12)


def test_winograd_writes_the_weight_gradient_into_the_store(rng, monkeypatch):
    """The weight gradient lands in ``grads_out`` (no copy) on the Winograd path too, and the
    im2col loop is not run at all when Winograd covers both gradients."""
    x, W = rng.standard_normal((2, 8, 8, 32)), rng.standard_normal((3, 3, 32, 24))
    _, saved = Conv2dNumpy.forward(x, W, None, padding=1)
    monkeypatch.setattr(conv, "_backward_im2col", lambda *a, **k: pytest.fail("im2col backward ran"))
    into = {"W": np.zeros(W.shape)}
    _, grads = Conv2dNumpy.backward(saved, rng.standard_normal((2, 8, 8, 24)), grads_out=into)
    assert grads["W"] is into["W"] and np.abs(into["W"]).max() > 0


def test_outputs_under_a_tile_take_the_weight_gradient_by_im2col(rng, monkeypatch):
    """At a 3x3 output a tile would waste 7 of its 16 products: the weight gradient goes by im2col."""
    x, W = rng.standard_normal((2, 3, 3, 32)), rng.standard_normal((3, 3, 32, 32))
    _, saved = Conv2dNumpy.forward(x, W, None, padding=1)
    calls = []
    real = conv._backward_im2col
    monkeypatch.setattr(conv, "_backward_im2col", lambda *a, **k: calls.append(k) or real(*a, **k))
    _, saved_ref = Conv2dReference.forward(x, W, None, padding=1)
    dout = rng.standard_normal((2, 3, 3, 32))
    dx, grads = Conv2dNumpy.backward(saved, dout)
    dx_ref, grads_ref = Conv2dReference.backward(saved_ref, dout)
    assert [k["want_dw"] for k in calls] == [True]
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["W"], grads_ref["W"], rtol=1e-12, atol=1e-12)
