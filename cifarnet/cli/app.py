"""``python -m cifarnet``: the Hydra entry point, a thin layer over :mod:`cifarnet.experiment`.

It composes the config, turns it into a plain dict, works out which keys the user set on the
command line, and trains, evaluates, predicts or exports (``mode=``). Expected failures end as one line and exit 1;
interruptions exit 130 (SIGINT) or 143 (SIGTERM).
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

from .. import checkpoint as ckpt
from ..experiment import ConfigError, evaluate_checkpoint, format_eval_report, merge_with_checkpoint, train
from ..files import replace_atomically
from ..run_dir import check as check_run_dir
from ..run_dir import discard_if_empty
from ..sweeps import write_summary
from . import schema
from .errors import report_and_exit

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


def task(cfg) -> float:
    """One Hydra job: train, resume, evaluate, predict or export; returns the job's best accuracy (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    overrides = list(hc.overrides.task)
    explicit = explicit_keys(overrides)
    try:
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
            return _export(plain, run_dir)

        resume = None
        if plain["resume"]:
            resume = ckpt.resolve(plain["resume"], prefer="newest")
            plain = merge_with_checkpoint(resume.meta["config"], plain, explicit, source=str(resume.path))
        others = [o for o in overrides if not o.startswith("resume=")]

        def resume_command(path: Path) -> str:
            """The command that continues this run from ``path``, in this run directory."""
            return shlex.join(["python", "-m", "cifarnet", f"resume={path}", *others, f"hydra.run.dir={run_dir}"])

        log.info("run directory %s", run_dir)
        summary = train(plain, run_dir, resume, resume_command=resume_command)
        log.info("best %s %.2f%% at epoch %d; checkpoints in %s", summary["metric"], 100 * summary["best_metric"],
                 summary["best_epoch"], run_dir / "checkpoints")
        if hc.mode == RunMode.MULTIRUN:
            _record_sweep_job(run_dir, overrides, summary)
            if plain.get("plots", True):
                _plot_sweep(run_dir.parent)
        return float(summary["best_metric"])
    except BaseException as err:  # noqa: BLE001 - expected errors become one line, others re-raise
        if discard_if_empty(run_dir):
            log.debug("removed %s: the run failed before writing anything", run_dir)
        report_and_exit(err, emit=log.error)
        raise


def _predict(plain: dict, explicit: list[str], run_dir: Path) -> float:
    from ..experiment import make_backend, restore_model
    from ..predict import find_images, format_rows, predict, write_csv

    if not plain["ckpt"] or not plain["images"]:
        raise ConfigError("mode=predict needs ckpt=PATH (a checkpoint or a run directory) and images=FILE|DIR|GLOB")
    checkpoint = ckpt.resolve(plain["ckpt"], prefer="best")
    if "model" in explicit and checkpoint.meta["model"].get("name") != plain["model"]["name"]:
        raise ConfigError(f"checkpoint {plain['ckpt']} holds a different architecture (model "
                          f"{checkpoint.meta['model'].get('name')!r}) than requested (model={plain['model']['name']})")
    check_run_dir(run_dir, "predict", bool(plain.get("overwrite")))
    backend = make_backend(plain["backend"])
    paths = find_images(plain["images"])
    rows = predict(restore_model(checkpoint, backend), checkpoint, paths, backend, plain["topk"])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, run_dir / "predictions.csv")
    log.info("top-%d classes for %d images (checkpoint %s):\n%s\nwritten to %s", len(rows[0]["top"]), len(rows),
             plain["ckpt"], format_rows(rows), run_dir / "predictions.csv")
    return 0.0


def _export(plain: dict, run_dir: Path) -> float:
    from ..export import export_checkpoint

    if not plain["ckpt"]:
        raise ConfigError("mode=export needs ckpt=PATH (a checkpoint .npz file or a run directory)")
    checkpoint = ckpt.resolve(plain["ckpt"], prefer="best")
    check_run_dir(run_dir, "export", bool(plain.get("overwrite")))
    path = export_checkpoint(checkpoint, run_dir / "model.onnx")
    meta = checkpoint.meta
    h, w, c = meta["input_shape"]
    log.info("exported %s (model %s, epoch %d) to %s: float32 input 'images' (batch, %d, %d, %d) NCHW, "
             "normalised with the mean/std in its metadata; output 'logits' (batch, %d)", checkpoint.path,
             meta["model"].get("name", "?"), meta["state"]["epoch"], path, c, h, w,
             len(meta.get("class_names") or []))
    return 0.0


def _record_sweep_job(run_dir: Path, overrides: list[str], summary: dict) -> None:
    import json

    summary = dict(summary, overrides=overrides)
    with replace_atomically(run_dir / "result.json") as f:       # other jobs read it for their summaries
        json.dump(summary, f, indent=2)
    rows, table = write_summary(run_dir.parent)
    log.info("sweep summary so far (%d jobs), ranked by accuracy; %s:\n%s", len(rows),
             run_dir.parent / "sweep_summary.csv", table)


def _plot_sweep(sweep_dir: Path) -> None:
    """The sweep's comparison figure so far; skipped with a note when matplotlib is missing."""
    from ..plot import PlotError, plot_sweep

    try:
        log.info("sweep figure: %s", plot_sweep(sweep_dir).name)
    except PlotError as err:
        log.info("no sweep figure: %s", err)


def main() -> None:
    """Console entry point (``cifarnet`` and ``python -m cifarnet``)."""
    import hydra

    os.environ["HYDRA_FULL_ERROR"] = "1"      # let composition errors reach report_and_exit
    if not sys.stderr.isatty():
        os.environ.setdefault("NO_COLOR", "1")  # no ANSI colours from plugins' loggers in logs and pipes
    schema.register()
    entry = hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(task)
    try:
        entry()
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001
        report_and_exit(err)
