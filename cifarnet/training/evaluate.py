"""Evaluation: loss, accuracy, per-class accuracy and confusion matrix over a loader."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..backend import to_numpy
from ..inference import InferencePlan, infer
from ..losses import SoftmaxCrossEntropy


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


def evaluate(model, loader, num_classes: int, progress: bool = False) -> EvalResult:
    """Run ``model`` in eval mode over every batch of ``loader`` (epoch 0).

    With ``progress``, a tqdm bar counts the images on an interactive terminal (nowhere else).

    Uses no random numbers, so evaluating never disturbs training's generators; runs the model's
    fused inference plan (:mod:`cifarnet.inference`), built once for the pass.
    """
    plan = InferencePlan(model)
    loss_fn = SoftmaxCrossEntropy()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    total_loss, images = 0.0, 0
    with tqdm(total=len(loader.split), desc="evaluating", unit="img", leave=False,
              disable=not (progress and sys.stderr.isatty())) as bar:
        for x, y in loader.epoch(0):
            logits = infer(plan, x)
            n = len(y)
            total_loss += float(loss_fn(logits, y)) * n
            pred = to_numpy(logits.argmax(axis=1))
            np.add.at(confusion, (to_numpy(y), pred), 1)
            images += n
            bar.update(n)
    accuracy = float(np.trace(confusion) / max(images, 1))
    return EvalResult(total_loss / max(images, 1), accuracy, confusion, images)
