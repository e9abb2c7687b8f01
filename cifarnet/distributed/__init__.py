"""Data-parallel training across processes: on one machine over shared memory, across machines on
MPI (mpi4py, the ``[mpi]`` extra).

One run, several processes (ranks), each holding the whole model and taking its share of every
global batch. What crosses between them goes through a :class:`SharedMemoryCommunicator` or an
:class:`MPICommunicator`, the
:mod:`cifarnet.comm` interface the thread split already uses: batch norm's per-channel sums in
forward and backward (``sum``, so N processes compute what one computes on the global batch), the
flat gradient buffer once per step (``allreduce``), and one small vector per step (loss, number
correct, gradients finite, a stop asked for by a signal), so that every rank agrees on every step.

- :mod:`.launch`: ``trainer.processes=N`` starts N ranks (``trainer.transport``: itself, on a
  shared-memory world, :mod:`.shm` and :mod:`.local`; or through ``mpiexec``) and waits for them,
  passing signals on;
- :mod:`.rank`: what each rank runs (from the launcher's spec file, or, under a user's own
  ``mpiexec ... python -m cifarnet ...``, from rank 0's composed config);
- :mod:`.agreement`: ranks refuse to start when their code or command line differ;
- :mod:`.world`: whether this process is one rank of several, read from the environment MPI sets
  (without importing mpi4py).
"""
