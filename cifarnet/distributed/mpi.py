"""The MPI communicator (:mod:`cifarnet.comm`'s interface over mpi4py)."""
from __future__ import annotations

from typing import Any

from ..comm import Communicator, packed_sum


def mpi():
    """mpi4py's ``MPI`` module, or a one-line error naming the extra that installs it."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("training over several processes needs mpi4py and an MPI library: "
                          "pip install 'cifarnet[mpi]' (mpi4py and the mpich wheel)") from None
    return MPI


class MPIRequest:
    """An mpi4py request as :class:`cifarnet.comm.Request`."""

    def __init__(self, request: Any):
        self.request = request

    def wait(self) -> None:
        self.request.Wait()


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (``COMM_WORLD`` by default) as one data-parallel group.

    ``sum`` packs its values (arrays and numbers) into one float64 buffer and allreduces it once, then
    hands each back in its own dtype and shape (two float32 summands added in float64 and rounded
    back give float32's own sum; more than two may round differently from a sum in rank order).
    ``allreduce`` reduces a buffer in place in its own dtype. Every process owns its model, so each
    is a ``leader`` (updates its running statistics).

    Attributes: ``rank``, ``size``; ``local_size``: ranks on this machine (they share its cores).
    """

    leader = True

    def __init__(self, comm: Any = None):
        MPI = mpi()
        self.MPI, self.comm = MPI, comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = local.Get_size()
        local.Free()

    def sum(self, *values) -> tuple:
        return packed_sum(values, self.allreduce)

    def allreduce(self, buffer) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer)

    def iallreduce(self, buffer) -> MPIRequest:
        """``Iallreduce`` in place. MPICH progresses it while the rank computes only with its
        progress thread (``MPIR_CVAR_ASYNC_PROGRESS=1``); without it, the reduction advances in
        the MPI calls the rank makes (batch norm's sums, the next ``Iallreduce``, ``wait``)."""
        return MPIRequest(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM))

    def broadcast(self, buffer, root: int = 0) -> None:
        self.comm.Bcast(buffer, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    # -- Python objects, at start-up only --------------------------------------------------------
    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        return self.comm.allgather(value)

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        return self.comm.bcast(value, root=root)

    def abort(self, status: int = 1) -> None:
        """End every rank now (no collective can hang on a rank that has gone)."""
        self.comm.Abort(status)
