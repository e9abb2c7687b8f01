"""What a run directory holds, and the rules that keep one run from overwriting another.

A run directory gets Hydra's record (``.hydra/``), the log (``cifarnet.log``) and the outputs of
its mode: training writes ``metrics.csv``, ``result.json``, ``best_eval.json``, ``checkpoints/``,
``tensorboard/`` and figures; evaluation ``eval.json``; prediction ``predictions.csv``; export
``model.onnx``. The rules:

- A directory that already holds the outputs of an earlier run of the same mode is refused,
  unless a training run continues it (``resume=`` a checkpoint inside it) or ``overwrite=true``
  says to replace it. Replacing a training run removes all of it (its record, log and event files
  too); replacing an evaluation, prediction or export removes that mode's output and record.
- Evaluation, prediction and export into a directory that already holds another run's record
  write their own record beside it, ``.hydra-<mode>/`` and ``cifarnet-<mode>.log``
  (:func:`own_record`), so the training run's ``.hydra/`` and log are never touched.
- ``resume=<run directory or a checkpoint in it>`` without ``hydra.run.dir`` continues in that
  directory (:func:`of_checkpoint`): its log goes on in ``cifarnet.log``, the continuation's Hydra
  record goes to ``.hydra-resume/`` (the run's first record stays in ``.hydra/``). Both only once
  the resumed training starts: until then the record waits in ``.hydra-resume.pending/`` and the
  log lines in memory, so a resume that fails leaves the run's records as they were
  (:mod:`cifarnet.cli.resume_record`).
- A run that fails before writing any output leaves nothing behind (:func:`discard_if_empty`).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .errors import CifarnetError

log = logging.getLogger(__name__)

FIGURES = ("loss.png", "accuracy.png", "lr_schedule.png", "per_class_accuracy.png", "confusion_matrix.png")
OUTPUTS = {
    "train": ("metrics.csv", "result.json", "best_eval.json", "checkpoints", *FIGURES),
    "eval": ("eval.json",),
    "predict": ("predictions.csv",),
    "export": ("model.onnx",),
}
RECORD = (".hydra", "cifarnet.log")          # what Hydra writes before a job starts
RESUME_RECORD = ".hydra-resume"              # a continued run's record, beside its first one
PENDING_RESUME = ".hydra-resume.pending"     # ... until the resumed training starts


class RunDirectoryError(CifarnetError, RuntimeError):
    """A run directory that would be overwritten; the message says how to proceed."""


def existing_outputs(run_dir: str | Path, mode: str = "train") -> list[str]:
    """Names of ``mode``'s outputs already in ``run_dir`` (an empty ``checkpoints/`` does not count)."""
    run_dir = Path(run_dir)
    found = []
    for name in OUTPUTS.get(mode, ()):
        path = run_dir / name
        if path.is_dir() and any(path.glob("*.npz")) or path.is_file():
            found.append(name + ("/" if path.is_dir() else ""))
    return found


def _inside(path: str | Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), folder.resolve()
    return path == folder or folder in path.parents


def own_record(run_dir: str | Path, mode: str, resume: str | Path | None = None) -> tuple[str, str] | None:
    """Where a job of ``mode`` about to start in ``run_dir`` keeps its Hydra record and log, as
    ``(record folder, log file name)``, when that is not Hydra's ``.hydra`` and ``cifarnet.log``:
    beside another run's record (evaluation, prediction or export into a training run's directory,
    or a training run continued in its own directory, whose log goes on in ``cifarnet.log``). None:
    the usual names."""
    run_dir = Path(run_dir)
    if not (run_dir / ".hydra").is_dir():
        return None
    if mode == "train":
        return (PENDING_RESUME, "cifarnet.log") if resume and _inside(resume, run_dir) else None
    return f".hydra-{mode}", f"cifarnet-{mode}.log"


def of_checkpoint(resume: str | Path) -> Path | None:
    """The run directory a ``resume=`` value belongs to: the directory itself, or the run holding a
    checkpoint in its ``checkpoints/``; None for anything else (``pretrained:``, a loose file)."""
    path = Path(str(resume))
    if path.is_dir():
        return path if (path / "checkpoints").is_dir() else None
    if path.is_file() and path.parent.name == "checkpoints" and (path.parent.parent / ".hydra").is_dir():
        return path.parent.parent
    return None


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def check(run_dir: str | Path, mode: str = "train", overwrite: bool = False, resume: str | Path | None = None) -> None:
    """Make sure a run of ``mode`` may write into ``run_dir``.

    Allowed when the directory holds no output of ``mode``, when a training run resumes from a
    checkpoint inside it (the run continues), or with ``overwrite``, which first removes the
    earlier run: all of it for training, the mode's outputs and own record otherwise (and says so
    in the log).

    Raises:
        RunDirectoryError: the directory holds an earlier run's outputs.
    """
    run_dir = Path(run_dir)
    found = existing_outputs(run_dir, mode)
    if not found or (mode == "train" and resume and _inside(resume, run_dir)):
        return
    if overwrite:
        if mode == "train":
            for path in list(run_dir.iterdir()):
                _remove(path)
        else:
            for name in (*OUTPUTS[mode], f".hydra-{mode}", f"cifarnet-{mode}.log"):
                _remove(run_dir / name)
        log.warning("overwrite=true: removed the earlier run's %s from %s", ", ".join(found), run_dir)
        return
    hint = f", continue it with resume={run_dir}" if mode == "train" else ""
    raise RunDirectoryError(f"run directory {run_dir} already holds an earlier run's {', '.join(found)}; "
                            f"choose another hydra.run.dir{hint}, or set overwrite=true to replace them")


def check_sweep(sweep_dir: str | Path, overwrite: bool = False) -> None:
    """The sweep counterpart of :func:`check`: refuse a sweep directory whose jobs left results.

    With ``overwrite`` the earlier jobs' directories and the summary files are removed, so the new
    sweep's summary lists only its own jobs.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        return
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    done = [p.name for p in jobs if (p / "result.json").is_file()
            or any(existing_outputs(p, mode) for mode in OUTPUTS)]
    if not done:
        return
    if not overwrite:
        raise RunDirectoryError(f"sweep directory {sweep_dir} already holds the results of jobs "
                                f"{', '.join(done)}; choose another hydra.sweep.dir, or set overwrite=true "
                                "to replace them")
    for job in jobs:
        shutil.rmtree(job)
    for name in ("sweep_summary.csv", "sweep_summary.md", "sweep_test_accuracy.png", "optimization_results.yaml"):
        (sweep_dir / name).unlink(missing_ok=True)
    log.warning("overwrite=true: removed the earlier sweep's jobs %s from %s", ", ".join(done), sweep_dir)


def discard_if_empty(run_dir: str | Path, record: tuple[str, ...] | None = None, mode: str = "train") -> bool:
    """After a failure: remove what the failed job left, if it wrote none of its outputs.

    ``record`` is the job's own ``(record folder, log file)`` when it wrote them beside another
    run's (:func:`own_record`): then only those two go. Otherwise ``run_dir`` goes, if it holds
    nothing but Hydra's record and the log, with the dated folders above it that this leaves empty
    (up to and including ``outputs/``). Returns whether anything was removed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    if record is not None:
        if existing_outputs(run_dir, mode):
            return False
        for name in record:
            _remove(run_dir / name)
        return True
    if any(p.name not in RECORD for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent                     # outputs/<date>/ and outputs/ left empty by this run
    while parent.is_dir() and (parent.name[:1].isdigit() or parent.name in ("outputs", "multirun")) \
            and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return True
