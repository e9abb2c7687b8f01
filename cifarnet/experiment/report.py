"""What a run leaves in text: JSON files written whole, and the evaluation report for the console."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import replace_atomically
from .components import enum_value


def format_eval_report(report: dict[str, Any]) -> str:
    """Overall accuracy, per-class accuracy and the confusion matrix as text."""
    names = report["class_names"]
    width = max(8, *(len(n) for n in names))
    at = f"epoch {report['epoch']}"
    if report.get("batch"):                    # an interrupt checkpoint, written inside an epoch
        at = f"{report['epoch']} epochs and {report['batch']} batches of epoch {report['epoch'] + 1}"
    lines = [f"checkpoint {report['checkpoint']} ({at}, trained on "
             f"{report['trained_on_backend']}, evaluated on {report['backend']})",
             f"test accuracy {report['accuracy']:.2%} on {report['images']:,} images, loss {report['loss']:.4f} "
             f"({tta_words(report.get('tta', 0))})",
             "", "per-class accuracy:"]
    lines += [f"  {n:<{width}} {acc:7.2%}" for n, acc in report["per_class_accuracy"].items()]
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              " " * (width + 2) + " ".join(f"{n[:6]:>6}" for n in names)]
    for n, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"  {n:<{width}}" + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def tta_words(level: int) -> str:
    """How an evaluation's test-time augmentation reads in a summary."""
    return ("no test-time augmentation", "test-time augmentation: the image and its mirror",
            "test-time augmentation: 6 views, mirrored and translated by one pixel")[level]


def write_json(path: Path, obj: Any) -> None:
    with replace_atomically(path) as f:
        json.dump(obj, f, indent=2, default=enum_value)
