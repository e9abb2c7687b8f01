"""The tracker interface and registry (:mod:`cifarnet.tracking`), and the ``csv`` tracker."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CifarnetError
from ..registry import Registry
from ..training.hooks import Hook

TRACKERS = Registry("logger")


class TrackerError(CifarnetError, RuntimeError):
    """A tracker that cannot work here (its package is not installed, its server does not answer);
    the message says which and what to do."""


class Tracker(Hook):
    """A hook (:class:`cifarnet.training.hooks.Hook`: every step, epoch and checkpoint) that also
    starts and finishes with the run; every method may be left as it is (nothing happens)."""

    def check(self) -> None:
        """Before any work: raise :class:`TrackerError` if the tracker cannot work here."""

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        """The run begins (or resumes) in ``run_dir`` with ``config`` (the composed config)."""

    def finish(self, artifacts: list[Path], failed: bool = False) -> None:
        """The run ended; ``artifacts`` are files worth keeping (best checkpoint, figures)."""


@TRACKERS.register("csv")
class CSVTracker(Tracker):
    """``metrics.csv`` in the run directory, one row per epoch (the trainer always writes it), and
    ``lr.csv``: the learning rate of every optimizer step, as the trainer set it (a resumed run
    continues the file from its step; the figure ``lr_schedule.png`` is drawn from it)."""

    NAME = "lr.csv"

    def __init__(self):
        self.path, self.file, self.kept = None, None, []

    def start(self, run_dir: Path, config: dict[str, Any], resumed: bool = False) -> None:
        self.path = Path(run_dir) / self.NAME
        self.kept = self.path.read_text().splitlines()[1:] if resumed and self.path.is_file() else []

    def log_step(self, step: int, lr: float) -> None:
        if self.file is None:                       # the first step: keep the earlier steps only
            earlier = [row for row in self.kept if int(row.split(",", 1)[0]) < step]
            self.file = open(self.path, "w")
            self.file.write("\n".join(["step,lr", *earlier]) + "\n")
        self.file.write(f"{step},{lr!r}\n")

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.flush()

    def finish(self, artifacts: list[Path], failed: bool = False) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def make_trackers(logger_cfg: dict[str, dict[str, Any]] | None) -> list[Tracker]:
    """The trackers the ``logger`` group selects, ``{name: options}`` -> instances, each checked
    (:meth:`Tracker.check`). ``logger=[]`` (an empty list) and None select none."""
    trackers = [TRACKERS.get(name)(**(options or {})) for name, options in dict(logger_cfg or {}).items()]
    for tracker in trackers:
        tracker.check()
    return trackers


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row (empty cells and text left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
