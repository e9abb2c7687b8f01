"""Evaluating a checkpoint on a test split (``mode=eval``); the pass over a loader itself is
:func:`cifarnet.training.evaluate`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..data import BatchLoader, Normalization
from ..inference.tta import LEVELS
from ..models import restore_model
from ..run_dir import check as check_run_dir
from ..training import evaluate
from .components import ConfigError, dtype_of, load_data, make_backend, settle_kernels
from .report import write_json


def tta_level(cfg: dict[str, Any]) -> int:
    """``eval.tta`` (0 where a config from before it has none).

    Raises:
        ConfigError: a level that is not 0, 1 or 2.
    """
    level = int((cfg.get("eval") or {}).get("tta", 0))
    if level not in LEVELS:
        raise ConfigError(f"eval.tta must be one of {', '.join(map(str, LEVELS))} (none, mirror, mirror and "
                          f"translations), got {level}")
    return level


def evaluate_checkpoint(cfg: dict[str, Any], checkpoint: ckpt.Checkpoint, run_dir: str | Path) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on the test split ``cfg["data"]`` names; writes ``eval.json``.

    The model and normalisation come from the checkpoint's metadata; the backend from ``cfg``.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir, "eval", bool(cfg.get("overwrite")))
    run_dir.mkdir(parents=True, exist_ok=True)
    backend, dtype = make_backend(cfg["backend"]), dtype_of(cfg)
    model = restore_model(checkpoint, backend, dtype)
    settle_kernels(cfg["backend"], model)
    dataset = load_data(cfg["data"], int(cfg["seed"]))
    names = checkpoint.meta.get("class_names") or dataset.class_names
    if len(names) != dataset.num_classes:
        raise ConfigError(f"checkpoint {checkpoint.path} knows {len(names)} classes but the data has "
                          f"{dataset.num_classes}")
    if list(names) != list(dataset.class_names):
        raise ConfigError(f"checkpoint {checkpoint.path} was trained on other classes ({', '.join(names[:3])}, ...) "
                          f"than the {dataset.source} data has ({', '.join(dataset.class_names[:3])}, ...); "
                          "evaluate it on the data it was trained on (data=...)")
    norm = Normalization.from_dict(checkpoint.meta["normalization"])
    loader = BatchLoader(dataset.test, cfg["data"]["eval_batch_size"], norm, backend=backend,
                         prefetch=cfg["data"]["prefetch"], dtype=dtype)
    tta = tta_level(cfg)
    result = evaluate(model, loader, dataset.num_classes, progress=True, tta=tta)
    state = checkpoint.meta["state"]
    report = {"checkpoint": str(checkpoint.path), "epoch": state["epoch"], "batch": state.get("batch", 0),
              "backend": backend.name, "trained_on_backend": checkpoint.meta.get("backend"), "tta": tta,
              **result.to_dict(names)}
    write_json(run_dir / "eval.json", report)
    return report
