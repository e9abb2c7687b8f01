"""Figures of a run or a sweep, as PNG files beside its metrics (needs matplotlib: ``[plot]``).

    python -m cifarnet.plot outputs/2026-11-26/14-52-40.815433     # one run
    python -m cifarnet.plot outputs/multirun/2026-11-26/15-00-00.1  # a sweep: all jobs compared
    python -m cifarnet.plot --compare curves.png cifarnet=run/metrics.csv pytorch=torch.csv

A run gets ``loss.png`` and ``accuracy.png`` (training and test/validation curves against epoch),
``lr_schedule.png`` (the learning rate at every step), and, from ``best_eval.json``,
``per_class_accuracy.png`` and ``confusion_matrix.png`` of the best checkpoint. A sweep gets
``sweep_test_accuracy.png``: every job's test-accuracy curve, labelled by its overrides.
``--compare OUT LABEL=CSV ...`` draws any runs' metrics files (cifarnet's ``metrics.csv``, or any
CSV with ``epoch``, ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` columns, such as
``cifarnet.bench.torch_train``'s) side by side: accuracy and loss against epoch, one colour per run.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np


class PlotError(RuntimeError):
    """Nothing to plot, or matplotlib missing; the message says which."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plots need matplotlib: pip install 'cifarnet[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def epoch_axis(ax, epochs: list[int]) -> None:
    """Whole-epoch ticks; a single epoch gets one tick in the middle, not fractions around it."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs and min(epochs) == max(epochs):
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.set_xticks([epochs[0]])


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise PlotError(f"{path} not found: is {run_dir} a cifarnet run directory?")
    with open(path) as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict], key: str) -> list[float] | None:
    values = [r.get(key, "") for r in rows]
    return [float(v) for v in values] if values and all(v != "" for v in values) else None


WIDE_RANGE = 10.0          # a loss whose largest value is this many times its smallest: log scale


def y_scale(series: list[list[float]]) -> str:
    """``"log"`` for positive values spread over more than ``WIDE_RANGE`` (one diverged epoch, a
    test loss of 88 beside 0.5, would otherwise flatten every other point), else ``"linear"``."""
    values = [v for s in series for v in s]
    if not values or min(values) <= 0:
        return "linear"
    return "log" if max(values) / min(values) > WIDE_RANGE else "linear"


def _curves(plt, rows, keys, ylabel, title, path, percent=False, scale="linear"):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    epochs = [int(r["epoch"]) for r in rows]
    for key, label in keys:
        values = _column(rows, key)
        if values is not None:
            ax.plot(epochs, [100 * v for v in values] if percent else values, marker="o", ms=3, label=label)
    ax.set_yscale(scale)
    ax.set(xlabel="epoch", ylabel=ylabel + (" (log scale)" if scale == "log" else ""), title=title)
    epoch_axis(ax, epochs)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lr_per_step(run_dir: Path, rows: list[dict]) -> tuple[list[int], list[float]]:
    """The learning rate of every step as the trainer recorded it (``lr.csv``); per epoch, from
    ``metrics.csv``, for a run without that file."""
    recorded = run_dir / "lr.csv"
    if recorded.is_file():
        with open(recorded, newline="") as f:
            steps = [(int(r["step"]), float(r["lr"])) for r in csv.DictReader(f)]
        if steps:
            return [s for s, _ in steps], [lr for _, lr in steps]
    return [int(r["step"]) for r in rows], _column(rows, "lr") or []


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's figures into ``run_dir``; returns their paths."""
    plt = _pyplot()
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise PlotError(f"{run_dir / 'metrics.csv'} has no epochs yet")
    losses = [("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test")]
    scale = y_scale([v for v in (_column(rows, key) for key, _ in losses) if v is not None])
    written = [
        _curves(plt, rows, losses, "cross-entropy loss", "Loss", run_dir / "loss.png", scale=scale),
        _curves(plt, rows, [("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test")],
                "accuracy (%)", "Accuracy", run_dir / "accuracy.png", percent=True),
    ]
    xs, lrs = _lr_per_step(run_dir, rows)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(xs, lrs)
    ax.set(xlabel="step", ylabel="learning rate", title="Learning-rate schedule")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "lr_schedule.png", dpi=110)
    plt.close(fig)
    written.append(run_dir / "lr_schedule.png")

    report_path = run_dir / "best_eval.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        names = report["class_names"]
        acc = [100 * report["per_class_accuracy"][n] for n in names]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.bar(names, acc, color="tab:blue")
        ax.axhline(100 * report["accuracy"], color="tab:red", ls="--", label=f"overall {report['accuracy']:.1%}")
        ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title=f"Per-class accuracy, best epoch ({report['epoch']})")
        ax.tick_params(axis="x", rotation=45)
        ax.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "per_class_accuracy.png", dpi=110)
        plt.close(fig)

        matrix = np.array(report["confusion_matrix"])
        fig, ax = plt.subplots(figsize=(6.8, 6.0))
        image = ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        limit = matrix.max() / 2 if matrix.size else 0
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > limit else "black")
        ax.set(xlabel="predicted class", ylabel="true class", title=f"Confusion matrix, best epoch ({report['epoch']})")
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(run_dir / "confusion_matrix.png", dpi=110)
        plt.close(fig)
        written += [run_dir / "per_class_accuracy.png", run_dir / "confusion_matrix.png"]
    return written


def plot_sweep(sweep_dir: str | Path) -> Path:
    """One figure comparing every job's test accuracy per epoch, labelled by its overrides."""
    from .sweeps import collect, short_numbers

    plt = _pyplot()
    sweep_dir = Path(sweep_dir)
    jobs = sorted((p.parent for p in sweep_dir.glob("*/metrics.csv")), key=lambda p: p.name)
    if not jobs:
        raise PlotError(f"no job directories with metrics.csv under {sweep_dir}")
    labels = {r["job"]: short_numbers(r["overrides"]) for r in collect(sweep_dir)}
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    all_epochs: list[int] = []
    for job in jobs:
        rows = read_metrics(job)
        acc = _column(rows, "test_acc")
        if acc:
            all_epochs += [int(r["epoch"]) for r in rows]
            ax.plot([int(r["epoch"]) for r in rows], [100 * a for a in acc], marker="o", ms=3,
                    label=f"{job.name}: {labels.get(job.name) or '(no overrides)'}")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"Sweep: {len(jobs)} jobs")
    epoch_axis(ax, all_epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = sweep_dir / "sweep_test_accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _labelled_csvs(pairs: list[str]) -> list[tuple[str, list[dict]]]:
    runs = []
    for pair in pairs:
        label, sep, name = pair.partition("=")
        if not sep or not label or not name:
            raise PlotError(f"{pair!r}: give each run as LABEL=path/to/metrics.csv")
        path = Path(name)
        if not path.is_file():
            raise PlotError(f"{path} not found")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "epoch" not in rows[0]:
            raise PlotError(f"{path} has no rows with an 'epoch' column")
        runs.append((label, rows))
    return runs


def compare_figure(plt, runs: list[tuple[str, list[dict]]]):
    """The figure of :func:`plot_compare` for ``(label, metrics rows)`` pairs: accuracy (left) and
    loss (right) against epoch, one colour per run, solid lines test, dashed training."""
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11.0, 4.4))
    all_epochs: list[int] = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, rows) in enumerate(runs):
        colour = colours[i % len(colours)]
        epochs = [int(r["epoch"]) for r in rows]
        all_epochs += epochs
        for ax, key, percent in ((acc_ax, "acc", True), (loss_ax, "loss", False)):
            for split, style in (("test", "-"), ("train", "--")):
                values = _column(rows, f"{split}_{key}")
                if values is not None:
                    ax.plot(epochs, [100 * v for v in values] if percent else values, style, color=colour,
                            label=f"{label}, {split}")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    losses = [v for _, rows in runs for split in ("test", "train") if (v := _column(rows, f"{split}_loss"))]
    loss_ax.set_yscale(y_scale(losses))
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss" + (" (log scale)" if y_scale(losses) == "log" else ""),
                title="Loss")
    for ax in (acc_ax, loss_ax):
        epoch_axis(ax, all_epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_compare(target: str | Path, pairs: list[str]) -> Path:
    """One figure of several runs (:func:`compare_figure`) saved to ``target``.
    ``pairs``: ``"label=metrics.csv"``."""
    plt = _pyplot()
    fig = compare_figure(plt, _labelled_csvs(pairs))
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return Path(target)


def _plot_target(target: Path) -> list[Path]:
    if (target / "metrics.csv").is_file():
        return plot_run(target)
    if list(target.glob("*/metrics.csv")):
        return [plot_sweep(target)]
    raise PlotError(f"{target} holds neither metrics.csv nor job directories with one")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    comparing = len(args) >= 3 and args[0] == "--compare"
    if not comparing and (len(args) != 1 or args[0] in ("-h", "--help", "--compare")):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        paths = [plot_compare(args[1], args[2:])] if comparing else _plot_target(Path(args[0]))
    except PlotError as err:
        print(f"cifarnet.plot: error: {err}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
