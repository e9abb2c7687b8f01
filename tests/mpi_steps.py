"""Three training steps of a model, the way :class:`cifarnet.training.trainer.Trainer` takes them:
as one process with threads, or (run under ``mpiexec``, or started on a shared-memory world:
:mod:`cifarnet.distributed.shm`) as one rank of several.

``python tests/mpi_steps.py MODEL OUT.npz [WORKERS [BATCH [COUNT [DTYPE]]]]`` under ``mpiexec -n 2``: rank 0 writes
the step losses and the final weights to ``OUT.npz``. :func:`steps` is the same in-process.
"""
from __future__ import annotations

import sys

import numpy as np

from cifarnet.comm import LOCAL
from cifarnet.data import Normalization
from cifarnet.data.synthetic import load_synthetic
from cifarnet.experiment.components import make_loaders
from cifarnet.losses import SoftmaxCrossEntropy
from cifarnet.models import build_model, model_description
from cifarnet.optim import SGD
from cifarnet.parallel import ThreadGroup
from cifarnet.training.step import forward_backward, read_back

AUGMENT = {"enabled": True, "crop_padding": 4, "pad_mode": "reflect", "flip": True}


def steps(model_name: str, comm=LOCAL, workers: int = 1, batch: int = 32, count: int = 3,
          dtype: str = "float32") -> tuple[list[float], dict[str, np.ndarray]]:
    """``count`` steps from seed 0 (each process: ``workers`` threads); returns the global batch's loss
    per step and the final weights."""
    dataset = load_synthetic(train_size=batch * count, test_size=64)
    norm = Normalization.from_images(dataset.train.images)
    data = {"augment": AUGMENT, "batch_size": batch, "eval_batch_size": 64, "prefetch": 0}
    dtype = np.dtype(dtype)
    train, _ = make_loaders(data, dataset, norm, _numpy(), seed=0, dtype=dtype, shard=(comm.rank, comm.size))
    model = build_model(model_description(model_name, num_classes=10), dataset.image_shape, seed=0, dtype=dtype)
    optimizer, loss_fn = SGD(lr=0.05, momentum=0.9), SoftmaxCrossEntropy()
    group = ThreadGroup(workers, comm) if workers > 1 or comm.size > 1 else None
    losses = []
    for x, y in train.epoch(0):
        result = forward_backward(model, loss_fn, x, y, workers, group=group, comm=comm, total=batch)
        losses.append(read_back(result, y, model.store.grads, comm).loss)
        optimizer.step(model, result.grads)
    return losses, model.state_dict()


def _numpy():
    from cifarnet.backend import NUMPY

    return NUMPY


if __name__ == "__main__":
    from cifarnet.blas import limited_blas_threads
    from cifarnet.distributed.shm import SharedMemoryCommunicator, in_shared_world

    if in_shared_world():
        comm = SharedMemoryCommunicator.from_environment()
    else:
        from cifarnet.distributed.mpi import MPICommunicator

        comm = MPICommunicator()
    with limited_blas_threads(1):
        numbers, dtype = sys.argv[3:6], sys.argv[6:7]
        losses, weights = steps(sys.argv[1], comm, *(int(a) for a in numbers), *dtype)
    if comm.rank == 0:
        np.savez(sys.argv[2], losses=np.asarray(losses), **weights)
