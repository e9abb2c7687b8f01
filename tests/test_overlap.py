"""Gradients reduced across processes while the backward pass runs (cifarnet.training.overlap)."""
import numpy as np
import pytest

from cifarnet.bench.overlap import DelayedCommunicator
from cifarnet.comm import DONE, Communicator
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description
from cifarnet.store import FlatStore
from cifarnet.training.overlap import GradientBuckets
from cifarnet.training.step import forward_backward


@pytest.mark.parametrize("bucket_bytes", [1, 40_000, 1 << 30])
def test_buckets_cut_the_buffer_at_parameter_boundaries_from_its_end(bucket_bytes):
    store = FlatStore.of(build_model(model_description("resnet20"), seed=0))
    buckets = GradientBuckets(store, Communicator(), bucket_bytes).buckets
    assert buckets[0][1] == store.grads.size and buckets[-1][0] == 0          # the end first, all of it
    assert all(a[0] == b[1] for a, b in zip(buckets, buckets[1:], strict=False))  # contiguous, no overlap
    boundaries = {start for start, _ in store.offsets.values()}
    assert all(start in boundaries for start, _ in buckets)
    assert all((stop - start) * 4 >= bucket_bytes for start, stop in buckets[:-1])
    if bucket_bytes == 1:
        assert len(buckets) == len(store.layout)                              # a bucket per parameter
    if bucket_bytes == 1 << 30:
        assert buckets == [(0, store.grads.size)]


class Recording(Communicator):
    """Rank 0 of two identical processes: sums double; each bucket's reduction is recorded with
    what the stem's gradient held at that moment."""

    rank, size = 0, 2

    def __init__(self, store):
        self.store, self.started = store, []

    def sum(self, *values):
        return tuple(v * 2 for v in values)

    def iallreduce(self, buffer):
        stem = self.store.grad_views["stem_conv.W"]
        self.started.append((buffer.size, float(np.abs(stem).sum())))
        buffer *= 2
        return DONE

    def allreduce(self, buffer):
        buffer *= 2


def test_buckets_are_reduced_while_the_backward_pass_runs_and_give_the_blocking_result():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8)
    results = {}
    for overlap in (False, True):
        model = build_model(model_description("resnet20"), seed=0)
        comm = Recording(FlatStore.of(model))
        forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1, comm=comm, total=16, overlap=overlap)
        results[overlap] = (model.store.grads.copy(), comm.started)
    (blocking, none), (overlapped, started) = results[False], results[True]
    assert none == [] and len(started) >= 2
    assert started[0][1] == 0.0                  # the first bucket went out before the stem's gradient existed
    assert sum(size for size, _ in started) == blocking.size
    np.testing.assert_array_equal(overlapped, blocking)


def test_over_a_slow_link_the_backward_pass_hides_all_but_the_last_bucket():
    """The delayed communicator (one link, reductions in order): the buckets start during the
    backward pass, the first well before it ends; the sums are the blocking step's."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8)
    grads = []
    for overlap in (False, True):
        model = build_model(model_description("resnet20"), seed=0)
        comm = DelayedCommunicator(latency_s=0.001, bytes_per_s=1e9)
        forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1, comm=comm, total=16, overlap=overlap)
        grads.append(model.store.grads.copy())
        assert len(comm.reductions) == (1 if not overlap else len(GradientBuckets(model.store, comm).buckets))
    np.testing.assert_array_equal(grads[0], grads[1])


def test_across_processes_batch_norm_takes_one_exchange_a_forward_pass():
    """Over the slow network's stand-in with batch norm's sums on the link too: one exchange per batch
    norm forward, one backward (before issue 33: two forward), and the same step up to rounding."""
    from cifarnet.layers import BatchNorm

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((8, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 8)
    counts, grads = {}, {}
    for one_exchange in (True, False):
        model = build_model(model_description("resnet20"), seed=0)
        comm = DelayedCommunicator(latency_s=0.0, bytes_per_s=1e12, batch_norm=True, one_exchange=one_exchange)
        forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1, comm=comm, total=16, overlap=True)
        counts[one_exchange], grads[one_exchange] = len(comm.reductions), model.store.grads.copy()
    norms = sum(isinstance(layer, BatchNorm) for _, layer in model.walk())
    buckets = len(GradientBuckets(model.store, DelayedCommunicator()).buckets)
    assert norms == 21 and counts[True] == 2 * norms + buckets and counts[False] == 3 * norms + buckets
    np.testing.assert_allclose(grads[True], grads[False], rtol=1e-3, atol=1e-4 * np.abs(grads[False]).max())
