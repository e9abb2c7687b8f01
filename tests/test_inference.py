"""Inference: the fused plan (batch norm folded into the layer before it, ReLU and the residual
addition inside the convolution's chunk loop) must equal the eval-mode forward; the batch split
across cores must not change the output."""
import numpy as np
import pytest

from cifarnet import parallel
from cifarnet.backend import to_numpy
from cifarnet.inference import InferencePlan, fuse, infer, trace
from cifarnet.layers import EVAL, BatchNorm, Conv2d, Flatten, Layer, Linear, ReLU, Sequential
from cifarnet.layers.residual import BasicBlock
from cifarnet.models import build_model, model_description

from .model_helpers import randomise_batch_norms

TINY_RESNET = {"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5}


def _same_as_forward(model, x, backend, rtol=1e-10):
    model.to(backend)
    expected = to_numpy(model.forward(backend.asarray(x), EVAL)[0])
    got = to_numpy(InferencePlan(model)(backend.asarray(x)))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("desc, shape", [
    (TINY_RESNET, (8, 8, 3)),
    ({**TINY_RESNET, "shortcut": "zero_pad"}, (8, 8, 3)),
    (model_description("simplecnn"), (12, 12, 3)),
])
def test_models_infer_like_forward(backend, rng, desc, shape):
    model = randomise_batch_norms(build_model(desc, input_shape=shape, seed=0, dtype=np.float64), rng)
    _same_as_forward(model, rng.standard_normal((5,) + shape), backend)


def _images_for_chunks(chunks: int, c_out: int, stride: int) -> int:
    """A batch of 8x8x4 float64 images for which each 3x3 NumPy convolution of a basic block (4 to
    ``c_out`` channels at ``stride``, then ``c_out`` to ``c_out``: the one that adds the residual)
    runs in at least ``chunks`` chunks, the last one short (the tuning constant read, not patched)."""
    from cifarnet.functional import conv

    out = (8 + 2 - 3) // stride + 1
    most = 0
    for c_in, s, size in ((4, stride, out), (c_out, 1, out)):
        block = conv.choose_block(c_in, (3, 3), s, size, size)
        per_image = conv.col_bytes(c_in, size, size, conv.patch_for((3, 3), s, block), block, 8)
        per_chunk = conv.images_per_chunk(10 ** 6, per_image)
        most = max(most, (chunks - 1) * per_chunk + per_chunk // 2)
    return most


@pytest.mark.parametrize("shortcut, c_out, stride", [("projection", 6, 2), ("zero_pad", 6, 2), ("projection", 4, 1)])
@pytest.mark.parametrize("chunks", [1, 3])
def test_basic_block_infers_like_forward(backend, rng, shortcut, c_out, stride, chunks):
    n = 5 if chunks == 1 else _images_for_chunks(chunks, c_out, stride)   # the residual and ReLU chunk by chunk
    block = BasicBlock(4, c_out, stride, rng=rng, dtype=np.float64, shortcut=shortcut)
    _same_as_forward(randomise_batch_norms(block, rng), rng.standard_normal((n, 8, 8, 4)), backend)


@pytest.mark.parametrize("relu", [False, True])
def test_sequential_folds_conv_and_linear_with_or_without_relu(backend, rng, relu):
    layers = [("conv", Conv2d(3, 4, 3, 1, 1, rng=rng, dtype=np.float64)), ("bn", BatchNorm(4, dtype=np.float64))]
    layers += [("relu", ReLU())] if relu else []
    layers += [("flat", Flatten()), ("fc", Linear(4 * 6 * 6, 3, rng=rng, dtype=np.float64)),
               ("bn_fc", BatchNorm(3, dtype=np.float64))]
    model = Sequential(layers)
    model["conv"].params["b"] = rng.standard_normal(4)
    model["fc"].params["b"] = rng.standard_normal(3)
    _same_as_forward(randomise_batch_norms(model, rng), rng.standard_normal((4, 6, 6, 3)), backend)


def test_the_fusion_pass_folds_each_norm_and_takes_the_residual_and_relu():
    model = build_model(TINY_RESNET, input_shape=(8, 8, 3), seed=0)
    nodes, output = trace(model)
    kinds = [n.kind for n in nodes]
    assert kinds.count("batchnorm") == 9 and kinds.count("add") == 3 and "dropout" not in kinds
    fused = fuse(nodes, output)
    assert [n.kind for n in fused] == [
        "conv",                                   # stem: conv + bn + relu
        "conv", "conv",                           # stage 1: conv1 (+bn, relu), conv2 (+bn, + x, relu)
        "conv", "conv", "conv",                   # stage 2: conv1, shortcut conv + bn, conv2 (+ shortcut, relu)
        "conv", "conv", "conv",                   # stage 3 likewise
        "global_avg_pool", "linear"]
    shortcut, second = fused[4], fused[5]
    assert second.attrs["residual"] and second.attrs["activation"] == "relu" and second.inputs[1] == shortcut.output
    assert not shortcut.attrs["residual"] and shortcut.attrs["activation"] is None
    assert sum("norm" in n.attrs for n in fused) == 9
    assert fused[-1].output == output


def test_a_value_read_twice_is_not_fused_away(rng):
    """A batch norm whose input something else also reads stays a node of its own."""

    class Tap(Layer):                             # reads the conv output next to the batch norm
        kind = "probe"

        def trace(self, graph, value):
            conv_out = graph.add(self.children["conv"], [value])
            normed = graph.add(self.children["bn"], [conv_out])
            return graph.add("add", [normed, conv_out])

    tap = Tap()
    tap.children = {"conv": Conv2d(2, 2, 3, 1, 1, rng=rng), "bn": BatchNorm(2)}
    nodes, output = trace(tap)
    assert [n.kind for n in fuse(nodes, output)] == ["conv", "batchnorm", "add"]


def test_relu_inside_the_fold_propagates_nan(backend, rng):
    block = BasicBlock(2, 2, 1, rng=rng, dtype=np.float64).to(backend)
    x = rng.standard_normal((2, 4, 4, 2))
    x[0, 1, 1, 0] = np.nan
    out = to_numpy(InferencePlan(block)(backend.asarray(x)))
    assert np.isnan(out[0]).any() and not np.isnan(out[1]).any()


def test_a_plan_follows_the_weights_as_they_change(rng):
    model = randomise_batch_norms(build_model(TINY_RESNET, input_shape=(8, 8, 3), seed=0, dtype=np.float64), rng)
    plan, x = InferencePlan(model), rng.standard_normal((3, 8, 8, 3))
    before = plan(x)
    for _, p in model.named_parameters():
        p *= 1.5
    np.testing.assert_allclose(plan(x), model.forward(x, EVAL)[0], rtol=1e-10, atol=1e-12)
    assert not np.allclose(plan(x), before)


@pytest.mark.parametrize("workers", [2, 3])
def test_batch_split_across_workers_gives_the_same_output(rng, workers):
    model = randomise_batch_norms(build_model(TINY_RESNET, input_shape=(8, 8, 3), seed=0, dtype=np.float64), rng)
    x = rng.standard_normal((7, 8, 8, 3))                      # parts of 2, 2, 3 (uneven)
    np.testing.assert_allclose(infer(model, x, workers=workers, min_per_part=2), InferencePlan(model)(x),
                               rtol=1e-12, atol=1e-12)


class _BlasProbe(ReLU):
    """Records the BLAS thread count each time it runs."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def forward(self, x, mode=EVAL):
        from cifarnet import blas

        self.seen.append(blas.blas_threads())
        return x, None


def test_blas_threads_are_restored_after_a_split_batch(monkeypatch):
    from cifarnet import blas

    before = blas.blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS whose threads can be set")
    seen = []
    infer(Sequential([("probe", _BlasProbe(seen))]), np.zeros((4, 3)), workers=2, min_per_part=1)
    assert seen == [1, 1] and blas.blas_threads() == before   # one BLAS thread per part, then back


def test_without_blas_control_the_batch_is_not_split(monkeypatch):
    monkeypatch.setattr(parallel, "blas_threads", lambda: None)      # an environment without OpenBLAS control
    seen = []
    out = infer(Sequential([("probe", _BlasProbe(seen))]), np.zeros((4, 3)), workers=2, min_per_part=1)
    assert len(seen) == 1 and out.shape == (4, 3)
