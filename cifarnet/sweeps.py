"""Reading a sweep's results: one row per job, and the summary table written at the sweep directory.

Each job writes its own ``result.json`` once, whole (a job that failed writes one with
``"status": "failed"`` and the cause); after each job the summary is rebuilt from every
``result.json`` under the sweep directory while holding a lock on the directory, so with parallel
launchers the last job to finish writes the complete table. Failed jobs rank last. The command
line writes the summaries and the plots read them; both sit above this module. Which keys a
sweep varies is read from the files Hydra leaves in the sweep directory, with Hydra's own
override parser (imported only then).
"""
from __future__ import annotations

import csv
import fcntl
import json
import os
import re
from pathlib import Path

from .files import replace_atomically

COLUMNS = ["rank", "job", "status", "overrides", "best_acc", "best_epoch", "final_test_acc", "epochs", "run_seconds",
           "error"]
NUMBER = re.compile(r"(?<==)-?\d+\.\d{5,}(?:e-?\d+)?\b")     # a float written at full precision


def swept_keys(sweep_dir: Path) -> set[str] | None:
    """The config keys the sweep varies: those given with sweep syntax (``optimizer.lr=0.1,0.01``,
    from the ``multirun.yaml`` Hydra's basic sweeper writes) and a search sweeper's ``params``
    (from a job's ``.hydra/hydra.yaml``); None if neither file tells."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    sweep_dir = Path(sweep_dir)
    keys, known = set(), False
    if (sweep_dir / "multirun.yaml").is_file():
        task = OmegaConf.select(OmegaConf.load(sweep_dir / "multirun.yaml"), "hydra.overrides.task") or []
        keys |= {o.key_or_group for o in OverridesParser.create().parse_overrides(list(task)) if o.is_sweep_override()}
        known = True
    job = next(iter(sorted(sweep_dir.glob("*/.hydra/hydra.yaml"))), None)
    if job is not None:
        keys |= set(OmegaConf.select(OmegaConf.load(job), "hydra.sweeper.params") or {})
        known = known or bool(keys)
    return keys if known else None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def collect(sweep_dir: Path) -> list[dict]:
    """One row per finished job; ``overrides`` lists only the overrides the sweep varies (the same
    columns from the first job on), or, where that is unknown, those that differ between jobs."""
    results = [(p.parent.name, json.loads(p.read_text())) for p in sorted(sweep_dir.glob("*/result.json"))]
    keys = swept_keys(sweep_dir)
    if keys is not None:
        varying = lambda o: _key(o) in keys                                     # noqa: E731
    else:
        shared = set.intersection(*(set(d.get("overrides", [])) for _, d in results)) if len(results) > 1 else set()
        varying = lambda o: o not in shared                                     # noqa: E731
    rows = []
    for job, data in results:
        overrides = " ".join(o for o in data.get("overrides", []) if varying(o))
        if data.get("status") == "failed":
            rows.append({"job": job, "status": "failed", "overrides": overrides, "best_acc": "", "best_epoch": "",
                         "final_test_acc": "", "epochs": "", "run_seconds": "", "error": data.get("error", ""),
                         "metric": ""})
            continue
        rows.append({"job": job, "status": data.get("status", "completed"), "overrides": overrides,
                     "best_acc": data["best_metric"], "best_epoch": data["best_epoch"],
                     "final_test_acc": data["final"].get("test_acc", ""), "epochs": data["epochs"],
                     "run_seconds": data["run_seconds"], "error": "", "metric": data["metric"]})
    rows.sort(key=lambda r: (r["status"] == "failed", -(r["best_acc"] or 0.0)))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank if row["status"] != "failed" else ""
    return rows


def short_numbers(overrides: str) -> str:
    """``optimizer.lr=0.0012345678901234`` as ``optimizer.lr=0.001235`` (4 significant digits)."""
    return NUMBER.sub(lambda m: f"{float(m.group()):.4g}", overrides)


def markdown(rows: list[dict]) -> str:
    metric = next((r["metric"] for r in rows if r["metric"]), "test_acc")
    head = ["rank", "job", "overrides", f"best {metric}", "best epoch", "final test acc", "epochs", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        overrides = short_numbers(r["overrides"]) or "(none)"
        if r["status"] == "failed":
            lines.append(f"| - | {r['job']} | {overrides} | failed: {r['error'].replace('|', '/')} | | | | |")
            continue
        final = f"{r['final_test_acc']:.2%}" if r["final_test_acc"] not in ("", None) else ""
        lines.append(f"| {r['rank']} | {r['job']} | {overrides} | {r['best_acc']:.2%} | "
                     f"{r['best_epoch']} | {final} | {r['epochs']} | {r['run_seconds']:.1f} |")
    return "\n".join(lines)


def write_summary(sweep_dir: str | Path) -> tuple[list[dict], str]:
    """Rebuild ``sweep_summary.csv`` and ``sweep_summary.md`` in ``sweep_dir``; returns rows and Markdown."""
    sweep_dir = Path(sweep_dir)
    lock = os.open(sweep_dir, os.O_RDONLY)          # the directory itself is the lock: no lock file left
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = collect(sweep_dir)
        table = markdown(rows)
        with replace_atomically(sweep_dir / "sweep_summary.csv") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        with replace_atomically(sweep_dir / "sweep_summary.md") as f:
            f.write(table + "\n")
    finally:
        os.close(lock)
    return rows, table
