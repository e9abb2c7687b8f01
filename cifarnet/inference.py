"""Batched inference on every core: the batch split between threads, each with one BLAS thread.

In eval mode every image is computed independently (batch norm uses its running statistics), so
a batch can be cut into parts that run side by side (:func:`cifarnet.parallel.over_images`):
batch norm's folded arithmetic, ReLU, padding and im2col copies, which NumPy runs on one core,
then use them all, and the products lose nothing. Measured on a 2-core machine: ResNet-32 at
batch 500, 378 against 313 images per second. OpenBLAS's thread count is process-wide: BLAS
calls from other threads during a split batch also run on one thread.
"""
from __future__ import annotations

from .backend import array_module
from .parallel import WORKERS, over_images

MIN_IMAGES_PER_WORKER = 16


def infer(model, x, workers: int | None = None):
    """``model.infer(x)`` (eval-mode output, no backward after it), the batch split across cores.

    Args:
        model: a layer or model in eval mode.
        x: ``(N, ...)`` batch.
        workers: parts to split the batch into; default one per core. Only NumPy batches of at
            least ``MIN_IMAGES_PER_WORKER`` images per part are split, and only where OpenBLAS's
            thread count can be set (:mod:`cifarnet.blas`); otherwise this is ``model.infer(x)``.
    Returns:
        The model's output for the whole batch, ``(N, ...)``.
    """
    xp = array_module(x)
    n = x.shape[0]
    workers = min(WORKERS if workers is None else workers, n // MIN_IMAGES_PER_WORKER)
    if workers < 2:
        return model.infer(x)
    outputs = over_images(lambda a, b: model.infer(x[a:b]), n, -(-n // workers), xp, workers)
    return outputs[0] if len(outputs) == 1 else xp.concatenate(outputs)
