"""Whether this process is a rank of an MPI job, from the variables the launchers set (reading
them does not start MPI; importing mpi4py would)."""
from __future__ import annotations

import os

_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS_TOTAL")
_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def _first(names: tuple[str, ...]) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


def world_size() -> int:
    """The number of ranks ``mpiexec`` started (1 outside MPI)."""
    return _first(_SIZE) or 1


def world_rank() -> int:
    """This process's rank (0 outside MPI)."""
    return _first(_RANK) or 0


def in_mpi_job() -> bool:
    """Whether this process is one of several ranks."""
    return world_size() > 1
