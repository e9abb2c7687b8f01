"""Training as a config says (``mode=train``), from scratch or resumed."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..blas import limited_blas_threads
from ..comm import LOCAL, Communicator
from ..data import Normalization
from ..models import build_model, fit_to_data, fits_data, restore_model
from ..models.data_init import FIT_IMAGES
from ..parallel import BLAS_THREADS_PER_WORKER, parts_for
from ..run_dir import check as check_run_dir
from ..threads import default_workers
from ..tracking import make_trackers
from ..training import evaluate
from ..training.hooks import Hook
from ..training.settings import TrainerSettings
from ..training.state import TrainState
from ..training.trainer import Trainer
from .checkpoint_eval import tta_level
from .components import (
    ConfigError,
    accepted,
    describe_model,
    dtype_of,
    enum_value,
    load_data,
    make_backend,
    make_dropout_schedule_from,
    make_loaders,
    make_lr_schedule_from,
    make_optimizer,
    normalization_for,
    settle_kernels,
)
from .report import tta_words, write_json
from .resume import carry_best_checkpoint

log = logging.getLogger("cifarnet.experiment")


@dataclass
class Run:
    """A training run as :func:`build` made it from a config, ready for :func:`run`: the trainer
    (which holds the model, its loaders, settings, run directory and communicator), what else the
    run needs, and the state it starts from (None: from scratch)."""

    cfg: dict[str, Any]
    trainer: Trainer
    backend: Any
    dtype: Any
    dataset: Any
    trackers: list
    state: TrainState | None
    tta: int
    data_init_seconds: float
    overrides: list[str]
    started: float


def train(cfg: dict[str, Any], run_dir: str | Path, resume_from: ckpt.Checkpoint | None = None,
          resume_command=None, overrides: list[str] | None = None, hooks: Sequence[Hook] = (),
          comm: Communicator = LOCAL) -> dict[str, Any]:
    """Train as ``cfg`` says, writing metrics and checkpoints under ``run_dir``: :func:`build`, then
    :func:`run`.

    With ``resume_from``, weights, optimizer state, schedule position, epoch counter, RNG states
    and metric history continue from that checkpoint (``cfg`` should come from
    :func:`merge_with_checkpoint`). Resuming into another directory copies the best checkpoint
    so far into it, so the new directory is a complete record of the run. Otherwise, with
    ``cfg["init_from"]`` (a checkpoint), a new run starts from that checkpoint's weights (and its
    normalisation): fine-tuning. ``overrides`` (the command line's) are recorded in ``result.json``;
    ``hooks`` hear of every step, epoch and checkpoint (:class:`cifarnet.training.hooks.Hook`) besides
    the trackers the config names.

    Everything the config names is checked (optimizer arguments, trackers, the init checkpoint)
    before the data loads. With ``comm`` a group of processes (:mod:`cifarnet.distributed`), each
    trains on its share of every batch and rank 0 alone writes files and talks to trackers.

    Raises:
        RunDirectoryError: ``run_dir`` holds an earlier run (see :mod:`cifarnet.run_dir`).
    Returns:
        A summary: best metric and epoch, final metrics, epochs, run seconds, paths.
    """
    return run(build(cfg, run_dir, resume_from, resume_command, overrides, hooks, comm))


def build(cfg: dict[str, Any], run_dir: str | Path, resume_from: ckpt.Checkpoint | None = None,
          resume_command=None, overrides: list[str] | None = None, hooks: Sequence[Hook] = (),
          comm: Communicator = LOCAL) -> Run:
    """Everything a training run needs, made from ``cfg`` (arguments as :func:`train`'s): the run
    directory checked, the components made (the backend first, the data after everything the config
    names is checked), the model built, initialised (from data, ``init_from`` or the checkpoint
    resumed) and moved to its backend, and the trainer."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    tcfg = cfg["trainer"]
    settings = TrainerSettings(**accepted(TrainerSettings, {k: enum_value(v) for k, v in tcfg.items()}))
    writes = comm.rank == 0
    if settings.workers is None and comm.size > 1:          # the machine's cores shared among its processes
        settings.workers = max(1, default_workers() // getattr(comm, "local_size", comm.size))
    if writes:
        check_run_dir(run_dir, "train", bool(cfg.get("overwrite")), resume_from.path if resume_from else None)
    seed, dtype = int(cfg["seed"]), dtype_of(cfg)
    optimizer = make_optimizer(cfg["optimizer"])
    optimizer.batch_size = int(cfg["data"]["batch_size"])      # the global batch: rates given per example
    tta = tta_level(cfg)
    # a resumed run keeps the checkpoint's own description, whatever the presets say today
    description = dict(resume_from.meta["model"]) if resume_from is not None else describe_model(cfg["model"])
    init_from = ckpt.resolve(cfg["init_from"], prefer="best") if cfg.get("init_from") and not resume_from else None
    backend = make_backend(cfg["backend"])        # first: it sets the allocator up before any thread allocates
    trackers = make_trackers(cfg.get("logger")) if writes else []
    dataset = load_data(cfg["data"], seed)
    if writes:
        run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None or init_from is not None:
        norm = Normalization.from_dict((resume_from or init_from).meta["normalization"])
    else:
        norm = normalization_for(cfg["data"], dataset)
    train_loader, eval_loaders = make_loaders(cfg["data"], dataset, norm, backend, seed, dtype,
                                              shard=(comm.rank, comm.size))

    requested = cfg["model"].get("num_classes")
    if requested is not None and requested != dataset.num_classes:
        raise ConfigError(f"model.num_classes={requested} but the {dataset.source} data has "
                          f"{dataset.num_classes} classes; leave model.num_classes unset (null) to take it "
                          "from the data")
    description["num_classes"] = dataset.num_classes
    model = build_model(description, dataset.image_shape, seed=seed, dtype=dtype)
    settle_kernels(cfg["backend"], model)
    if init_from is not None:
        load_initial_weights(model, description, init_from)
    data_init_seconds = resume_from.meta.get("data_init_seconds", 0.0) if resume_from is not None else 0.0
    if init_from is None and resume_from is None and fits_data(model):    # a fresh model: its data-dependent layers
        tick = time.perf_counter()
        count = int(description.get("fit_images", FIT_IMAGES))
        fit_to_data(model, norm(dataset.train.images[:count], model_dtype(model)))
        data_init_seconds = round(time.perf_counter() - tick, 3)
    state = None
    if resume_from is not None:
        state = resume_into(model, optimizer, resume_from, settings)
        if writes:
            carry_best_checkpoint(resume_from, state, run_dir / "checkpoints")
    model.to(backend)

    steps_per_epoch = len(train_loader)
    lr_schedule = make_lr_schedule_from(cfg["schedule"], cfg["optimizer"]["lr"], settings.epochs, steps_per_epoch)
    dropout_schedule = make_dropout_schedule_from(tcfg, float(description.get("dropout", 0.0)), settings.epochs)
    # steps the initial weights were trained for (init_from=): their batch-norm statistics came trained
    initial_steps = int(init_from.meta.get("state", {}).get("step", 0)) if init_from is not None else \
        int(resume_from.meta.get("initial_steps", 0)) if resume_from is not None else 0
    meta = {"model": description, "input_shape": list(dataset.image_shape), "normalization": norm.to_dict(),
            "class_names": dataset.class_names, "backend": backend.name, "dtype": cfg["backend"]["dtype"],
            "seed": seed, "config": cfg, "data_init_seconds": data_init_seconds, "initial_steps": initial_steps}
    log.info("model %s: %s parameters; data %s: %d train, %s test images, %d classes; backend %s",
             description.get("name", "?"), f"{model.num_parameters():,}", dataset.source, len(dataset.train),
             len(dataset.test), dataset.num_classes, backend.name)
    for tracker in trackers:                    # the model as built: the preset's values, not the unset keys
        tracker.start(run_dir, dict(cfg, model=description), resumed=resume_from is not None)
    trainer = Trainer(model, optimizer, lr_schedule, dropout_schedule, train_loader, eval_loaders,
                      dataset.num_classes, run_dir, settings, meta, resume_command=resume_command,
                      hooks=[*trackers, *hooks] if writes else [], comm=comm)
    if resume_from is not None and trainer.average is not None:
        try:
            trainer.average.load(model, resume_from.extras)
        except ValueError as err:
            raise ckpt.CheckpointError(f"checkpoint {resume_from.path}: {err}") from None
    return Run(cfg, trainer, backend, dtype, dataset, trackers, state, tta, data_init_seconds, list(overrides or []),
               started)


def resume_into(model, optimizer, resume_from: ckpt.Checkpoint, settings: TrainerSettings) -> TrainState:
    """Put a checkpoint's weights, optimizer state and generator states into ``model`` and
    ``optimizer``; returns its training state (refused if ``settings.epochs`` are already done)."""
    model.load_state_dict(resume_from.model_state)
    if resume_from.optimizer_state is not None:
        optimizer.load_state_dict(resume_from.optimizer_state)
    try:
        model.load_generator_states(resume_from.meta["rng"])
    except ValueError as err:
        raise ckpt.CheckpointError(f"checkpoint {resume_from.path}: {err}") from None
    state = TrainState.from_dict(resume_from.meta["state"])
    if state.epoch >= settings.epochs:
        raise ConfigError(f"the checkpoint has finished {state.epoch} epochs and trainer.epochs is "
                          f"{settings.epochs:g}; ask for more, e.g. trainer.epochs={state.epoch + 1}")
    log.info("resuming from %s at epoch %d, batch %d (step %d)", resume_from.path, state.epoch + 1,
             state.batch, state.step)
    return state


def run(r: Run) -> dict[str, Any]:
    """Train what :func:`build` made, evaluate the result (with test-time augmentation if asked),
    write ``result.json``, ``best_eval.json`` and the figures; returns the summary."""
    cfg, trainer, dataset, trackers = r.cfg, r.trainer, r.dataset, r.trackers
    settings, comm, run_dir, eval_loaders = trainer.settings, trainer.comm, trainer.run_dir, trainer.eval_loaders
    with limited_blas_threads(BLAS_THREADS_PER_WORKER) as blas_limited:    # see cifarnet.parallel
        parts, workers = parts_for(trainer.train_loader.share, settings.workers, r.backend.xp), \
            cfg["trainer"].get("workers")
        where = f"split between {parts} threads" if parts > 1 else "on one thread"
        if comm.size > 1:
            where = f"split between {comm.size} processes, each part {where}"
        blas = f"{BLAS_THREADS_PER_WORKER} BLAS thread each" if blas_limited else "BLAS threads as OpenBLAS chooses"
        log.info("training batches of %d images %s, %s (trainer.workers=%s)", cfg["data"]["batch_size"], where,
                 blas, "null" if workers is None else workers)
        try:
            state = trainer.fit(r.state)
        except BaseException:
            for tracker in trackers:
                tracker.finish([], failed=True)
            raise
        final_eval = None
        if r.tta and not trainer.stopped_early:                    # the finished model, with test-time augmentation
            tick = time.perf_counter()
            got = evaluate(trainer.model, eval_loaders["test"], dataset.num_classes,
                           settings.progress and trainer.writes, settings.workers, comm, tta=r.tta)
            final_eval = {"split": "test", "tta": r.tta, "accuracy": got.accuracy, "loss": got.loss,
                          "images": got.images, "seconds": round(time.perf_counter() - tick, 3)}
            log.info("final evaluation, %s: test accuracy %.2f%%, loss %.4f (%.1f s)", tta_words(r.tta),
                     100 * got.accuracy, got.loss, final_eval["seconds"])
        best_path = trainer.keeper.best()
        if not trainer.writes:
            return {"status": "completed", "best_metric": state.best_metric, "best_epoch": state.best_epoch,
                    "epochs": state.epoch, "run_dir": str(run_dir)}
        if best_path is not None:                  # per-class accuracy and confusion of the best epoch
            best = ckpt.load(best_path)
            result = evaluate(restore_model(best, r.backend, r.dtype), eval_loaders["test"], dataset.num_classes)
            write_json(run_dir / "best_eval.json", {"checkpoint": str(best_path),
                                                       "epoch": best.meta["state"]["epoch"],
                                                       "split": "test", **result.to_dict(dataset.class_names)})
    last = {k: (None if v == "" else v) for k, v in state.history[-1].items()}     # JSON: null, not ""
    summary = {"status": "completed", "overrides": r.overrides,
               "best_metric": state.best_metric, "best_epoch": state.best_epoch,
               "metric": "val_acc" if "val" in eval_loaders else "test_acc",
               "final": last, "epochs": state.epoch, "run_seconds": round(time.perf_counter() - r.started, 2),
               "run_dir": str(run_dir), "best_checkpoint": None if best_path is None else str(best_path),
               "stopped_early": trainer.stopped_early, "final_eval": final_eval,
               "time": time_to_result(state.history, r.data_init_seconds, final_eval)}
    if not trainer.stopped_early:
        log.info("time to result %.1f s: %s", summary["time"]["total_seconds"], summary["time"]["definition"])
    write_json(run_dir / "result.json", summary)
    figures = plot_figures(run_dir) if cfg.get("plots", True) else []
    for tracker in trackers:
        tracker.finish([p for p in (best_path, *figures) if p is not None])
    return summary


def time_to_result(history: list[dict[str, Any]], data_init_seconds: float,
                   final_eval: dict[str, Any] | None) -> dict[str, Any]:
    """A run's time as airbench reports it: the data-dependent initialisation, the training steps
    of every epoch (every piece of a resumed run; per-epoch evaluations and data loading from disk
    excluded) and the final evaluation with test-time augmentation, in seconds."""
    training = round(sum(float(row.get("epoch_seconds") or 0.0) for row in history), 3)
    final = final_eval["seconds"] if final_eval else 0.0
    return {"data_init_seconds": data_init_seconds, "training_seconds": training, "final_evaluation_seconds": final,
            "total_seconds": round(data_init_seconds + training + final, 3),
            "definition": "data-dependent initialisation + training steps + final evaluation with test-time "
                          "augmentation (per-epoch evaluations and loading the data from disk excluded)"}


def model_dtype(model):
    """The dtype of ``model``'s parameters."""
    return next(p for _, p in model.named_parameters()).dtype


def load_initial_weights(model, description: dict[str, Any], source: ckpt.Checkpoint) -> None:
    """Start ``model`` (built from ``description``) from ``source``'s weights (``init_from=``); the
    architectures must match."""
    theirs = source.meta.get("model", {}).get("name")
    if theirs != description.get("name"):
        raise ConfigError(f"init_from={source.path} holds model {theirs!r}, not the model being trained "
                          f"({description.get('name')!r}): add model={theirs}")
    try:
        model.load_state_dict(source.model_state)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"init_from={source.path}: its weights do not fit the model being trained ({err})") from None
    log.info("initial weights from %s (epoch %d)", source.path, source.meta.get("state", {}).get("epoch", 0))


def plot_figures(run_dir: Path) -> list[Path]:
    """The run's figures (:mod:`cifarnet.plot`); none, with a note, when matplotlib is missing."""
    from ..plot import PlotError, plot_run

    try:
        paths = plot_run(run_dir)
    except PlotError as err:
        log.info("no figures: %s", err)
        return []
    log.info("figures: %s", ", ".join(p.name for p in paths))
    return paths
