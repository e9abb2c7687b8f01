"""Gradients reduced across processes while the backward pass runs: buckets of the flat buffer.

The training plan reports each parameter's gradient as final when its node's backward has run
(:meth:`cifarnet.training.plan.TrainingPlan.backward`, ``on_ready``), last layer first. The flat
store keeps the parameters in forward order (:mod:`cifarnet.store`), so the gradients become final
from the end of the buffer towards its start. :class:`GradientBuckets` cuts the buffer, at
parameter boundaries, into buckets of about ``bucket_bytes`` counted from the end; when every
gradient of a bucket is final it starts that bucket's reduction (``comm.iallreduce``) and the
backward pass goes on; :meth:`GradientBuckets.finish` waits for all of them before the update.
Only the last bucket (the first layers', whose gradients are final last) is reduced after the
backward pass; with a blocking ``allreduce`` the whole buffer is.

Buckets are started in the same order on every process (the plan is the same everywhere), as MPI's
non-blocking collectives require.
"""
from __future__ import annotations

from ..comm import Communicator, Request
from ..store import FlatStore

BUCKET_BYTES = 256 << 10        # small enough that the last bucket (the first layers) is a small part


class GradientBuckets:
    """The buckets of ``store``'s gradient buffer, reduced over ``comm`` as they become ready.

    Attributes:
        buckets: ``(start, stop)`` of each bucket in the flat buffer, in the order they are started
            (the end of the buffer first).
    """

    def __init__(self, store: FlatStore, comm: Communicator, bucket_bytes: int = BUCKET_BYTES):
        self.store, self.comm = store, comm
        itemsize = store.grads.dtype.itemsize
        self.buckets: list[tuple[int, int]] = []
        self._bucket_of: dict[str, int] = {}
        self._waiting: list[int] = []
        stop, count = None, 0
        for name, _ in reversed(store.layout):
            start, end = store.offsets[name]
            stop = end if stop is None else stop
            self._bucket_of[name] = len(self.buckets)
            count += 1
            if (stop - start) * itemsize >= bucket_bytes or start == 0:
                self.buckets.append((start, stop))
                self._waiting.append(count)             # gradients not yet final, per bucket
                stop, count = None, 0
        self._requests: list[Request] = []

    def ready(self, names: list[str]) -> None:
        """Mark ``names``' gradients final; start each bucket that is now complete."""
        for name in names:
            index = self._bucket_of[name]
            self._waiting[index] -= 1
            if self._waiting[index] == 0:
                self._start(index)

    def _start(self, index: int) -> None:
        start, stop = self.buckets[index]
        self._waiting[index] = 0
        self._requests.append(self.comm.iallreduce(self.store.grads[start:stop]))

    def finish(self) -> None:
        """Start any bucket not yet started (a parameter no node reported), then wait for all."""
        for index, waiting in enumerate(self._waiting):
            if waiting > 0:
                self._start(index)
        for request in self._requests:
            request.wait()
        self._requests.clear()
