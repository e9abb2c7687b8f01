"""The flat store: parameters, gradients and optimizer slots as views of one buffer each."""
import copy

import numpy as np
import pytest

from cifarnet.backend import to_numpy
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description
from cifarnet.optim import SGD, Adam
from cifarnet.store import FlatStore
from cifarnet.training import train_step


def tiles(arrays, flat) -> bool:
    """Whether ``arrays``, in order, are views covering ``flat`` end to end without gaps or overlaps."""
    base = flat.__array_interface__["data"][0]
    at = 0
    for a in arrays:
        if not np.shares_memory(a, flat) or a.__array_interface__["data"][0] != base + at * flat.itemsize:
            return False
        at += a.size
    return at == flat.size


@pytest.mark.parametrize("name", ["simplecnn", "resnet20"])
def test_a_fresh_model_s_parameters_tile_one_buffer(name):
    model = build_model(model_description(name), seed=0)
    params = [p for _, p in model.named_parameters()]
    assert tiles(params, model.store.params) and model.store.params.size == model.num_parameters()


def test_gradients_and_optimizer_slots_are_flat_after_a_step(rng):
    model = build_model(model_description("resnet20"), seed=0)
    opt = Adam(lr=1e-3)
    x, y = rng.standard_normal((16, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 16)
    train_step(model, SoftmaxCrossEntropy(), opt, x, y, workers=1)
    store = model.store
    assert tiles([store.grad_views[name] for name, _ in model.named_parameters()], store.grads)
    assert np.abs(store.grads).sum() > 0                                   # the step's gradients are in it
    assert set(opt.slots) == {"m", "v"}
    assert all(slot.shape == store.params.shape for slot in opt.slots.values())
    assert tiles([p for _, p in model.named_parameters()], store.params)  # still the same buffer


def test_a_step_s_gradients_are_what_backward_returned(rng):
    model = build_model(model_description("simplecnn"), seed=0)
    x, y = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8)
    from cifarnet.training.step import forward_backward

    result = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
    flat = model.store.gather(result.grads)
    for name, grad in result.grads.items():
        np.testing.assert_array_equal(model.store.view(flat, name), grad)
    assert model.store.gather(model.store.grad_views) is flat                # views are not copied again


def test_cast_copy_load_and_replace_keep_the_model_flat(rng):
    model = build_model(model_description("simplecnn"), seed=0)
    state = {k: v.copy() for k, v in model.state_dict().items()}
    model.astype(np.float64)
    assert model.store.params.dtype == np.float64 and tiles([p for _, p in model.named_parameters()],
                                                            model.store.params)
    twin = copy.deepcopy(model)                                            # a copy gets a store of its own
    assert twin.store is None and FlatStore.of(twin) is not model.store
    assert not np.shares_memory(twin.store.params, model.store.params)
    buffer = model.store.params
    model.load_state_dict(state)                                           # in place: still the same buffer
    assert model.store.params is buffer and FlatStore.of(model).params is buffer
    np.testing.assert_array_equal(to_numpy(model.children["linear1"].params["W"]),
                                  state["linear1.W"])
    model.children["linear1"].params["b"] = np.full(128, 7.0)                  # assigned by hand: a new store
    store = FlatStore.of(model)
    assert store.params is not buffer and (model.children["linear1"].params["b"] == 7.0).all()
    assert tiles([p for _, p in model.named_parameters()], store.params)


def test_optimizer_state_moves_to_a_new_store_and_round_trips(rng):
    model = build_model(model_description("simplecnn"), seed=0)
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=5e-4, decay_norm_and_bias=False)
    x, y = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8)
    train_step(model, SoftmaxCrossEntropy(), opt, x, y, workers=1)
    saved = opt.state_dict()
    assert set(saved["state"]) == {name for name, _ in model.named_parameters()}        # per parameter
    assert all(set(s) == {"velocity"} for s in saved["state"].values())
    again = SGD(lr=0.1, momentum=0.9, weight_decay=5e-4, decay_norm_and_bias=False)
    again.load_state_dict(saved)
    assert again.state_dict()["state"].keys() == saved["state"].keys()          # before its first step too
    twin = copy.deepcopy(model)
    train_step(model, SoftmaxCrossEntropy(), opt, x, y, workers=1)
    train_step(twin, SoftmaxCrossEntropy(), again, x, y, workers=1)
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_one_optimizer_for_two_models_is_refused(rng):
    opt = SGD(lr=0.1)
    x, y = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8)
    train_step(build_model(model_description("simplecnn"), seed=0), SoftmaxCrossEntropy(), opt, x, y, workers=1)
    with pytest.raises(ValueError, match="belongs to a model with other parameters"):
        train_step(build_model(model_description("resnet20"), seed=0), SoftmaxCrossEntropy(), opt, x, y, workers=1)


def test_mixed_dtypes_are_refused():
    from cifarnet.layers import Layer

    layer = Layer()
    layer.params.update(a=np.zeros(2, np.float32), b=np.zeros(2, np.float64))
    with pytest.raises(ValueError, match="one store holds one kind"):
        FlatStore.of(layer)
