"""Parameter gradients are written where the flat store keeps them: no copies in a training step.

Each op's backward writes its parameter gradients into the arrays it is given (``grads_out``,
:mod:`cifarnet.functional.destination`); a layer then hands those on, and copies only what an op
did not write in place (counted in :data:`cifarnet.layers.base.GRADIENT_COPIES`).
"""
import numpy as np
import pytest

from cifarnet.backend import NUMPY
from cifarnet.counting import counting_backend
from cifarnet.functional import OPS
from cifarnet.layers import base
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description
from cifarnet.training.step import forward_backward

from .test_variants import CASES, _on

WITH_PARAMETER_GRADIENTS = ("conv2d", "batch_norm", "batch_norm_act", "linear")


@pytest.mark.parametrize("name, workers", [("resnet20", 1), ("resnet20", 2), ("simplecnn", 1),
                                           ("airbench94", 1), ("airbench94", 2)])
def test_a_training_step_copies_no_gradient(name, workers):
    model = build_model(model_description(name), seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    base.GRADIENT_COPIES.clear()
    result = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=workers)
    assert base.GRADIENT_COPIES == {}
    store = model.store
    assert float(np.abs(store.grads).sum()) > 0                    # the gradients did arrive in the store
    assert all(np.shares_memory(result.grads[k], store.grads) for k in result.grads)


def test_none_on_the_device_path_either():
    backend = counting_backend()
    model = build_model(model_description("resnet20"), seed=0).to(backend)
    rng = np.random.default_rng(0)
    x = backend.xp.asarray(rng.standard_normal((4, 32, 32, 3)).astype(np.float32))
    y = backend.xp.asarray(rng.integers(0, 10, 4))
    base.GRADIENT_COPIES.clear()
    backend.xp.reset()
    forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
    assert base.GRADIENT_COPIES == {} and "layers/base.py" not in backend.xp.by_op


def test_a_gradient_the_op_did_not_write_in_place_is_copied_and_counted():
    into = {"W": np.zeros(3)}
    base.GRADIENT_COPIES.clear()
    assert base.deliver({"W": np.ones(3)}, into, "conv") is into
    assert base.GRADIENT_COPIES == {"conv": 1} and into["W"].tolist() == [1, 1, 1]
    base.deliver({"W": into["W"]}, into, "conv")                    # already there: no copy
    assert base.GRADIENT_COPIES == {"conv": 1}


def _in_place_cases():
    for op_name in WITH_PARAMETER_GRADIENTS:
        op = OPS.get(op_name)
        for variant_name in op.variants:
            for case in CASES[op_name]:
                yield pytest.param(op, variant_name, case, id=f"{op_name}-{variant_name}-{case.name}")


@pytest.mark.parametrize("op, variant_name, case", list(_in_place_cases()))
def test_every_variant_writes_its_parameter_gradients_into_the_arrays_given(op, variant_name, case):
    """The backward with ``grads_out`` (arrays full of NaN) returns those arrays, holding what the
    backward without it returns; a name left out of ``grads_out`` is still computed."""
    variant = op.variants[variant_name]
    if variant_name == "cupy":
        pytest.skip("the CuPy variants run in tests/test_variants.py on a GPU")
    args = [_on(NUMPY, a, np.float64) for a in case.args]
    out, saved = variant.forward(*args, **case.kwargs)
    dout = np.random.default_rng(5).standard_normal(out.shape)
    _, plain = variant.backward(saved, dout, **case.backward_kwargs)
    for left_out in [None, *plain]:
        given = {k: np.full_like(v, np.nan) for k, v in plain.items() if k != left_out}
        _, grads = variant.backward(saved, dout, grads_out=given, **case.backward_kwargs)
        assert grads.keys() == plain.keys()
        for k in plain:
            if k in given:
                assert grads[k] is given[k], k
            np.testing.assert_allclose(grads[k], plain[k], rtol=1e-12, atol=1e-12, err_msg=k)
