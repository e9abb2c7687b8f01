"""Data-parallel training: a batch split between threads with synchronised batch norm must give
the one-thread step's logits, gradients and running statistics."""
import copy
import threading
import time

import numpy as np
import pytest

from cifarnet.blas import blas_threads
from cifarnet.layers import BatchNorm, Conv2d, Dropout, Flatten, Linear, ReLU, Sequential
from cifarnet.layers.residual import BasicBlock
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model
from cifarnet.optim import SGD
from cifarnet.threads import run_side_by_side
from cifarnet.training import train_step
from cifarnet.training.data_parallel import DataParallel, ReplicaGroup

from .model_helpers import randomise_batch_norms

needs_blas_control = pytest.mark.skipif(blas_threads() is None,
                                        reason="OpenBLAS's thread count cannot be set here, so batches are not split")


def _resnet(rng):
    desc = {"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5, "dropout": 0.0}
    return randomise_batch_norms(build_model(desc, input_shape=(8, 8, 3), seed=0, dtype=np.float64), rng), (8, 8, 3)


def _conv_and_features(rng):
    """Batch norm on images and on feature vectors (the 2-D case), a plain and a residual block."""
    model = Sequential([
        ("conv", Conv2d(3, 4, 3, padding=1, rng=rng, dtype=np.float64)),
        ("bn", BatchNorm(4, dtype=np.float64)), ("relu", ReLU()),
        ("block", BasicBlock(4, 6, 2, rng=rng, dtype=np.float64)),
        ("flat", Flatten()), ("fc1", Linear(4 * 4 * 6, 7, rng=rng, dtype=np.float64)),
        ("bn_fc", BatchNorm(7, dtype=np.float64)), ("relu_fc", ReLU()),
        ("fc2", Linear(7, 3, rng=rng, dtype=np.float64)),
    ])
    return randomise_batch_norms(model, rng), (8, 8, 3)


# -- the all-reduce -------------------------------------------------------------------------------
def test_replica_group_sums_across_threads_call_after_call():
    group, rounds = ReplicaGroup(3), 25
    seen = {}

    def worker(rank):
        link = group.link(rank)
        out = []
        for i in range(rounds):
            if rank == 1 and i % 7 == 0:
                time.sleep(0.002)                       # a slow thread must not let others overwrite its slot
            total, vector = link.sum(rank + 10 * i, np.full(4, float(rank * i)))
            out.append((total, vector.copy()))
        seen[rank] = out

    run_side_by_side([lambda r=r: worker(r) for r in range(3)])
    for rank in range(3):
        for i, (total, vector) in enumerate(seen[rank]):
            assert total == 3 + 30 * i
            np.testing.assert_array_equal(vector, np.full(4, 3.0 * i))
    assert group.link(0).leader and not group.link(1).leader     # one replica updates running statistics


def test_an_error_in_one_thread_releases_the_others_and_is_the_one_raised():
    group = ReplicaGroup(2)

    def waits():
        group.link(0).sum(1.0)                          # would wait forever for rank 1
        return "unreachable"

    def fails():
        raise KeyError("rank 1 broke")

    start = time.perf_counter()
    with pytest.raises(KeyError, match="rank 1 broke"):
        run_side_by_side([waits, fails], on_error=group.abort)
    assert time.perf_counter() - start < 5


def test_helper_threads_keep_the_callers_numpy_error_settings():
    def divide():
        return np.ones(3) / np.zeros(3)

    with np.errstate(divide="raise"):
        with pytest.raises(FloatingPointError):
            run_side_by_side([lambda: 0, divide])
    with np.errstate(divide="ignore"):
        assert np.isinf(run_side_by_side([lambda: 0, divide])[1]).all()


def test_nested_splits_are_refused_instead_of_deadlocking():
    def nested():
        return run_side_by_side([lambda: 1, lambda: 2])

    for position in (0, 1):                               # on the caller's thread and on a helper
        tasks = [lambda: 0, lambda: 0]
        tasks[position] = nested
        with pytest.raises(RuntimeError, match="cannot be nested"):
            run_side_by_side(tasks)
    assert run_side_by_side([lambda: 1, lambda: 2]) == [1, 2]   # usable again afterwards


# -- replicas -------------------------------------------------------------------------------------
def test_replicas_share_parameter_arrays_and_nothing_else(rng):
    model = build_model({"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5, "dropout": 0.3},
                        input_shape=(8, 8, 3), seed=0)
    twin = model.replica()
    originals, twins = list(model.all_layers()), list(twin.all_layers())
    assert len(originals) == len(twins) and all(type(a) is type(b) for a, b in zip(originals, twins))
    assert not {id(layer) for layer in originals} & {id(layer) for layer in twins}
    for a, b in zip(originals, twins):
        assert a.params is b.params and a.buffers is b.buffers
        assert b.grads is not a.grads and b.grads == {}
    assert dict(model.named_parameters()).keys() == dict(twin.named_parameters()).keys()
    drop, drop_twin = originals[-2], twins[-2]
    assert isinstance(drop, Dropout) and drop.rng is not drop_twin.rng
    before = drop.rng.bit_generator.state
    model.replica()
    assert drop.rng.bit_generator.state != before          # each replica takes a fresh seed


# -- the split step against one thread ------------------------------------------------------------
@needs_blas_control
@pytest.mark.parametrize("make", [_resnet, _conv_and_features])
@pytest.mark.parametrize("parts", [2, 3])
def test_split_step_matches_one_thread(rng, make, parts):
    model, shape = make(rng)
    reference = copy.deepcopy(model)
    x = rng.standard_normal((11,) + shape)                  # 11 images: parts of 5/6 or 3/4/4
    dout = rng.standard_normal((11, model.output_shape(shape)[-1]))
    for m in (model, reference):
        m.train()
        m.set_input_grad(True)
    net = DataParallel(model, workers=parts, min_images=1)
    assert net.parts(11) == parts
    logits = net.forward(x)
    dx = net.backward(dout)
    expected = reference.forward(x)
    expected_dx = reference.backward(dout)
    np.testing.assert_allclose(logits, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-9, atol=1e-12)
    got, want = dict(model.named_gradients()), dict(reference.named_gradients())
    assert got.keys() == want.keys() and len(got) > 10
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)
    for (name, a), (_, b) in zip(model.named_buffers(), reference.named_buffers()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)   # updated once, not per part


@needs_blas_control
def test_split_training_steps_follow_one_thread_and_repeat_exactly(rng):
    model, shape = _resnet(rng)
    x, y = rng.standard_normal((12,) + shape), rng.integers(0, 5, 12)
    runs = {}
    for key, workers in (("one", 1), ("split", 2), ("split again", 2)):
        m = copy.deepcopy(model)
        opt, loss_fn = SGD(lr=0.1, momentum=0.9), SoftmaxCrossEntropy()
        for _ in range(3):
            train_step(m, loss_fn, opt, x, y, workers=workers) if workers == 1 else \
                _split_step(m, loss_fn, opt, x, y, workers)
        runs[key] = dict(m.state_dict())
    for name, value in runs["one"].items():
        np.testing.assert_allclose(runs["split"][name], value, rtol=1e-8, atol=1e-10, err_msg=name)
        np.testing.assert_array_equal(runs["split again"][name], runs["split"][name])


def _split_step(model, loss_fn, opt, x, y, workers):
    model.train()
    model.set_input_grad(False)
    net = DataParallel(model, workers, min_images=1)
    logits = net.forward(x)
    loss_fn.forward(logits, y)
    assert net.backward(loss_fn.backward()) is None         # no input gradient was asked for
    opt.step(model)


@needs_blas_control
def test_each_part_runs_with_one_blas_thread(rng, monkeypatch):
    model, shape = _conv_and_features(rng)
    seen = []
    original = Conv2d.forward

    def spy(self, x):
        seen.append((threading.current_thread().name, blas_threads()))
        return original(self, x)

    monkeypatch.setattr(Conv2d, "forward", spy)
    before = blas_threads()
    net = DataParallel(model.train(), workers=2, min_images=1)
    net.forward(rng.standard_normal((6,) + shape))
    assert {threads for _, threads in seen} == {1}
    assert len({name for name, _ in seen}) == 2              # two threads did the work
    assert blas_threads() == before


def test_unsplit_cases_run_the_model_itself(rng):
    model, shape = _conv_and_features(rng)
    model.train()
    x = rng.standard_normal((8,) + shape)
    assert DataParallel(model, workers=1).parts(64) == 1
    with pytest.raises(ValueError, match="workers must be >= 1"):
        DataParallel(model, workers=0)
    assert DataParallel(model, workers=4, min_images=32).parts(100) == (1 if blas_threads() is None else 3)
    assert DataParallel(model, workers=2, min_images=32).parts(63) == 1
    net = DataParallel(model, workers=2, min_images=32)
    reference = copy.deepcopy(model)
    np.testing.assert_array_equal(net.forward(x), reference.forward(x))
    net.backward(np.ones((8, 3)))
    reference.backward(np.ones((8, 3)))
    got, want = dict(model.named_gradients()), dict(reference.named_gradients())
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@needs_blas_control
def test_dropout_masks_differ_between_parts_and_steps():
    model = Sequential([("drop", Dropout(0.5, rng=np.random.default_rng(0)))]).train()
    net = DataParallel(model, workers=2, min_images=1)
    x = np.ones((8, 500))
    first = net.forward(x)
    assert not np.array_equal(first[:4] == 0, first[4:] == 0)
    second = net.forward(x)
    assert not np.array_equal(first == 0, second == 0)
    assert 0.4 < (first == 0).mean() < 0.6


@needs_blas_control
def test_a_failing_part_raises_its_own_error(rng):
    model = Sequential([("fc", Linear(4, 2, rng=rng)), ("bn", BatchNorm(2))]).train()
    net = DataParallel(model, workers=2, min_images=1)
    with pytest.raises(ValueError, match="expects"):
        net.forward(np.ones((4, 3)))                           # wrong width: both parts fail in Linear
    x = np.ones((4, 4), dtype=np.float32)
    assert net.forward(x).shape == (4, 2)                      # the next step works
