"""Evaluation: loss, accuracy, per-class accuracy and confusion matrix over a loader."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..backend import array_module, to_numpy
from ..comm import LOCAL, Communicator
from ..inference import InferencePlan, infer
from ..inference.tta import tta_logits
from ..losses import SoftmaxCrossEntropy
from .metrics import on_terminal


@dataclass
class EvalResult:
    """Attributes: ``loss`` (mean over images), ``accuracy``, ``confusion`` ``(K, K)`` with rows
    the true class and columns the predicted class, ``images`` evaluated."""

    loss: float
    accuracy: float
    confusion: np.ndarray
    images: int

    def per_class_accuracy(self) -> np.ndarray:
        totals = self.confusion.sum(axis=1)
        return np.divide(np.diag(self.confusion), totals, out=np.zeros(len(totals)), where=totals > 0)

    def to_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.confusion))]
        return {"loss": self.loss, "accuracy": self.accuracy, "images": self.images,
                "per_class_accuracy": dict(zip(names, map(float, self.per_class_accuracy()), strict=True)),
                "class_names": names, "confusion_matrix": self.confusion.tolist()}


def evaluate(model, loader, num_classes: int, progress: bool = False, workers: int | None = None,
             comm: Communicator = LOCAL, tta: int = 0) -> EvalResult:
    """Run ``model`` in eval mode over every batch of ``loader`` (epoch 0), each batch split
    between ``workers`` threads (:func:`cifarnet.inference.infer`; None: one per core).

    With ``progress``, a tqdm bar counts the images on an interactive terminal (nowhere else).
    The loss and the confusion matrix are summed where the arrays live and read back once, at the
    end (no host sync per batch on a GPU).

    Uses no random numbers, so evaluating never disturbs training's generators; runs the model's
    fused inference plan (:mod:`cifarnet.inference`), built once for the pass.

    With ``comm`` a group of processes, each evaluates every ``size``-th batch (from its ``rank``)
    and the sums are added across them once, at the end: every process gets the whole result.

    ``tta``: the test-time augmentation level (:mod:`cifarnet.inference.tta`; 0: none), the logits
    (loss and predictions) those of the weighted views.
    """
    plan = InferencePlan(model)
    loss_fn = SoftmaxCrossEntropy()
    counts = total_loss = None
    with tqdm(total=len(loader.split), desc="evaluating", unit="img", leave=False,
              disable=not (progress and on_terminal())) as bar:
        batches = loader.epoch(0) if comm.size == 1 else \
            (loader.batch(0, i) for i in range(comm.rank, len(loader), comm.size))
        for x, y in batches:
            logits = tta_logits(lambda view: infer(plan, view, workers), x, tta)
            xp, n = array_module(logits), len(y)
            loss = loss_fn(logits, y).astype(np.float64) * n
            cells = xp.bincount(y * num_classes + logits.argmax(axis=1), minlength=num_classes * num_classes)
            counts, total_loss = (cells, loss) if counts is None else (counts + cells, total_loss + loss)
            bar.update(n)
    if counts is None:
        packed = np.zeros(num_classes * num_classes + 1)
    else:
        xp = array_module(counts)
        packed = to_numpy(xp.concatenate([counts.astype(np.float64), total_loss.reshape(1)]))     # one read-back
    if comm.size > 1:
        packed, = comm.sum(packed)
    images = int(packed[:-1].sum())
    if images == 0:
        return EvalResult(0.0, 0.0, np.zeros((num_classes, num_classes), dtype=np.int64), 0)
    confusion = packed[:-1].astype(np.int64).reshape(num_classes, num_classes)
    accuracy = float(np.trace(confusion) / images)
    return EvalResult(float(packed[-1]) / images, accuracy, confusion, images)
