"""TensorBoard event files in the run directory (``logger=tensorboard``; needs tensorboardX).

``tensorboard --logdir outputs`` then shows every run and sweep job under ``outputs/``: each
epoch's training and evaluation loss and accuracy (``train/loss``, ``test/acc``, ...), the epoch
time, the learning rate at every step (``lr``), and the composed config as text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import TRACKERS, Tracker, TrackerError, numbers


def _writer_class():
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise TrackerError("logger=tensorboard needs tensorboardX, which is not installed: "
                           "pip install 'cifarnet[tensorboard]'") from None
    return SummaryWriter


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Args: ``subdir``: the folder of the run directory that gets the event files."""

    def __init__(self, subdir: str = "tensorboard"):
        self.subdir = subdir
        self.writer = None

    def check(self) -> None:
        _writer_class()

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        import yaml

        self.writer = _writer_class()(logdir=str(Path(run_dir) / self.subdir), flush_secs=10)
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)

    def log_step(self, step: int, lr: float) -> None:
        self.writer.add_scalar("lr", lr, step)

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        for key, value in numbers(metrics).items():
            if key in ("epoch", "step"):
                continue
            split, _, name = key.partition("_")
            tag = f"{split}/{name}" if split in ("train", "val", "test") else key
            self.writer.add_scalar(tag, value, epoch)

    def finish(self, artifacts: list[Path], failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
