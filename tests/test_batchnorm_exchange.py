"""Batch norm's statistics across processes in one exchange (``crosses_processes``): the batch's
mean and variance from the parts' sums, their own squared deviations and ``sums^2 / n`` (Chan's
combination), equal to the two-pass statistics of the whole batch; between threads of one process
the two exchanges stay."""
import numpy as np
import pytest

from cifarnet.comm import Communicator
from cifarnet.functional.batchnorm import train_statistics
from cifarnet.parallel import ThreadGroup
from cifarnet.threads import run_side_by_side


class SilentProcesses(Communicator):
    """Rank 0 of two processes whose peer contributes nothing: counts the sums that would cross."""

    rank, size, crosses_processes = 0, 2, True

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
        centred, invstd, m = train_statistics(x, r, gamma, group.member(k), 1e-5, 0.1, *running[k], np.empty_like(r))
        return centred.reshape(x.shape), invstd, m

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


def test_between_threads_of_one_process_batch_norm_keeps_its_two_exchanges():
    """Without processes around the threads the statistics are the two-pass ones, bit for bit."""
    parts = _parts(np.float32)
    calls = []
    group = ThreadGroup(3)
    original = group._sum
    group._sum = lambda rank, values: calls.append(rank) or original(rank, values)
    c = parts[0].shape[-1]

    def one(k):
        x = parts[k]
        r = x.reshape(-1, x.shape[2] * c)
        return train_statistics(x, r, np.ones(c, np.float32), group.member(k), 1e-5, 0.1, np.zeros(c, np.float32),
                                np.ones(c, np.float32), np.empty_like(r))

    run_side_by_side([lambda k=k: one(k) for k in range(3)])
    assert len(calls) == 2 * 3                     # the sums, then the squared deviations, in each part


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
