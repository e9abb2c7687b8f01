"""Hydra callbacks: checks before Hydra writes into a run or sweep directory, and the sweep's end.

Hydra creates the run directory and writes ``.hydra/`` into it before the job starts, so a job
cannot protect an earlier run's record by itself; ``on_run_start`` and ``on_multirun_start`` run
before that. Hydra turns exceptions raised in callbacks into warnings, so a refusal ends the
process here (one line, exit 1) instead of raising.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from .. import run_dir
from .errors import report_and_exit


def _mode(config) -> str:
    mode = config.get("mode", "train")
    return str(getattr(mode, "value", mode))


class RunGuard(Callback):
    """Refuses to write over an earlier run (see :mod:`cifarnet.run_dir`); reports a finished sweep."""

    def on_run_start(self, config, **kwargs: Any) -> None:
        try:
            run_dir.check(config.hydra.run.dir, _mode(config), bool(config.get("overwrite")), config.get("resume"))
        except run_dir.RunDirectoryError as err:
            report_and_exit(err)

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        try:
            run_dir.check_sweep(config.hydra.sweep.dir, bool(config.get("overwrite")))
        except run_dir.RunDirectoryError as err:
            report_and_exit(err)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        """The final summary, printed by the launching process (launchers such as submitit run the
        jobs elsewhere, so their logs never reach this console; the logging setup here may be the
        last job's, so this is printed, not logged)."""
        summary = Path(str(config.hydra.sweep.dir)) / "sweep_summary.md"
        if summary.is_file():
            print(f"sweep finished; summary {summary}:\n{summary.read_text().rstrip()}", flush=True)
