"""``python -m cifarnet``: the Hydra entry point, a thin layer over :mod:`cifarnet.experiment`.

It composes the config, turns it into a plain dict, works out which keys the user set on the
command line, and trains, evaluates, predicts or exports (``mode=``). Expected failures end as one
line on stderr and exit 1; interruptions exit 130 (SIGINT) or 143 (SIGTERM). In a sweep, a job
that fails that way is recorded as failed (its ``result.json`` and its row in the summary give the
cause) and the sweep goes on; the sweep's exit status then says that jobs failed.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

from .. import __version__
from .. import checkpoint as ckpt
from ..distributed.launch import launch
from ..distributed.rank import finish, follow, lead, make_spec, release_followers
from ..distributed.world import in_mpi_job, world_rank, world_size
from ..experiment import ConfigError, evaluate_checkpoint, format_eval_report, merge_with_checkpoint, train
from ..files import replace_atomically
from ..run_dir import PENDING_RESUME, discard_if_empty
from ..run_dir import check as check_run_dir
from ..sweeps import write_summary
from ..threads import default_workers
from ..training.signals import TrainingInterrupted, resume_command
from . import schema
from .errors import Terminated, expected_message, raise_terminated, report_and_exit
from .resume_record import PendingRecord

log = logging.getLogger("cifarnet")


def config_dir() -> str:
    """The ``conf/`` directory: inside the installed package (wheel) or beside it (source tree)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"cifarnet's configs (conf/config.yaml) not found in {package} or its parent")


def explicit_keys(task_overrides) -> list[str]:
    """Config keys the user set on the command line (``hydra.*`` excluded)."""
    keys = []
    for override in task_overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key and not key.startswith("hydra"):
            keys.append(key)
    return keys


def parallel_jobs(launcher, cores: int) -> int:
    """Jobs a sweep's launcher runs at once on this machine: the joblib launcher's ``n_jobs``
    (negative as joblib reads it: -1 all cores, -2 all but one), 1 for any other launcher."""
    if "joblib" not in str((launcher or {}).get("_target_", "")).lower():
        return 1
    n = int(launcher.get("n_jobs") or 1)
    return max(1, cores + 1 + n if n < 0 else n)


def share_cores(plain: dict, jobs: int, cores: int) -> None:
    """Jobs that run side by side divide the cores: ``trainer.workers`` (unset) becomes
    ``cores // jobs`` (at least 1), each worker with one BLAS thread (:mod:`cifarnet.parallel`)."""
    trainer = plain.setdefault("trainer", {})
    if jobs > 1 and trainer.get("workers") is None:
        trainer["workers"] = max(1, cores // jobs)
        log.info("%d sweep jobs run at once on %d cores: this one trains on %d thread%s (trainer.workers)", jobs,
                 cores, trainer["workers"], "" if trainer["workers"] == 1 else "s")


class FailedJob:
    """What a sweep job that failed returns to Hydra instead of its accuracy. The basic sweeper
    reads no value and goes on; a search sweeper (Optuna) converts it with ``float()``, which
    raises, so it records the trial as failed and goes on (``max_failure_rate: 1.0`` in the
    ``search`` preset)."""

    def __init__(self, message: str):
        self.message = message

    def __float__(self) -> float:
        raise ValueError(self.message)

    def __repr__(self) -> str:
        return f"job failed: {self.message}"


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _Diagnostics(logging.Formatter):
    """Errors as they are (their message starts ``cifarnet: error:``), warnings as ``cifarnet: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno >= logging.ERROR else f"cifarnet: {message}"


def errors_to_stderr() -> None:
    """Send warnings and errors to stderr as bare lines (``cifarnet: error: ...``, ``cifarnet: SIGINT
    received: ...``), the rest to the console handler Hydra set up (stdout), and everything to the log
    file as before: with stdout redirected, the terminal still shows what went wrong. Idempotent per
    logging setup."""
    root = logging.getLogger()
    if any(getattr(h, "cifarnet_errors", False) for h in root.handlers):
        return
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
            handler.addFilter(_BelowWarning())
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.WARNING)
    errors.setFormatter(_Diagnostics())
    errors.cifarnet_errors = True
    root.addHandler(errors)


def _log_file() -> Path | None:
    return next((Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)),
                None)


def task(cfg) -> float | FailedJob:
    """One Hydra job: train, resume, evaluate, predict or export; returns the job's best accuracy (for
    sweepers), or a :class:`FailedJob` for a sweep job that failed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    errors_to_stderr()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    overrides = list(hc.overrides.task)
    explicit = explicit_keys(overrides)
    pending = PendingRecord(run_dir) if hc.output_subdir == PENDING_RESUME else None   # resume=<run>, in place
    try:
        if in_mpi_job() and (plain["mode"] != "train" or multirun):
            raise ConfigError("under mpiexec, only a single training run (mode=train, no -m) spreads over "
                              "the ranks; in a sweep, give each job trainer.processes=N instead")
        if plain["mode"] == "eval":
            if not plain["ckpt"]:
                raise ConfigError("mode=eval needs ckpt=PATH (a checkpoint .npz file or a run directory)")
            checkpoint = ckpt.resolve(plain["ckpt"], prefer="best")
            merged = merge_with_checkpoint(checkpoint.meta["config"], plain, explicit, source=str(checkpoint.path),
                                           purpose="eval")
            report = evaluate_checkpoint(merged, checkpoint, run_dir)
            log.info("%s\nwritten to %s", format_eval_report(report), run_dir / "eval.json")
            return float(report["accuracy"])
        if plain["mode"] == "predict":
            return _predict(plain, explicit, run_dir)
        if plain["mode"] == "export":
            return _export(plain, explicit, run_dir)

        if multirun:
            share_cores(plain, parallel_jobs(hc.launcher, default_workers()), default_workers())
        resume = None
        if plain["resume"]:
            resume = ckpt.resolve(plain["resume"], prefer="newest")
            if resume.optimizer_state is None or "trainer" not in resume.meta.get("config", {}):
                raise ConfigError(f"resume={plain['resume']}: {resume.path} holds weights only (no optimizer state "
                                  "or training config), so there is no run to continue; to fine-tune from its "
                                  f"weights, start a new run with init_from={plain['resume']}")
            plain = merge_with_checkpoint(resume.meta["config"], plain, explicit, source=str(resume.path))
        others = [o for o in overrides if not o.startswith("resume=")]

        log.info("run directory %s", run_dir)
        summary = _train(plain, run_dir, resume, lambda path: resume_command(run_dir, others), overrides, others,
                         multirun, pending)
        if pending is not None:                        # a resume with no step left to run
            pending.commit()
        log.info("best %s %.2f%% at epoch %d; checkpoints in %s", summary["metric"], 100 * summary["best_metric"],
                 summary["best_epoch"], run_dir / "checkpoints")
        if multirun:
            _summarise_sweep(run_dir.parent, run_dir.name)
            if plain.get("plots", True):
                _plot_sweep(run_dir.parent)
        return float(summary["best_metric"])
    except BaseException as err:  # noqa: BLE001 - expected errors become one line, others re-raise
        interrupted = isinstance(err, (KeyboardInterrupt, Terminated, TrainingInterrupted))
        message = None if interrupted or os.environ.get("CIFARNET_TRACEBACK") == "1" else expected_message(err)
        if pending is not None:     # resume=<run> in place: before training, its records stay as they were
            pending.discard()       # (a no-op once the record was committed); never discard_if_empty the run
            report_and_exit(err, emit=log.error)
        if multirun and message is not None:          # the sweep goes on; this job is recorded as failed
            log.error("cifarnet: error: %s", message)
            _record_failed_job(run_dir, overrides, message)
            return FailedJob(message)
        log_file = _log_file()                         # None when Hydra's file logging is switched off
        own = None if hc.output_subdir in (None, ".hydra") else \
            (hc.output_subdir, *([log_file.name] if log_file else []))
        if discard_if_empty(run_dir, own, plain["mode"]):
            where = f"its record in {run_dir}" if own else f"the run directory {run_dir}"
            log.info("removed %s: the run failed before writing anything", where)
        report_and_exit(err, emit=log.error)
        raise


def _train(plain: dict, run_dir: Path, resume, resume_command, overrides: list[str], others: list[str],
           multirun: bool, pending: PendingRecord | None = None) -> dict:
    """Train in this process, on ``trainer.processes`` ranks it starts (:mod:`cifarnet.distributed.launch`),
    or as rank 0 of a user's own ``mpiexec`` (the other ranks follow: :mod:`cifarnet.distributed.rank`).
    ``pending`` (a resume in place) commits its record at the first step, or as the ranks start."""
    processes = int(plain["trainer"].get("processes", 1))
    resume_path = None if resume is None else resume.path
    if (processes > 1 or in_mpi_job()) and plain["backend"]["name"] != "numpy":
        raise ConfigError("several processes train on backend=numpy only (their exchanges go through the host's "
                          "memory or MPI; a GPU path over NCCL is not built: docs/distributed.md)")
    if in_mpi_job():
        if processes not in (1, world_size()):
            raise ConfigError(f"trainer.processes={processes} under mpiexec with {world_size()} ranks: leave it at 1 "
                              "or set it to the number of ranks")
        spec = make_spec(plain, run_dir, resume_path, overrides, others)
        if pending is not None:
            pending.commit()
        finish(spec, lead(spec))
        return json.loads((run_dir / "result.json").read_text())
    if processes > 1:
        if pending is not None:
            pending.commit()
        return launch(make_spec(plain, run_dir, resume_path, overrides, others), processes)
    return train(plain, run_dir, resume, resume_command=resume_command, overrides=overrides,
                 hooks=[pending] if pending is not None else ())


def _check_model_matches(plain: dict, explicit: list[str], checkpoint: ckpt.Checkpoint) -> None:
    if "model" in explicit and checkpoint.meta["model"].get("name") != plain["model"]["name"]:
        raise ConfigError(f"checkpoint {plain['ckpt']} holds a different architecture (model "
                          f"{checkpoint.meta['model'].get('name')!r}) than requested (model={plain['model']['name']})")


def _predict(plain: dict, explicit: list[str], run_dir: Path) -> float:
    from ..experiment import make_backend, settle_kernels
    from ..models import restore_model
    from ..predict import find_images, format_rows, predict, write_csv

    if not plain["ckpt"] or not plain["images"]:
        raise ConfigError("mode=predict needs ckpt=PATH (a checkpoint or a run directory) and images=FILE|DIR|GLOB")
    checkpoint = ckpt.resolve(plain["ckpt"], prefer="best")
    _check_model_matches(plain, explicit, checkpoint)
    check_run_dir(run_dir, "predict", bool(plain.get("overwrite")))
    backend = make_backend(plain["backend"])
    paths = find_images(plain["images"])
    model = restore_model(checkpoint, backend)
    settle_kernels(plain["backend"], model)
    rows = predict(model, checkpoint, paths, backend, plain["topk"])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, run_dir / "predictions.csv")
    skipped = len(paths) - len(rows)
    log.info("top-%d classes for %d image%s%s (checkpoint %s):\n%s\nwritten to %s", len(rows[0]["top"]), len(rows),
             "" if len(rows) == 1 else "s", f" ({skipped} unreadable, skipped)" if skipped else "",
             plain["ckpt"], format_rows(rows), run_dir / "predictions.csv")
    return 0.0


def _export(plain: dict, explicit: list[str], run_dir: Path) -> float:
    from ..export import export_checkpoint

    if not plain["ckpt"]:
        raise ConfigError("mode=export needs ckpt=PATH (a checkpoint .npz file or a run directory)")
    checkpoint = ckpt.resolve(plain["ckpt"], prefer="best")
    _check_model_matches(plain, explicit, checkpoint)
    check_run_dir(run_dir, "export", bool(plain.get("overwrite")))
    path = export_checkpoint(checkpoint, run_dir / "model.onnx")
    meta = checkpoint.meta
    h, w, c = meta["input_shape"]
    log.info("exported %s (model %s, epoch %d) to %s: float32 input 'images' (batch, %d, %d, %d) NCHW, "
             "normalised with the mean/std in its metadata; output 'logits' (batch, %d)", checkpoint.path,
             meta["model"].get("name", "?"), meta["state"]["epoch"], path, c, h, w,
             len(meta.get("class_names") or []))
    return 0.0


def _record_failed_job(run_dir: Path, overrides: list[str], message: str) -> None:
    """A failed sweep job's ``result.json`` (status, cause, overrides), then the summary with its row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with replace_atomically(run_dir / "result.json") as f:
        json.dump({"status": "failed", "error": message, "overrides": overrides, "run_dir": str(run_dir)}, f, indent=2)
    _summarise_sweep(run_dir.parent, run_dir.name)


def _summarise_sweep(sweep_dir: Path, job: str) -> None:
    """Rebuild the sweep's summary files; the log gets one line for the job ``job`` that just ended
    (the whole table is printed once, when the sweep ends: :class:`cifarnet.cli.callbacks.RunGuard`)."""
    rows, _ = write_summary(sweep_dir)
    mine = next((r for r in rows if r["job"] == job), None)
    if mine is None:
        return
    done = "failed" if mine["status"] == "failed" else f"best {100 * float(mine['best_acc']):.2f}%"
    ok = [r for r in rows if r["status"] != "failed" and r["best_acc"] not in ("", None)]
    leader = max(ok, key=lambda r: float(r["best_acc"]), default=None)
    lead = "" if leader is None else f"; best so far job {leader['job']} ({100 * float(leader['best_acc']):.2f}%)"
    log.info("sweep: job %s %s (%s); %d job%s finished%s; summary %s", job, done, mine["overrides"] or "-",
             len(rows), "" if len(rows) == 1 else "s", lead, sweep_dir / "sweep_summary.md")


def _plot_sweep(sweep_dir: Path) -> None:
    """The sweep's comparison figure so far; skipped with a note when matplotlib is missing."""
    from ..plot import PlotError, plot_sweep

    try:
        log.info("sweep figure: %s", plot_sweep(sweep_dir).name)
    except PlotError as err:
        log.info("no sweep figure: %s", err)


def _hydra_version() -> str:
    import hydra

    return hydra.__version__


def main() -> None:
    """Console entry point (``cifarnet`` and ``python -m cifarnet``)."""
    if "--version" in sys.argv[1:]:
        print(f"cifarnet {__version__} (Hydra {_hydra_version()})")
        return
    import hydra

    if Path(sys.argv[0]).name == "__main__.py":
        # python -m cifarnet: Hydra names sys.argv[0] in its shell-completion commands, and the
        # package's __main__.py cannot run as a script; the console script can.
        sys.argv[0] = "cifarnet"
    os.environ["HYDRA_FULL_ERROR"] = "1"      # let composition errors reach report_and_exit
    if not sys.stderr.isatty():
        os.environ.setdefault("NO_COLOR", "1")  # no ANSI colours from plugins' loggers in logs and pipes
    signal.signal(signal.SIGTERM, raise_terminated)   # until training installs its own: unwind, clean up, 143
    if in_mpi_job() and world_rank() != 0 and not {"--help", "-h", "--version"} & set(sys.argv[1:]):
        follow()                                        # rank 0 composes the config; this rank trains with it
    schema.register()
    entry = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(task)
    try:
        entry()
    except SystemExit as done:
        _release_followers(failed=done.code not in (None, 0))
        raise
    except BrokenPipeError:                   # the reader went away (cifarnet --help | head -1)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except BaseException as err:  # noqa: BLE001
        _release_followers(failed=True)
        report_and_exit(err)
    else:
        _release_followers(failed=False)


def _release_followers(failed: bool) -> None:
    """Under a user's ``mpiexec``, rank 0 lets the other ranks go if it never handed them a run."""
    if in_mpi_job() and world_rank() == 0:
        release_followers(failed)
