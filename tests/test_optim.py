"""Optimizer steps against values worked out by hand; one update over the flat store."""
import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.layers import Layer
from cifarnet.optim import OPTIMIZERS, SGD, Adam, AdamW


def holding(**params) -> Layer:
    """A bare layer holding ``params`` (name -> array): the smallest model an optimizer steps."""
    layer = Layer()
    layer.params.update(params)
    return layer


def run(opt, backend, grads, p0=1.0, name="w", shape=(2,)):
    """Apply ``grads`` (one scalar per step) to a parameter starting at ``p0``; values after each step."""
    model = holding(**{name: backend.asarray(np.full(shape, p0))})
    values = []
    for g in grads:
        opt.step(model, {name: backend.asarray(np.full(shape, g))})
        values.append(float(to_numpy(model.params[name]).flat[0]))
    return values


def test_sgd_plain(backend):
    # p = 1 - 0.1*1 = 0.9; then 0.9 - 0.1*3 = 0.6
    assert run(SGD(lr=0.1, momentum=0.0), backend, [1.0, 3.0]) == pytest.approx([0.9, 0.6], abs=1e-15)


def test_sgd_momentum(backend):
    # v1 = 1, p1 = 1 - 0.1*1 = 0.9;  v2 = 0.9*1 + 1 = 1.9, p2 = 0.9 - 0.19 = 0.71
    assert run(SGD(lr=0.1, momentum=0.9), backend, [1.0, 1.0]) == pytest.approx([0.9, 0.71], abs=1e-15)


def test_sgd_nesterov(backend):
    # v1 = 1, step = 1 + 0.9*1 = 1.9 -> p1 = 0.81;  v2 = 1.9, step = 1 + 0.9*1.9 = 2.71 -> p2 = 0.539
    values = run(SGD(lr=0.1, momentum=0.9, nesterov=True), backend, [1.0, 1.0])
    assert values == pytest.approx([0.81, 0.539], abs=1e-15)


def test_sgd_weight_decay(backend):
    # zero gradient, wd 0.1: g = 0.1*p; p1 = 1 - 0.1*0.1 = 0.99, p2 = 0.99 - 0.1*0.099 = 0.9801
    assert run(SGD(lr=0.1, momentum=0.0, weight_decay=0.1), backend, [0.0, 0.0]) == pytest.approx([0.99, 0.9801])


def test_adam_bias_correction(backend):
    # t=1: m = 0.2, v = 0.004; m_hat = 2, v_hat = 4; p1 = 1 - 0.1 * 2 / (2 + 1e-8) = 0.9000000005
    # t=2 (g=-1): m = 0.08, v = 0.004996; m_hat = 0.42105263, v_hat = 2.49924962; p2 = 0.8733662967
    values = run(Adam(lr=0.1), backend, [2.0, -1.0])
    assert values == pytest.approx([0.9000000005, 0.8733662967024315], abs=1e-12)


def test_adam_l2_versus_adamw_decoupled(backend):
    # Adam, wd 0.5: g = 2 + 0.5*1 = 2.5, a bias-corrected first step moves by lr: p = 0.9
    assert run(Adam(lr=0.1, weight_decay=0.5), backend, [2.0]) == pytest.approx([0.9], abs=1e-9)
    # AdamW: p *= 1 - 0.1*0.5 -> 0.95, then the Adam step on g = 2 moves by lr: p = 0.85
    assert run(AdamW(lr=0.1, weight_decay=0.5), backend, [2.0]) == pytest.approx([0.85], abs=1e-9)


def test_norm_and_bias_exempt_from_decay(backend):
    opt = SGD(lr=0.1, momentum=0.0, weight_decay=0.1, decay_norm_and_bias=False)
    assert run(opt, backend, [0.0], name="gamma", shape=(3,)) == [1.0]        # 1-D: exempt
    opt = SGD(lr=0.1, momentum=0.0, weight_decay=0.1, decay_norm_and_bias=False)
    assert run(opt, backend, [0.0], name="W", shape=(3, 3)) == pytest.approx([0.99])


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_one_flat_update_equals_the_update_of_each_parameter_alone(backend, rng, name):
    """The flat update with a per-element decay (biases exempt) against each parameter updated by
    itself, with its own scalar decay: bit for bit."""
    shapes = {"W": (3, 4), "b": (4,), "gamma": (4,)}
    values = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(3)]
    kwargs = {"lr": 0.05, "weight_decay": 0.01, "decay_norm_and_bias": False}
    together = holding(**{k: backend.asarray(v) for k, v in values.items()})
    opt = OPTIMIZERS.get(name)(**kwargs)
    for g in grads:
        opt.step(together, {k: backend.asarray(v) for k, v in g.items()})
    for key in shapes:
        alone, single = holding(**{key: backend.asarray(values[key])}), OPTIMIZERS.get(name)(**kwargs)
        for g in grads:
            single.step(alone, {key: backend.asarray(g[key])})
        np.testing.assert_array_equal(to_numpy(together.params[key]), to_numpy(alone.params[key]))
    assert together.store.params.size == 20 and all(
        np.shares_memory(to_numpy(p), to_numpy(together.store.params)) for p in together.params.values()) \
        or backend.name == "cupy"


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_state_dict_round_trip_continues_identically(backend, rng, name):
    kwargs = {"lr": 0.05, "weight_decay": 0.01}
    a = OPTIMIZERS.get(name)(**kwargs)
    model_a = holding(w=backend.asarray(rng.standard_normal((3, 4))))
    grads = [backend.asarray(rng.standard_normal((3, 4))) for _ in range(5)]
    for g in grads[:3]:
        a.step(model_a, {"w": g})
    saved = a.state_dict()
    assert all(isinstance(v, np.ndarray) for s in saved["state"].values() for v in s.values())
    b = OPTIMIZERS.get(name)(lr=0.0, weight_decay=0.0)
    b.load_state_dict(saved)
    assert b.state_dict()["steps"] == 3 and b.lr == 0.05 and b.weight_decay == 0.01
    for key, value in saved["state"]["w"].items():
        np.testing.assert_array_equal(b.state_dict()["state"]["w"][key], value)
    model_b = holding(w=backend.asarray(to_numpy(model_a.params["w"]).copy()))
    for g in grads[3:]:
        a.step(model_a, {"w": g})
        b.step(model_b, {"w": g})
    np.testing.assert_array_equal(to_numpy(model_a.params["w"]), to_numpy(model_b.params["w"]))


def test_missing_gradient_is_named():
    with pytest.raises(KeyError, match="W"):
        SGD().step(holding(W=np.zeros(2)), {})


def test_unknown_optimizer_lists_known():
    with pytest.raises(KeyError, match="known: adam, adamw, sgd"):
        OPTIMIZERS.get("rmsprop")


def test_bad_hyperparameters():
    with pytest.raises(ValueError):
        SGD(lr=-1)
    with pytest.raises(ValueError):
        SGD(momentum=0.0, nesterov=True)
    with pytest.raises(ValueError):
        Adam(beta1=1.0)


def test_loading_another_optimizers_state_is_refused():
    adam = Adam()
    adam.step(holding(w=np.ones(2)), {"w": np.ones(2)})
    with pytest.raises(KeyError, match="beta1"):
        SGD().load_state_dict(adam.state_dict())
