"""Data-parallel training: a batch split between threads, batch norm's sums added across them,
must give the one-thread step's logits, gradients and running statistics."""
import copy
import threading
import time

import numpy as np
import pytest

from cifarnet import parallel
from cifarnet.blas import blas_threads
from cifarnet.layers import TRAIN, BatchNorm, Conv2d, Dropout, Flatten, Layer, Linear, ReLU, Sequential
from cifarnet.layers.residual import BasicBlock
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model
from cifarnet.optim import SGD
from cifarnet.parallel import ThreadGroup, fork_generators, parts_for
from cifarnet.threads import run_side_by_side
from cifarnet.training import forward_backward, train_step

from .model_helpers import randomise_batch_norms

needs_blas_control = pytest.mark.skipif(blas_threads() is None,
                                        reason="OpenBLAS's thread count cannot be set here, so batches are not split")


SMALL_PARTS = {"min_per_part": 1}       # let batches of a few images split (the default minimum is 16 a part)


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
def test_thread_sums_add_across_threads_call_after_call():
    group, rounds = ThreadGroup(3), 25
    seen = {}

    def worker(rank):
        link = group.member(rank)
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
    assert group.member(0).leader and not group.member(1).leader     # one part updates running statistics


def test_allreduce_and_broadcast_between_threads_round_after_round():
    """Every part's flat buffer ends as the sum of all (in part order), then as the root's."""
    group, rounds = ThreadGroup(3), 10
    buffers = {rank: np.zeros(5) for rank in range(3)}
    seen = {}

    def worker(rank):
        link, out = group.member(rank), []
        for i in range(rounds):
            if rank == 2 and i % 3 == 0:
                time.sleep(0.002)                       # a slow part must still read the others' buffers whole
            buffers[rank][...] = rank + 100 * i
            link.allreduce(buffers[rank])
            out.append(buffers[rank].copy())
            buffers[rank][...] = rank
            link.broadcast(buffers[rank], root=1)
            out.append(buffers[rank].copy())
        seen[rank] = out

    run_side_by_side([lambda r=r: worker(r) for r in range(3)])
    for rank in range(3):
        for i in range(rounds):
            np.testing.assert_array_equal(seen[rank][2 * i], np.full(5, 3.0 + 300 * i))
            np.testing.assert_array_equal(seen[rank][2 * i + 1], np.full(5, 1.0))


@pytest.mark.parametrize("length", [1, 2, 7, 1000])
def test_allreduce_sums_in_part_order_to_the_last_bit(length):
    """Each part sums a slice of the buffers (some slices empty when the buffer is shorter than the
    group); the result is exactly the part-ordered float32 sum, in every part's buffer."""
    values = np.random.default_rng(length).standard_normal((3, length)).astype(np.float32) * 1e3
    buffers = [row.copy() for row in values]
    group = ThreadGroup(3)
    run_side_by_side([lambda r=r: group.member(r).allreduce(buffers[r]) for r in range(3)])
    expected = (values[0] + values[1]) + values[2]
    for buffer in buffers:
        assert buffer.dtype == np.float32 and buffer.tobytes() == expected.tobytes()


class CountingProcesses(parallel.Communicator):
    """Stands in for rank 0 of two processes: counts what would cross, crosses nothing."""

    rank, size = 0, 2

    def __init__(self):
        self.sums = self.allreduces = 0

    def sum(self, *values):
        self.sums += 1
        return values

    def allreduce(self, buffer):
        self.allreduces += 1


@pytest.mark.parametrize("given_outer, batch_norm_crosses", [(None, True), ("local", False)])
def test_a_group_made_for_a_smaller_batch_keeps_the_callers_batch_norm_choice(given_outer,
                                                                             batch_norm_crosses):
    """``trainer.sync_batchnorm=false`` hands a group whose batch norm stays in the process; a batch
    that splits into another number of parts gets a new group, which must keep that choice."""
    model, shape = _conv_and_features(np.random.default_rng(0))
    comm = CountingProcesses()
    group = None if given_outer is None else ThreadGroup(3, parallel.LOCAL)
    x, y = np.random.default_rng(1).standard_normal((4, *shape)), np.array([0, 1, 2, 0])
    forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=2, group=group, comm=comm, total=8, **SMALL_PARTS)
    assert comm.allreduces == 1 and (comm.sums > 0) == batch_norm_crosses


def test_a_split_step_leaves_the_summed_gradients_in_the_flat_store(rng):
    from cifarnet.models import model_description

    model = build_model(model_description("resnet20", dropout=0.0), seed=0, dtype=np.float64)
    x, y = rng.standard_normal((32, 32, 32, 3)), rng.integers(0, 10, 32)
    split = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=2)
    assert all(split.grads[name] is view for name, view in model.store.grad_views.items())
    summed = model.store.grads.copy()
    whole = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
    np.testing.assert_allclose(summed, model.store.grads, rtol=1e-8, atol=1e-12)
    assert whole.grads["fc.W"] is model.store.grad_views["fc.W"]


def test_an_error_in_one_thread_releases_the_others_and_is_the_one_raised():
    group = ThreadGroup(2)

    def waits():
        group.member(0).sum(1.0)                       # would wait forever for rank 1
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


# -- the parts ----------------------------------------------------------------------------------
def test_each_part_gets_its_own_dropout_generators_seeded_from_the_layers():
    model = build_model({"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5, "dropout": 0.3},
                        input_shape=(8, 8, 3), seed=0)
    drop = next(layer for _, layer in model.walk() if isinstance(layer, Dropout))
    before = drop.rng.bit_generator.state
    name = next(name for name, layer in model.walk() if layer is drop)
    parts = fork_generators(model, 3)
    assert [list(p.by_name) for p in parts] == [[name]] * 3     # keyed by the layer's name, alike in every process
    assert len({id(p.of(drop)) for p in parts}) == 3 and drop.rng not in [p.of(drop) for p in parts]
    assert drop.rng.bit_generator.state != before          # the layer's own generator advanced


def test_a_process_keeps_its_own_parts_of_the_global_batch_generators():
    """Process r of s, with k threads, draws from parts r*k .. r*k+k-1 of s*k: what one process with
    s*k threads would hand those parts."""
    def model():
        return build_model({"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5, "dropout": 0.3},
                           input_shape=(8, 8, 3), seed=0)

    def states(forks):
        return [p.by_name[name].bit_generator.state for p in forks for name in p.by_name]

    whole = states(fork_generators(model(), 4))
    assert states(fork_generators(model(), 4, first=2, count=2)) == whole[2:]
    assert states(fork_generators(model(), 4, first=0, count=1)) == whole[:1]


# -- the split step against one thread ------------------------------------------------------------
@needs_blas_control
@pytest.mark.parametrize("make", [_resnet, _conv_and_features])
@pytest.mark.parametrize("parts", [2, 3])
def test_split_step_matches_one_thread(rng, make, parts):
    model, shape = make(rng)
    reference = copy.deepcopy(model)
    x = rng.standard_normal((11,) + shape)                  # 11 images: parts of 5/6 or 3/4/4
    y = rng.integers(0, model.output_shape(shape)[-1], 11)
    assert parts_for(11, parts, min_per_part=1) == parts
    split = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=parts, **SMALL_PARTS)
    whole = forward_backward(reference, SoftmaxCrossEntropy(), x, y, workers=1)
    np.testing.assert_allclose(split.logits, whole.logits, rtol=1e-10, atol=1e-12)
    assert float(split.loss) == pytest.approx(float(whole.loss), rel=1e-12)
    assert split.grads.keys() == whole.grads.keys() and len(whole.grads) > 10
    for name in whole.grads:
        np.testing.assert_allclose(split.grads[name], whole.grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
    for (name, a), (_, b) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
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
            train_step(m, loss_fn, opt, x, y, workers=workers, **SMALL_PARTS)
        runs[key] = dict(m.state_dict())
    for name, value in runs["one"].items():
        np.testing.assert_allclose(runs["split"][name], value, rtol=1e-8, atol=1e-10, err_msg=name)
        np.testing.assert_array_equal(runs["split again"][name], runs["split"][name])


@needs_blas_control
def test_each_part_runs_with_one_blas_thread(rng, monkeypatch):
    model, shape = _conv_and_features(rng)
    seen = []
    original = Conv2d.forward

    def spy(self, x, mode):
        seen.append((threading.current_thread().name, blas_threads()))
        return original(self, x, mode)

    monkeypatch.setattr(Conv2d, "forward", spy)
    before = blas_threads()
    forward_backward(model, SoftmaxCrossEntropy(), rng.standard_normal((6,) + shape), np.zeros(6, int), workers=2,
                     **SMALL_PARTS)
    assert {threads for _, threads in seen} == {1}
    assert len({name for name, _ in seen}) == 2              # two threads did the work
    assert blas_threads() == before


def test_when_batches_are_split():
    assert parts_for(64, 1) == 1
    with pytest.raises(ValueError, match="workers must be >= 1"):
        parts_for(64, 0)
    assert parts_for(100, 4) == (1 if blas_threads() is None else 4)     # 16 images per part at least
    assert parts_for(31, 2) == 1 and parts_for(40, 8) == (1 if blas_threads() is None else 2)
    assert parts_for(128, 2, xp=object()) == 1                            # CuPy arrays are never split


def test_an_unsplit_step_is_the_plain_forward_and_backward(rng):
    model, shape = _conv_and_features(rng)
    x, y = rng.standard_normal((8,) + shape), rng.integers(0, 3, 8)
    reference = copy.deepcopy(model)
    got = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
    logits, ctx = reference.forward(x, TRAIN)
    loss_fn = SoftmaxCrossEntropy()
    _, loss_ctx = loss_fn.forward(logits, y)
    _, grads = reference.backward(ctx, loss_fn.backward(loss_ctx), need_dx=False)
    np.testing.assert_array_equal(got.logits, logits)
    assert got.grads.keys() == grads.keys()
    for k in grads:                     # float64; the plan fuses batch norm and ReLU: the same up to rounding
        np.testing.assert_allclose(got.grads[k], grads[k], rtol=1e-12, atol=1e-14, err_msg=k)


class _Record(Layer):
    """Passes its input through and keeps a copy of what each part sent it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, mode=TRAIN):
        self.seen.append(x.copy())
        return x, None

    def backward(self, ctx, dout, need_dx=True, into=None):
        return dout, {}


@needs_blas_control
def test_dropout_masks_differ_between_parts_and_steps():
    record = _Record()
    model = Sequential([("drop", Dropout(0.5, rng=np.random.default_rng(0))), ("record", record),
                        ("fc", Linear(500, 2))])
    x, y = np.ones((8, 500)), np.zeros(8, int)
    masks = []
    for _ in range(2):
        record.seen.clear()
        forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=2, **SMALL_PARTS)
        assert [len(part) for part in record.seen] == [4, 4]
        masks.append([part == 0 for part in record.seen])
    (a, b), (c, d) = masks
    assert not np.array_equal(a, b)                                   # the parts draw different masks
    assert not any(np.array_equal(m, n) for m in (a, b) for n in (c, d))   # and every step new ones
    assert 0.4 < np.mean([a, b]) < 0.6


@needs_blas_control
def test_a_failing_part_raises_its_own_error(rng):
    model = Sequential([("fc", Linear(4, 2, rng=rng)), ("bn", BatchNorm(2))])
    with pytest.raises(ValueError, match="expects"):
        forward_backward(model, SoftmaxCrossEntropy(), np.ones((4, 3)), np.zeros(4, int), workers=2, **SMALL_PARTS)
    x = np.ones((4, 4), dtype=np.float32)
    assert forward_backward(model, SoftmaxCrossEntropy(), x, np.zeros(4, int), workers=2,
                            **SMALL_PARTS).logits.shape == (4, 2)


@pytest.mark.parametrize("parties", [1, 2, 3])
def test_the_handoff_barrier_keeps_threads_in_step_round_after_round(parties):
    """No thread passes round k before every thread has reached it, over many reuses."""
    from cifarnet.threads import HandoffBarrier

    barrier, rounds = HandoffBarrier(parties), 300
    reached = [0] * parties
    seen_behind = []

    def run(rank):
        for k in range(rounds):
            reached[rank] = k + 1
            barrier.wait()
            if min(reached) < k + 1:                   # someone had not reached round k: a leak
                seen_behind.append((rank, k, list(reached)))
            barrier.wait()                             # (the next round's writes wait for every check)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(parties)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads) and not seen_behind and reached == [rounds] * parties


def test_aborting_the_handoff_barrier_releases_its_waiters_and_later_callers():
    from cifarnet.threads import HandoffBarrier

    barrier, errors = HandoffBarrier(3), []

    def wait():
        try:
            barrier.wait()
        except threading.BrokenBarrierError as error:
            errors.append(error)

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.1)                                    # both blocked: the third party never comes
    barrier.abort()
    for t in threads:
        t.join(timeout=10)
    assert len(errors) == 2 and barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    with pytest.raises(ValueError):
        HandoffBarrier(0)


def test_work_done_between_arriving_and_finishing_overlaps_the_wait_for_the_others():
    """``arrive`` returns at once; ``finish`` blocks until every party arrived: the early thread's
    work runs while the late one is still on its way, and nobody passes before all arrived."""
    from cifarnet.threads import HandoffBarrier

    barrier, events = HandoffBarrier(2), []
    arrived, late_passed = threading.Event(), threading.Event()

    def early():
        arrival = barrier.arrive()
        events.append("early arrived")
        arrived.set()
        late_passed.wait(timeout=10)                   # its own work lasts until the other has passed
        events.append("early worked")
        barrier.finish(arrival)
        events.append("early passed")

    def late():
        arrived.wait(timeout=10)
        barrier.wait()
        events.append("late passed")
        late_passed.set()

    threads = [threading.Thread(target=early), threading.Thread(target=late)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert events[0] == "early arrived" and events.index("early worked") < events.index("early passed")
    assert events.index("late passed") < events.index("early worked")    # the late one did not wait for the work
    barrier.abort()
    with pytest.raises(threading.BrokenBarrierError):
        barrier.finish(barrier.arrive())


def test_weight_gradients_offered_to_batch_norm_s_exchange_give_the_same_step_to_the_bit(monkeypatch):
    """A split batch's backward (two threads) hands each convolution's weight gradient to the next
    exchange, which runs it between arriving and waiting: the gradients equal those computed at
    once, bit for bit (float32, two steps), and the exchanges did run them (18 of ResNet-20's 21
    convolutions a part and step: the stem has no input gradient, and the projection shortcuts'
    next node exchanges nothing, so theirs run after it)."""
    from cifarnet.store import FlatStore
    from cifarnet.training.plan import TrainingPlan

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 32)
    take = parallel.take_offered_work
    in_exchanges = []

    def counted():                                     # what ThreadGroup._gather takes and runs
        tasks = take()
        in_exchanges.append(len(tasks))
        return tasks

    monkeypatch.setattr(parallel, "take_offered_work", counted)
    grads, original, ran = {}, TrainingPlan.backward, {}
    for defer in (False, True):
        monkeypatch.setattr(TrainingPlan, "backward",
                            lambda self, *a, defer=defer, **k: original(self, *a, **{**k, "defer_weights": defer}))
        model = build_model({"arch": "resnet", "depth": 20, "num_classes": 10}, seed=0)
        in_exchanges.clear()
        for _ in range(2):
            forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=2, min_per_part=1)
        grads[defer], ran[defer] = FlatStore.of(model).grads.copy(), sum(in_exchanges)
    assert np.array_equal(grads[False], grads[True])
    assert ran[False] == 0 and ran[True] == 2 * 2 * 18              # steps x parts x convolutions


def test_a_backward_pass_that_fails_leaves_no_work_offered_to_later_exchanges():
    """Offered tasks belong to the pass that offered them: after a failed backward pass none is
    left for the next step's exchanges to run."""
    from cifarnet.training.plan import TrainingPlan

    model = build_model({"arch": "resnet", "depth": 8, "widths": [4, 8, 16], "num_classes": 5}, seed=0)
    plan, ran = TrainingPlan.of(model), []
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
    _, tape = plan.forward(x, TRAIN)
    parallel.offer_work([lambda: ran.append(1)])
    with pytest.raises(ValueError):
        plan.backward(tape, np.ones((4, 7), np.float32), into=model.store.grad_views, defer_weights=True)
    assert parallel.take_offered_work() == [] and ran == []
