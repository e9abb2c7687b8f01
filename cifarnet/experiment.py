"""From a plain config dict to a trained (or evaluated) model: the one place that reads config.

The command line composes the config with Hydra and hands over a plain ``dict`` (groups
``model``, ``optimizer``, ``data``, ``backend``, ``schedule``, ``trainer``; keys ``seed``, ``mode``,
``ckpt``, ``resume``). Tests and notebooks can build the same dict and call :func:`train` or
:func:`evaluate_checkpoint` directly; nothing here imports Hydra.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint as ckpt
from .backend import get_backend
from .data import Augmentation, BatchLoader, Dataset, Normalization, load_dataset
from .data.normalize import CIFAR10_STATS
from .files import replace_atomically
from .memory import keep_freed_memory
from .run_dir import check as check_run_dir
from .models import build_model
from .optim import OPTIMIZERS
from .schedules import make_dropout_schedule, make_lr_schedule
from .training import evaluate
from .training.trainer import Trainer, TrainerSettings, TrainState

log = logging.getLogger(__name__)

DTYPES = {"float32": np.float32, "float64": np.float64}


class ConfigError(ValueError):
    """A config that names something impossible; the message says which key and why."""


# -- pieces -------------------------------------------------------------------------------------
def model_description(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The model description: the ``model`` group without unset (None) fields."""
    return {k: copy.deepcopy(v) for k, v in model_cfg.items() if v is not None}


def load_data(data_cfg: dict[str, Any], seed: int) -> Dataset:
    """The dataset the ``data`` group names, with its validation split carved by ``seed``."""
    source = data_cfg["source"]
    if source == "cifar10":
        options = {"root": data_cfg["root"], "download": data_cfg["download"]}
    elif source == "synthetic":
        options = {k: data_cfg[k] for k in ("train_size", "test_size", "noise", "image_size")}
        options["seed"] = data_cfg["data_seed"]
    elif source == "image_folder":
        options = {"root": data_cfg["root"], "image_size": data_cfg["image_size"]}
    else:
        options = {}
    return load_dataset(source, val_size=data_cfg["val_size"], val_seed=seed, **options)


def normalization_for(data_cfg: dict[str, Any], dataset: Dataset) -> Normalization:
    choice = _enum_value(data_cfg.get("normalization", "dataset"))
    if choice == "cifar10":
        return CIFAR10_STATS
    return Normalization.from_images(dataset.train.images)


def make_loaders(data_cfg: dict[str, Any], dataset: Dataset, norm: Normalization, backend, seed: int,
                 dtype) -> tuple[BatchLoader, dict[str, BatchLoader]]:
    aug_cfg = data_cfg["augment"]
    augmentation = None
    if aug_cfg["enabled"]:
        augmentation = Augmentation(aug_cfg["crop_padding"], _enum_value(aug_cfg["pad_mode"]), aug_cfg["flip"])
    common = {"backend": backend, "prefetch": data_cfg["prefetch"], "dtype": dtype}
    train = BatchLoader(dataset.train, data_cfg["batch_size"], norm, augmentation=augmentation, shuffle=True,
                        drop_last=True, seed=seed, **common)
    evals = {}
    if dataset.val is not None:
        evals["val"] = BatchLoader(dataset.val, data_cfg["eval_batch_size"], norm, **common)
    evals["test"] = BatchLoader(dataset.test, data_cfg["eval_batch_size"], norm, **common)
    return train, evals


def make_optimizer(opt_cfg: dict[str, Any]):
    options = dict(opt_cfg)
    return OPTIMIZERS.get(options.pop("name"))(**options)


def make_lr_schedule_from(sched_cfg: dict[str, Any], base_lr: float, epochs: int, steps_per_epoch: int):
    name = sched_cfg["name"]
    total = epochs * steps_per_epoch
    options: dict[str, Any] = {"warmup_steps": round(sched_cfg.get("warmup_epochs", 0) * steps_per_epoch)}
    if name == "step":
        options.update(milestones=[round(m * steps_per_epoch) for m in sched_cfg["milestones"]],
                       gamma=sched_cfg["gamma"])
    elif name == "cosine":
        options["min_lr"] = sched_cfg["min_lr"]
    elif name == "linear":
        options["end_lr"] = sched_cfg["end_lr"]
    return make_lr_schedule(name, base_lr, total, **options)


def _enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


def make_backend(backend_cfg: dict[str, Any]):
    """The backend ``backend_cfg["name"]`` names; on NumPy, keep freed memory for reuse unless
    ``keep_freed_memory`` is false (see :mod:`cifarnet.memory`)."""
    backend = get_backend(backend_cfg["name"])
    if backend.name == "numpy" and backend_cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    return backend


def _dtype(cfg: dict[str, Any]):
    name = cfg["backend"].get("dtype", "float32")
    if name not in DTYPES:
        raise ConfigError(f"backend.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


# -- checkpoints and config -----------------------------------------------------------------------
def merge_with_checkpoint(saved: dict[str, Any], current: dict[str, Any], explicit: list[str],
                          source: str, purpose: str = "resume") -> dict[str, Any]:
    """The config for resuming or evaluating: the checkpoint's own, plus what the user said.

    Args:
        saved: the config recorded in the checkpoint.
        current: the freshly composed config (defaults plus the command line).
        explicit: keys the user set on the command line, group choices (``model``, ``data``,
            ``backend``, ...) and dotted keys (``trainer.epochs``).
        source: the checkpoint's path, for messages.
        purpose: ``"resume"`` or ``"eval"``; evaluation uses no optimizer, so a different
            ``optimizer=`` is no conflict there.
    Raises:
        ConfigError: the user asked for a different architecture than the checkpoint holds, or
            (when resuming) a different optimizer than the one whose state it holds.
    """
    merged = copy.deepcopy(saved)
    for key in ("mode", "ckpt", "resume", "overwrite"):
        merged[key] = current.get(key)
    merged["backend"] = copy.deepcopy(current["backend"])
    for key in explicit:
        head = key.split(".")[0]
        if head == "model":
            want = _select(current, key)
            have = _select(saved, key)
            if want != have:
                what = f"model={current['model']['name']}" if key == "model" else f"{key}={want}"
                raise ConfigError(f"checkpoint {source} holds a different architecture "
                                  f"(model {saved['model'].get('name')!r}) than requested ({what})")
        elif key in ("data", "schedule", "trainer", "backend"):
            merged[key] = copy.deepcopy(current[key])
        elif key == "optimizer":
            if purpose == "resume" and current["optimizer"]["name"] != saved["optimizer"]["name"]:
                raise ConfigError(f"checkpoint {source} was trained with optimizer "
                                  f"{saved['optimizer']['name']!r}; its state cannot continue as "
                                  f"{current['optimizer']['name']!r}")
        elif head in current:
            _assign(merged, key, copy.deepcopy(_select(current, key)))
    return merged


def _select(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _assign(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


# -- train and evaluate ---------------------------------------------------------------------------
def train(cfg: dict[str, Any], run_dir: str | Path, resume_from: ckpt.Checkpoint | None = None,
          resume_command=None) -> dict[str, Any]:
    """Train as ``cfg`` says, writing metrics and checkpoints under ``run_dir``.

    With ``resume_from``, weights, optimizer state, schedule position, epoch counter, RNG states
    and metric history continue from that checkpoint (``cfg`` should come from
    :func:`merge_with_checkpoint`). Resuming into another directory copies the best checkpoint
    so far into it, so the new directory is a complete record of the run.

    Raises:
        RunDirectoryError: ``run_dir`` holds an earlier run (see :mod:`cifarnet.run_dir`).
    Returns:
        A summary: best metric and epoch, final metrics, epochs, run seconds, paths.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    tcfg = cfg["trainer"]
    settings = TrainerSettings(epochs=tcfg["epochs"], label_smoothing=tcfg["label_smoothing"],
                               keep_last=tcfg["keep_last"], progress=tcfg["progress"],
                               nonfinite=_enum_value(tcfg["nonfinite"]), workers=tcfg.get("workers"))
    check_run_dir(run_dir, "train", bool(cfg.get("overwrite")), resume_from.path if resume_from else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed, dtype = int(cfg["seed"]), _dtype(cfg)
    backend = make_backend(cfg["backend"])
    dataset = load_data(cfg["data"], seed)
    if resume_from is not None:
        norm = Normalization.from_dict(resume_from.meta["normalization"])
    else:
        norm = normalization_for(cfg["data"], dataset)
    train_loader, eval_loaders = make_loaders(cfg["data"], dataset, norm, backend, seed, dtype)

    description = model_description(cfg["model"])
    if description.get("num_classes", dataset.num_classes) != dataset.num_classes:
        raise ConfigError(f"model.num_classes={description['num_classes']} but the {dataset.source} data has "
                          f"{dataset.num_classes} classes; leave model.num_classes unset (null) to take it "
                          "from the data")
    description["num_classes"] = dataset.num_classes
    model = build_model(description, dataset.image_shape, seed=seed, dtype=dtype)
    optimizer = make_optimizer(cfg["optimizer"])
    state = None
    if resume_from is not None:
        model.load_state_dict(resume_from.model_state)
        if resume_from.optimizer_state is not None:
            optimizer.load_state_dict(resume_from.optimizer_state)
        ckpt.restore_rng_states(model, resume_from.meta["rng"])
        state = TrainState.from_dict(resume_from.meta["state"])
        if state.epoch >= settings.epochs:
            raise ConfigError(f"the checkpoint has finished {state.epoch} epochs and trainer.epochs is "
                              f"{settings.epochs}; ask for more, e.g. trainer.epochs={state.epoch + 1}")
        log.info("resuming from %s at epoch %d, batch %d (step %d)", resume_from.path, state.epoch + 1,
                 state.batch, state.step)
        carry_best_checkpoint(resume_from, state, run_dir / "checkpoints")
    model.to(backend)

    steps_per_epoch = len(train_loader)
    lr_schedule = make_lr_schedule_from(cfg["schedule"], cfg["optimizer"]["lr"], settings.epochs, steps_per_epoch)
    dropout_schedule = None
    if tcfg["dropout_schedule"] != "none":
        dropout_schedule = make_dropout_schedule(tcfg["dropout_schedule"], float(description.get("dropout", 0.0)),
                                                 settings.epochs, final=tcfg["dropout_final"])
    meta = {"model": description, "input_shape": list(dataset.image_shape), "normalization": norm.to_dict(),
            "class_names": dataset.class_names, "backend": backend.name, "dtype": cfg["backend"]["dtype"],
            "seed": seed, "config": cfg}
    log.info("model %s: %s parameters; data %s: %d train, %s test images, %d classes; backend %s",
             description.get("name", "?"), f"{model.num_parameters():,}", dataset.source, len(dataset.train),
             len(dataset.test), dataset.num_classes, backend.name)
    trainer = Trainer(model, optimizer, lr_schedule, dropout_schedule, train_loader, eval_loaders,
                      dataset.num_classes, run_dir, settings, meta, resume_command=resume_command)
    parts, workers = trainer.net.parts(cfg["data"]["batch_size"], backend.xp), tcfg.get("workers")
    log.info("training batches of %d images %s (trainer.workers=%s)", cfg["data"]["batch_size"],
             f"split between {parts} threads" if parts > 1 else "on one thread",
             "null" if workers is None else workers)
    state = trainer.fit(state)
    best_path = trainer.best_checkpoint()
    if best_path is not None:                  # per-class accuracy and confusion of the best epoch
        best = ckpt.load(best_path)
        result = evaluate(restore_model(best, backend, dtype), eval_loaders["test"], dataset.num_classes)
        _write_json(run_dir / "best_eval.json", {"checkpoint": str(best_path), "epoch": best.meta["state"]["epoch"],
                                                 "split": "test", **result.to_dict(dataset.class_names)})
    last = {k: (None if v == "" else v) for k, v in state.history[-1].items()}     # JSON: null, not ""
    summary = {"best_metric": state.best_metric, "best_epoch": state.best_epoch,
               "metric": "val_acc" if "val" in eval_loaders else "test_acc",
               "final": last, "epochs": state.epoch, "run_seconds": round(time.perf_counter() - started, 2),
               "run_dir": str(run_dir), "best_checkpoint": None if best_path is None else str(best_path)}
    _write_json(run_dir / "result.json", summary)
    return summary


def carry_best_checkpoint(resumed: ckpt.Checkpoint, state: TrainState, ckpt_dir: Path) -> Path | None:
    """Copy the best checkpoint so far next to the run that resumes from ``resumed``.

    The best epoch (``state.best_epoch``) may lie before the resumed checkpoint: its file is the
    ``best_*.npz`` in the resumed checkpoint's folder, or the resumed checkpoint itself when that
    epoch ended there. Nothing is copied when resuming inside the same directory. When the file is
    gone, a warning says so, and the run's best checkpoint will be the next improvement's.
    """
    if state.best_epoch < 1 or resumed.path is None:
        return None
    source_dir = Path(resumed.path).parent
    if ckpt_dir.exists() and source_dir.resolve() == ckpt_dir.resolve():
        return None
    candidates = [p for p in source_dir.glob("best_*.npz") if ckpt.is_best(p)] + [Path(resumed.path)]
    for path in candidates:
        try:
            found = ckpt.load(path)
        except ckpt.CheckpointError:
            continue
        saved = found.meta.get("state", {})
        if saved.get("epoch") == state.best_epoch and saved.get("batch", 0) == 0:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            target = ckpt_dir / ckpt.best_name(found.meta.get("backend", "numpy"))
            shutil.copyfile(path, target)
            log.info("best checkpoint so far (epoch %d) copied from %s", state.best_epoch, path)
            return target
    log.warning("the best checkpoint so far (epoch %d) is not in %s; this run's best checkpoint will be the "
                "next epoch that improves on it", state.best_epoch, source_dir)
    return None


def restore_model(checkpoint: ckpt.Checkpoint, backend, dtype=np.float32):
    """Rebuild the model a checkpoint describes and load its weights, on ``backend``."""
    meta = checkpoint.meta
    model = build_model(meta["model"], meta["input_shape"], seed=0, dtype=dtype)
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as err:
        raise ckpt.CheckpointError(f"checkpoint {checkpoint.path} does not fit its own model description: "
                                   f"{err}") from None
    return model.to(backend)


def evaluate_checkpoint(cfg: dict[str, Any], checkpoint: ckpt.Checkpoint, run_dir: str | Path) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the test split ``cfg["data"]`` names; writes ``eval.json``.

    The model and normalisation come from the checkpoint's metadata; the backend from ``cfg``.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir, "eval", bool(cfg.get("overwrite")))
    run_dir.mkdir(parents=True, exist_ok=True)
    backend, dtype = make_backend(cfg["backend"]), _dtype(cfg)
    model = restore_model(checkpoint, backend, dtype)
    dataset = load_data(cfg["data"], int(cfg["seed"]))
    names = checkpoint.meta.get("class_names") or dataset.class_names
    if len(names) != dataset.num_classes:
        raise ConfigError(f"checkpoint {checkpoint.path} knows {len(names)} classes but the data has "
                          f"{dataset.num_classes}")
    norm = Normalization.from_dict(checkpoint.meta["normalization"])
    loader = BatchLoader(dataset.test, cfg["data"]["eval_batch_size"], norm, backend=backend,
                         prefetch=cfg["data"]["prefetch"], dtype=dtype)
    result = evaluate(model, loader, dataset.num_classes)
    state = checkpoint.meta["state"]
    report = {"checkpoint": str(checkpoint.path), "epoch": state["epoch"], "batch": state.get("batch", 0),
              "backend": backend.name, "trained_on_backend": checkpoint.meta.get("backend"),
              **result.to_dict(names)}
    _write_json(run_dir / "eval.json", report)
    return report


def format_eval_report(report: dict[str, Any]) -> str:
    """Overall accuracy, per-class accuracy and the confusion matrix as text."""
    names = report["class_names"]
    width = max(8, *(len(n) for n in names))
    at = f"epoch {report['epoch']}"
    if report.get("batch"):                    # an interrupt checkpoint, written inside an epoch
        at = f"{report['epoch']} epochs and {report['batch']} batches of epoch {report['epoch'] + 1}"
    lines = [f"checkpoint {report['checkpoint']} ({at}, trained on "
             f"{report['trained_on_backend']}, evaluated on {report['backend']})",
             f"test accuracy {report['accuracy']:.2%} on {report['images']:,} images, loss {report['loss']:.4f}",
             "", "per-class accuracy:"]
    lines += [f"  {n:<{width}} {acc:7.2%}" for n, acc in report["per_class_accuracy"].items()]
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              " " * (width + 2) + " ".join(f"{n[:6]:>6}" for n in names)]
    for n, row in zip(names, report["confusion_matrix"]):
        lines.append(f"  {n:<{width}}" + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def _write_json(path: Path, obj: Any) -> None:
    with replace_atomically(path) as f:
        json.dump(obj, f, indent=2, default=_enum_value)
