"""Communicators: what crosses the members of a data-parallel group, passed in by the caller.

A group's members each run the same model on their share of a global batch: the parts of one
batch split between threads (:class:`cifarnet.parallel.ThreadGroup`), or processes on one or
several machines. What they exchange goes through a communicator, never through shared state:

- ``sum(*values)``: each value (an array or a number) summed over the members, in rank order;
  batch norm's per-channel sums in forward and backward (its ``reducer`` argument);
- ``allreduce(buffer)``: a flat buffer (the gradients of a flat store) replaced, in place, by its
  sum over the members, in rank order;
- ``iallreduce(buffer) -> request``: the same, started and left to run while the caller goes on
  (a part of the gradient buffer whose gradients are final, while the backward pass computes the
  rest, :mod:`cifarnet.training.overlap`); ``request.wait()`` returns once the sum is in
  ``buffer``. Every member starts the same reductions in the same order;
- ``broadcast(buffer, root=0)``: every member's buffer replaced by the root's (initial weights,
  generator states);
- ``barrier()``: return once every member has called it (rank 0's files are written before the
  others go on, or exit);
- ``rank``, ``size``; ``leader``: whether this member updates the running statistics of the
  model it runs (threads that share one model: only rank 0; a process owns its model);
  ``batch_parts``: how many parts the batch that ``sum`` adds over is split into (``size``; a thread
  group's member counts the processes around its threads too); ``statistics_exchanges``: how many
  ``sum`` calls batch norm's training statistics make when the batch is split (``batch_parts``
  above 1): 1 (every group here; the parts' rows centred on their own means,
  :func:`cifarnet.functional.batchnorm.train_statistics`) or 2 (the sums, then the squared
  deviations from the batch's mean: how it was done before, kept for comparisons in
  :mod:`cifarnet.bench.overlap`).

:data:`LOCAL` is the group of one: nothing crosses.
"""
from __future__ import annotations


class Communicator:
    """The interface (see the module docstring); the group of one by default."""

    rank = 0
    size = 1
    leader = True
    statistics_exchanges = 1

    @property
    def batch_parts(self) -> int:
        return self.size

    def sum(self, *values) -> tuple:
        return values

    def allreduce(self, buffer) -> None:
        """``buffer`` summed over the members, in place."""

    def iallreduce(self, buffer) -> Request:
        """``allreduce(buffer)`` started; by default done at once (a group without a network)."""
        self.allreduce(buffer)
        return DONE

    def broadcast(self, buffer, root: int = 0) -> None:
        """``buffer`` replaced by the root member's, in place."""

    def barrier(self) -> None:
        """Wait until every member has called it."""


class Request:
    """A reduction under way; ``wait()`` returns once it is complete. This one already is."""

    def wait(self) -> None:
        return None


DONE = Request()
LOCAL = Communicator()


def packed_sum(values: tuple, allreduce) -> tuple:
    """``values`` (arrays and numbers) summed by one ``allreduce`` of a float64 buffer holding them
    all, each handed back in its own dtype and shape (two float32 summands added in float64 and
    rounded back give float32's own sum; more than two may round differently from a sum in rank
    order)."""
    import numpy as np

    arrays = [np.asarray(v) for v in values]
    packed = np.concatenate([a.astype(np.float64).ravel() for a in arrays])
    allreduce(packed)
    out, start = [], 0
    for value, a in zip(values, arrays, strict=True):
        part = packed[start:start + a.size].reshape(a.shape).astype(a.dtype)
        start += a.size
        out.append(part if isinstance(value, np.ndarray) else part.item())
    return tuple(out)


def rank_zeros(comm: Communicator, decision: bool) -> bool:
    """Rank 0's ``decision``, on every member (a time limit read off clocks that may disagree)."""
    if comm.size == 1:
        return decision
    import numpy as np

    (total,) = comm.sum(np.asarray([float(decision and comm.rank == 0)]))
    return bool(total[0] > 0)
