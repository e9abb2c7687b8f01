"""Hydra callbacks: checks before Hydra writes into a run or sweep directory, and the sweep's end.

Hydra creates the run directory and writes ``.hydra/`` into it before the job starts, so a job
cannot protect an earlier run's record by itself; ``on_run_start`` and ``on_multirun_start`` run
before that, on the config Hydra then uses: they may point the run at the directory a
``resume=`` continues, and an evaluation's record away from a training run's (the rules are
:mod:`cifarnet.run_dir`'s). Hydra turns exceptions raised in callbacks into warnings, so a
refusal ends the process here (one line, exit 1) instead of raising.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import open_dict, read_write

from .. import run_dir
from .errors import report_and_exit


def _mode(config) -> str:
    mode = config.get("mode", "train")
    return str(getattr(mode, "value", mode))


class RunGuard(Callback):
    """Refuses to write over an earlier run (see :mod:`cifarnet.run_dir`); reports a finished sweep."""

    def on_run_start(self, config, **kwargs: Any) -> None:
        mode, resume = _mode(config), config.get("resume")
        chosen = any(o.split("=", 1)[0].lstrip("+~") == "hydra.run.dir" for o in config.hydra.overrides.hydra)
        continued = run_dir.of_checkpoint(resume) if mode == "train" and resume and not chosen else None
        try:
            target = continued or Path(str(config.hydra.run.dir))
            run_dir.check(target, mode, bool(config.get("overwrite")), resume)
            record = run_dir.own_record(target, mode, resume)
        except (run_dir.RunDirectoryError, OSError) as err:
            report_and_exit(err)
        with read_write(config.hydra), open_dict(config.hydra):
            if continued is not None:                    # resume=<run> continues in that run's directory
                config.hydra.run.dir = str(continued)
            if record is not None:                       # keep the other run's .hydra/ and log as they are
                config.hydra.output_subdir = record[0]
                handlers = config.hydra.job_logging.get("handlers") or {}
                if "file" in handlers:
                    handlers.file.filename = str(Path(target).resolve() / record[1])

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        try:
            run_dir.check_sweep(config.hydra.sweep.dir, bool(config.get("overwrite")))
        except run_dir.RunDirectoryError as err:
            report_and_exit(err)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        """The final summary, printed by the launching process (launchers such as submitit run the
        jobs elsewhere, so their logs never reach this console; the logging setup here may be the
        last job's, so this is printed, not logged)."""
        sweep = Path(str(config.hydra.sweep.dir))
        summary = sweep / "sweep_summary.md"
        if not summary.is_file():
            return
        print(f"sweep finished; summary {summary}:\n{summary.read_text().rstrip()}", flush=True)
        with open(sweep / "sweep_summary.csv", newline="") as f:
            statuses = [row["status"] for row in csv.DictReader(f)]
        failed = statuses.count("failed")
        if not failed:
            return
        search = "optuna" in str(config.hydra.sweeper.get("_target_", ""))
        what = "trials" if search else "jobs"
        print(f"cifarnet: {failed} of {len(statuses)} {what} failed (their rows above give the cause)",
              file=sys.stderr, flush=True)
        if not search or failed == len(statuses):       # a search with some good trials has done its job
            sys.exit(1)
