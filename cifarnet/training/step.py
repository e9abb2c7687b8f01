"""One optimisation step and accuracy, on whichever backend the model and batch live."""
from __future__ import annotations

from ..losses import SoftmaxCrossEntropy
from ..optim import Optimizer
from .data_parallel import DataParallel


def train_step(model, loss_fn: SoftmaxCrossEntropy, optimizer: Optimizer, x, y, workers: int | None = None) -> tuple:
    """Forward, loss, backward and update on one batch.

    Args:
        x: ``(N, H, W, C)`` images on the model's backend;  y: ``(N,)`` integer labels.
        workers: threads the batch is split between (:class:`DataParallel`); None: one per core.
    Returns:
        ``(loss, logits)``: the 0-d loss array and the ``(N, K)`` logits, both before the update.
    """
    model.train()
    model.set_input_grad(False)            # the images need no gradient
    net = DataParallel(model, workers)
    logits = net.forward(x)
    loss = loss_fn.forward(logits, y)
    net.backward(loss_fn.backward())
    optimizer.step(model)
    return loss, logits


def accuracy(logits, y) -> float:
    """Fraction of rows of ``logits`` ``(N, K)`` whose arg-max equals ``y`` ``(N,)``."""
    return float((logits.argmax(axis=1) == y).mean())
