"""What a run directory holds, and the rules that keep one run from overwriting another.

A run directory gets Hydra's record (``.hydra/``), the log (``cifarnet.log``) and the outputs of
its mode: training writes ``metrics.csv``, ``result.json``, ``best_eval.json``, ``checkpoints/``
and figures; evaluation ``eval.json``; prediction ``predictions.csv``; export ``model.onnx``. A directory that already
holds the outputs of an earlier run of the same mode is refused unless the run continues it
(``resume=`` a checkpoint inside it) or ``overwrite=true`` says to replace them. A run that fails
before writing any output leaves nothing behind (:func:`discard_if_empty`).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

FIGURES = ("loss.png", "accuracy.png", "lr_schedule.png", "per_class_accuracy.png", "confusion_matrix.png")
OUTPUTS = {
    "train": ("metrics.csv", "result.json", "best_eval.json", "checkpoints", *FIGURES),
    "eval": ("eval.json",),
    "predict": ("predictions.csv",),
    "export": ("model.onnx",),
}
RECORD = (".hydra", "cifarnet.log")          # what Hydra writes before a job starts


class RunDirectoryError(RuntimeError):
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


def check(run_dir: str | Path, mode: str = "train", overwrite: bool = False, resume: str | Path | None = None) -> None:
    """Make sure a run of ``mode`` may write into ``run_dir``.

    Allowed when the directory holds no output of ``mode``, when a training run resumes from a
    checkpoint inside it (the run continues), or with ``overwrite``, which deletes the earlier
    outputs first (and says so in the log).

    Raises:
        RunDirectoryError: the directory holds an earlier run's outputs.
    """
    run_dir = Path(run_dir)
    found = existing_outputs(run_dir, mode)
    if not found or (mode == "train" and resume and _inside(resume, run_dir)):
        return
    if overwrite:
        for name in found:
            path = run_dir / name.rstrip("/")
            shutil.rmtree(path) if path.is_dir() else path.unlink()
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
    done = [p.name for p in jobs if any(existing_outputs(p, mode) for mode in OUTPUTS)]
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


def discard_if_empty(run_dir: str | Path) -> bool:
    """Remove ``run_dir`` if it holds nothing but Hydra's record and the log (a run that failed
    before writing anything; its error was printed). Returns whether it was removed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any(p.name not in RECORD for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent                     # outputs/<date>/ left empty by its only run
    if parent.name[:1].isdigit() and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    return True
