"""airbench94 as cifarnet builds it: its shape and parameters, its gradients, its data-fitted
whitening layer, its fused inference plan and ONNX export."""
import numpy as np
import pytest

from cifarnet.inference import InferencePlan, fuse, trace
from cifarnet.layers import EVAL, TRAIN, Whitening
from cifarnet.models import build_model, fit_to_data, fits_data, model_description

from .gradcheck import check_layer
from .model_helpers import randomise_batch_norms
from .test_gradients_layers import KINKED, assert_all_below


def small(**overrides):
    return model_description("airbench94", widths=[4, 8, 8], **overrides)


def fitted(description, rng, dtype=np.float64):
    model = build_model(description, seed=0, dtype=dtype)
    fit_to_data(model, rng.standard_normal((20, 32, 32, 3)).astype(dtype))
    return model


def test_the_network_as_the_paper_gives_it():
    model = build_model(model_description("airbench94"), seed=0)
    assert model.num_parameters() == 1_971_352     # 24 + 13,824 + 36,864 + 147,456 + 3 x 589,824 + 1,152 + 2,560
    assert model.output_shape((32, 32, 3)) == (10,)
    assert model["whiten"].out_channels == 24 and "W" in model["whiten"].buffers
    assert [model[f"group{g}_conv2"].out_channels for g in (1, 2, 3)] == [64, 256, 256]
    norm = model["group2_norm1"]
    assert (norm.momentum, norm.eps, list(norm.params)) == (0.4, 1e-12, ["beta"])
    assert model["logit_scale"].factor == pytest.approx(1 / 9) and "b" not in model["head"].params
    W = model["group1_conv1"].params["W"]                          # Dirac on the first 24 of 64 filters
    assert W[1, 1, 5, 5] == 1 and W[0, 1, 5, 5] == 0 and W[1, 1, 4, 5] == 0 and np.abs(W[..., 24:]).max() > 0


def test_the_whole_small_network_s_gradients(rng):
    model = fitted(small(), rng)
    x = rng.standard_normal((2, 32, 32, 3))
    assert_all_below(check_layer(model, x, mode=TRAIN, max_probes=12), KINKED)


def test_the_network_s_gradients_through_winograd(rng):
    """At 24 channels and more every 3x3 convolution after the whitening runs by Winograd
    (forward, input and weight gradients; the 3x3 last one's weight gradient by im2col): the
    whole network's gradients against finite differences, as at the narrow widths above."""
    from cifarnet.functional.conv import use_winograd

    model = fitted(model_description("airbench94", widths=[24, 32, 32]), rng)
    convs = [model[f"group{g}_conv{i}"] for g in (1, 2, 3) for i in (1, 2)]
    assert all(use_winograd(c.in_channels, c.out_channels, (3, 3), 1, 1) for c in convs)
    x = rng.standard_normal((2, 32, 32, 3))
    assert_all_below(check_layer(model, x, mode=TRAIN, max_probes=8), KINKED)


def test_only_the_whitening_layer_takes_data_and_it_sees_the_images(rng):
    model = build_model(small(), seed=0)
    assert fits_data(model) == ["whiten"]
    images = rng.standard_normal((10, 32, 32, 3)).astype(np.float32)
    fit_to_data(model, images)
    alone = Whitening(3)
    alone.fit(images)
    np.testing.assert_array_equal(model["whiten"].buffers["W"], alone.buffers["W"])
    assert np.abs(alone.buffers["W"]).max() > 0


def test_the_fitted_filters_are_in_the_state_and_load_without_data(rng):
    model = fitted(small(), rng, np.float32)
    state = model.state_dict()
    assert "whiten.W" in state and "whiten.b" in state and "group1_norm1.gamma" in state
    fresh = build_model(small(), seed=1)
    fresh.load_state_dict(state)
    x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(fresh.forward(x, EVAL)[0], model.forward(x, EVAL)[0])


def test_the_plan_fuses_by_roles_and_equals_the_forward(rng):
    model = randomise_batch_norms(fitted(small(), rng), rng)
    nodes, output = trace(model)
    kinds = [(n.kind, n.attrs.get("activation"), "norm" in n.attrs) for n in fuse(nodes, output)]
    assert kinds[:6] == [("whitening", "gelu", False), ("conv", None, False), ("maxpool", None, False),
                         ("batchnorm", None, False), ("gelu", None, False), ("conv", "gelu", True)]
    x = rng.standard_normal((3, 32, 32, 3))
    np.testing.assert_allclose(InferencePlan(model)(x), model.forward(x, EVAL)[0], rtol=1e-10, atol=1e-12)


def test_onnxruntime_computes_what_cifarnet_infers(rng):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from cifarnet.export import to_onnx

    model = randomise_batch_norms(fitted(small(), rng, np.float32), rng)
    proto = to_onnx(model, (32, 32, 3), [f"c{i}" for i in range(10)], {"mean": [0, 0, 0], "std": [1, 1, 1]})
    x = rng.standard_normal((5, 32, 32, 3)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.transpose(0, 3, 1, 2)})[0]
    want = InferencePlan(model)(x)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
