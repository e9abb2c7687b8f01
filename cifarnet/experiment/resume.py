"""Continuing from a checkpoint: its config merged with what the user said, its best checkpoint
carried into a new run directory."""
from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..training.state import TrainState
from .components import ConfigError, describe_model

log = logging.getLogger("cifarnet.experiment")

# The data keys an evaluation takes from the user's config, not from the checkpoint: where the data
# is on this machine and how it is batched. What the data is (its source and the source's other
# options) comes from the checkpoint, and so do the normalisation and the class names (its metadata).
WHERE_DATA_IS = ("root", "download", "url", "md5", "eval_batch_size", "prefetch", "max_test_images")


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
            ``optimizer=`` is no conflict there, and it reads the data from where the user's
            config says (``WHERE_DATA_IS``: a shipped checkpoint names no machine's folder), when
            that config names the checkpoint's data source.
    Raises:
        ConfigError: the user asked for a different architecture than the checkpoint holds, or
            (when resuming) a different optimizer than the one whose state it holds.
    """
    merged = copy.deepcopy(saved)
    for key in ("mode", "ckpt", "resume", "init_from", "overwrite"):
        merged[key] = current.get(key)
    merged["backend"] = copy.deepcopy(current["backend"])
    saved_data, current_data = saved.get("data") or {}, current.get("data") or {}
    if purpose == "eval" and current_data.get("source") == saved_data.get("source"):
        merged["data"].update({k: copy.deepcopy(v) for k, v in current_data.items() if k in WHERE_DATA_IS})
    for key in explicit:
        head = key.split(".")[0]
        if head == "model":
            field = key.split(".", 1)[1] if "." in key else "name"
            want = _select(describe_model(current["model"]), field)
            have = _select(describe_model(saved["model"]), field)
            if want != have and not (field == "num_classes" and _select(current, key) is None):
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
