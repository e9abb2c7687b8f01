"""The epoch rows of ``metrics.csv`` and the note on young batch-norm statistics."""
from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..files import replace_atomically
from ..layers import BatchNorm, Dropout

METRIC_FIELDS = ["epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                 "lr", "dropout", "epoch_seconds", "images_per_second", "skipped_batches"]


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.csv``: one row per epoch of ``history``, written whole (readers never see half a file)."""
    with replace_atomically(Path(run_dir) / "metrics.csv") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(history)


def dropout_rate(model) -> float | str:
    """The rate of the model's first dropout layer ("" without one), for the metrics file."""
    return next((layer.rate for _, layer in model.walk() if isinstance(layer, Dropout)), "")


def statistics_note(model, steps: int) -> str:
    """A warning for the epoch line while batch norm's running statistics are still mostly their
    initial values (zero mean, unit variance): evaluation uses them, so its loss and accuracy
    mean little until then. PyTorch's batch norm starts and updates the same way."""
    momenta = [layer.momentum for _, layer in model.walk() if isinstance(layer, BatchNorm)]
    if not momenta or min(momenta) <= 0:
        return ""
    needed = math.ceil(math.log(0.05) / math.log(1.0 - min(momenta))) if min(momenta) < 1 else 1
    if steps >= needed:
        return ""
    return (f"  (note: batch-norm running statistics have seen only {steps} steps; "
            f"evaluation figures are unreliable until about {needed})")


def epoch_row(state, sums: dict[str, float], lr: float, model) -> dict[str, Any]:
    """The training half of epoch ``state.epoch + 1``'s row of ``metrics.csv`` (evaluation adds the rest)."""
    row: dict[str, Any] = dict.fromkeys(METRIC_FIELDS, "")
    row.update(epoch=state.epoch + 1, step=state.step, train_loss=sums["loss"] / sums["images"],
               train_acc=sums["correct"] / sums["images"], lr=lr, dropout=dropout_rate(model),
               epoch_seconds=round(sums["seconds"], 3), skipped_batches=state.skipped,
               images_per_second=round(sums["images"] / max(sums["seconds"], 1e-9), 1))
    return row


def epoch_line(row: dict[str, Any], epochs: float, splits: list[str], improved: bool) -> str:
    """The log line of an epoch's row."""
    evals = "  ".join(f"{s} loss {row[f'{s}_loss']:.4f} acc {row[f'{s}_acc']:.2%}" for s in splits)
    return (f"epoch {row['epoch']}/{epochs:g}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%  "
            f"{evals}  lr {row['lr']:.4g}  {row['epoch_seconds']:.1f} s  {row['images_per_second']:.0f} img/s"
            + ("  (best)" if improved else ""))


TERMINAL_VARIABLE = "CIFARNET_TERMINAL"


def on_terminal() -> bool:
    """Whether progress bars should be drawn: stderr is a terminal, or this is rank 0 of processes
    whose launcher's stderr is one (it sets ``CIFARNET_TERMINAL=1``; mpiexec passes the bars through)."""
    return sys.stderr.isatty() or os.environ.get(TERMINAL_VARIABLE) == "1"


class EpochBar:
    """The epoch's progress bar (tqdm), on an interactive terminal only."""

    def __init__(self, total: int, done: int, title: str, enabled: bool):
        self.bar = tqdm(total=total, initial=done, desc=title, unit="batch", leave=False,
                        disable=not (enabled and on_terminal()))

    def advance(self, sums: dict[str, float], lr: float, seconds: float) -> None:
        if self.bar.disable:
            return
        seen = max(sums["images"], 1)
        self.bar.set_postfix_str(f"loss {sums['loss'] / seen:.3f} acc {sums['correct'] / seen:.1%} lr {lr:.3g} "
                                 f"{sums['images'] / max(seconds, 1e-9):,.0f} img/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def accumulate(sums: dict[str, float], loss: float, correct: float, images: int) -> None:
    """Add a step's mean ``loss``, number ``correct`` and ``images`` to the epoch's running ``sums``."""
    sums["loss"] += loss * images
    sums["correct"] += correct
    sums["images"] += images
