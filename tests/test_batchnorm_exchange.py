"""Batch norm's statistics of a split batch in one exchange (threads or processes): the batch's
mean and variance from the parts' sums, their own squared deviations and ``sums^2 / n`` (Chan's
combination), equal to the two-pass statistics of the whole batch; each part's rows stay centred
on its own mean, with the offset to the batch's mean returned, and the gradients that fold it in
equal the whole batch's; a batch in one part keeps the two-pass statistics."""
import numpy as np
import pytest

from cifarnet.comm import LOCAL, Communicator
from cifarnet.functional.batchnorm import train_statistics
from cifarnet.parallel import ThreadGroup
from cifarnet.threads import run_side_by_side


class SilentProcesses(Communicator):
    """Rank 0 of two processes whose peer contributes nothing: counts the sums that would cross."""

    rank, size = 0, 2

    def __init__(self):
        self.sums = 0

    def sum(self, *values):
        self.sums += 1
        return values


def _parts(dtype, parts: int = 3):
    """Parts of one batch (N, H, W, C) with means far apart, so the combination's middle term counts."""
    rng = np.random.default_rng(5)
    return [(rng.standard_normal((2 + k, 3, 4, 5)) * (1 + k) + 10.0 * k - 7.0).astype(dtype) for k in range(parts)]


def _statistics(parts, outer):
    group, c = ThreadGroup(len(parts), outer), parts[0].shape[-1]
    gamma = np.ones(c, parts[0].dtype)
    running = [(np.zeros(c, parts[0].dtype), np.ones(c, parts[0].dtype)) for _ in parts]

    def one(k):
        x = parts[k]
        r = x.reshape(-1, x.shape[2] * c)
        centred, invstd, m, offset = train_statistics(x, r, gamma, group.member(k), 1e-5, 0.1, *running[k],
                                                      np.empty_like(r))
        return (centred - np.tile(offset, x.shape[2])).reshape(x.shape), invstd, m   # centred on the batch's mean

    return run_side_by_side([lambda k=k: one(k) for k in range(len(parts))]), running[0]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_one_exchange_gives_the_whole_batch_s_statistics(dtype, tol):
    parts = _parts(dtype)
    outer = SilentProcesses()
    results, (running_mean, running_var) = _statistics(parts, outer)
    whole = np.concatenate(parts).astype(np.float64).reshape(-1, parts[0].shape[-1])
    mean, var = whole.mean(axis=0), whole.var(axis=0)
    for x, (centred, invstd, m) in zip(parts, results, strict=True):
        assert m == whole.shape[0]
        np.testing.assert_allclose(centred, x.astype(np.float64) - mean, rtol=0, atol=tol * np.abs(whole).max())
        np.testing.assert_allclose(invstd, 1 / np.sqrt(var + 1e-5), rtol=tol)
    np.testing.assert_allclose(running_mean, 0.1 * mean, rtol=tol, atol=tol)
    np.testing.assert_allclose(running_var, 0.9 + 0.1 * var * whole.shape[0] / (whole.shape[0] - 1), rtol=tol)
    assert outer.sums == 1                         # one trip across the processes (part 0 makes it for all)


@pytest.mark.parametrize("parts, exchanges", [(3, 1), (1, 2)])
def test_a_split_batch_takes_one_exchange_between_threads_and_one_part_the_two_passes(parts, exchanges):
    """Threads of one process exchange once per forward too (each exchange is a barrier); a batch
    in one part keeps the two-pass statistics, bit for bit, with no offset."""
    data = _parts(np.float32, parts)
    calls = []
    group = ThreadGroup(parts)
    original = group._sum
    group._sum = lambda rank, values: calls.append(rank) or original(rank, values)
    c = data[0].shape[-1]

    def one(k):
        x = data[k]
        r = x.reshape(-1, x.shape[2] * c)
        return train_statistics(x, r, np.ones(c, np.float32), group.member(k), 1e-5, 0.1, np.zeros(c, np.float32),
                                np.ones(c, np.float32), np.empty_like(r))

    results = run_side_by_side([lambda k=k: one(k) for k in range(parts)])
    assert len(calls) == exchanges * parts
    if parts == 1:                                 # as without a group: the same bits
        x = data[0]
        r = x.reshape(-1, x.shape[2] * c)
        alone = train_statistics(x, r, np.ones(c, np.float32), LOCAL, 1e-5, 0.1, np.zeros(c, np.float32),
                                 np.ones(c, np.float32), np.empty_like(r))
        assert results[0][3] is None and alone[3] is None
        assert np.array_equal(results[0][0], alone[0]) and np.array_equal(results[0][1], alone[1])


@pytest.mark.parametrize("fused", [False, True])
def test_gradients_of_parts_centred_on_their_own_means_equal_the_whole_batch_s(fused):
    """Batch norm (alone, and fused with ReLU and a residual) over three thread parts whose means
    lie far apart: outputs and input gradients equal the one-part batch's, parameter gradients
    summed over the parts too (float64, 1e-10)."""
    from cifarnet.functional.batchnorm import BatchNormNumpy
    from cifarnet.functional.batchnorm_act import BatchNormActNumpy

    data = _parts(np.float64)
    rng = np.random.default_rng(3)
    c = data[0].shape[-1]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    douts = [rng.standard_normal(x.shape) for x in data]
    residuals = [rng.standard_normal(x.shape) for x in data]

    def run(xs, ds, rs, group):
        def one(k):
            state = (np.zeros(c), np.ones(c))
            if fused:
                out, ctx = BatchNormActNumpy.forward(xs[k], gamma, beta, *state, activation="relu", training=True,
                                                     reducer=group.member(k), residual=rs[k])
                (dx, dres), grads = BatchNormActNumpy.backward(ctx, ds[k].copy())
                return out, dx, grads
            out, ctx = BatchNormNumpy.forward(xs[k], gamma, beta, *state, training=True, reducer=group.member(k))
            dx, grads = BatchNormNumpy.backward(ctx, ds[k])
            return out, dx, grads
        return run_side_by_side([lambda k=k: one(k) for k in range(len(xs))])

    split = run(data, douts, residuals, ThreadGroup(3))
    (whole,) = run([np.concatenate(data)], [np.concatenate(douts)], [np.concatenate(residuals)], ThreadGroup(1))
    np.testing.assert_allclose(np.concatenate([s[0] for s in split]), whole[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.concatenate([s[1] for s in split]), whole[1], rtol=0, atol=1e-10)
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(sum(s[2][name] for s in split), whole[2][name], rtol=1e-10, atol=1e-10)


def test_a_part_of_one_value_per_channel_is_fine_when_the_batch_has_more():
    """(N, C) features, a part of one row: only the whole batch needs two values per channel."""
    rng = np.random.default_rng(2)
    parts = [rng.standard_normal((1, 4)), rng.standard_normal((3, 4)) + 2]
    outer = SilentProcesses()
    group = ThreadGroup(2, outer)

    def one(k):
        x = parts[k]
        return train_statistics(x, x, np.ones(4), group.member(k), 1e-5, 0.1, np.zeros(4), np.ones(4),
                                np.empty_like(x))

    results = run_side_by_side([lambda k=k: one(k) for k in range(2)])
    whole = np.concatenate(parts)
    np.testing.assert_allclose(results[0][1], 1 / np.sqrt(whole.var(axis=0) + 1e-5), rtol=1e-12)
