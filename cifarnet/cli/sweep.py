"""The summary table of a sweep: one row per job, written at the sweep directory.

Each job writes its own ``result.json``; after each job the summary is rebuilt from every
``result.json`` under the sweep directory while holding a lock file, so with parallel launchers
the last job to finish writes the complete table.
"""
from __future__ import annotations

import csv
import fcntl
import json
from pathlib import Path

from ..files import replace_atomically

COLUMNS = ["rank", "job", "overrides", "best_acc", "best_epoch", "final_test_acc", "epochs", "run_seconds"]


def collect(sweep_dir: Path) -> list[dict]:
    """One row per finished job; ``overrides`` lists only the overrides that differ between jobs."""
    results = [(p.parent.name, json.loads(p.read_text())) for p in sorted(sweep_dir.glob("*/result.json"))]
    shared = set.intersection(*(set(d.get("overrides", [])) for _, d in results)) if len(results) > 1 else set()
    rows = []
    for job, data in results:
        rows.append({"job": job, "overrides": " ".join(o for o in data.get("overrides", []) if o not in shared),
                     "best_acc": data["best_metric"], "best_epoch": data["best_epoch"],
                     "final_test_acc": data["final"].get("test_acc", ""), "epochs": data["epochs"],
                     "run_seconds": data["run_seconds"], "metric": data["metric"]})
    rows.sort(key=lambda r: -r["best_acc"])
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def markdown(rows: list[dict]) -> str:
    metric = rows[0]["metric"] if rows else "test_acc"
    head = ["rank", "job", "overrides", f"best {metric}", "best epoch", "final test acc", "epochs", "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        final = f"{r['final_test_acc']:.2%}" if r["final_test_acc"] != "" else ""
        lines.append(f"| {r['rank']} | {r['job']} | {r['overrides'] or '(none)'} | {r['best_acc']:.2%} | "
                     f"{r['best_epoch']} | {final} | {r['epochs']} | {r['run_seconds']:.1f} |")
    return "\n".join(lines)


def write_summary(sweep_dir: str | Path) -> tuple[list[dict], str]:
    """Rebuild ``sweep_summary.csv`` and ``sweep_summary.md`` in ``sweep_dir``; returns rows and Markdown."""
    sweep_dir = Path(sweep_dir)
    with open(sweep_dir / ".summary.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = collect(sweep_dir)
        table = markdown(rows)
        with replace_atomically(sweep_dir / "sweep_summary.csv") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        with replace_atomically(sweep_dir / "sweep_summary.md") as f:
            f.write(table + "\n")
    return rows, table
