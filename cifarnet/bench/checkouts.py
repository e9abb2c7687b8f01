"""Did a change make cifarnet slower? Two checkouts timed in turn, in fresh processes, alternating.

    git worktree add /tmp/cifarnet-before <commit>          # the code to compare against
    python -m cifarnet.bench.checkouts /tmp/cifarnet-before . --models resnet32 --pairs 8 --steps 15
    python -m cifarnet.bench.checkouts /tmp/cifarnet-before . --models simplecnn --json checkouts.json
    python -m cifarnet.bench.checkouts /tmp/cifarnet-before . --models resnet32 --workers 1   # one thread

Each pair runs ``python -m cifarnet.bench.models --no-torch --rounds 1`` once in the first checkout,
then once in the second, each with its own directory as the working directory and first on
``PYTHONPATH``, so each imports its own ``cifarnet`` and the machine's drift (tens of percent
within minutes on shared machines) falls on both alike. The report gives each checkout's median
training step, evaluation throughput and peak memory, the median over pairs of the second's step
time divided by the first's (below 1: the second is faster), and in how many pairs the second was
faster. Differences of a few percent need many pairs (``docs/performance.md`` used 8 to 20); its
"no regression" rows on Zen 3 follow this protocol (the first of them ran as a shell loop before this
command existed). Both checkouts need the ``bench.models`` command
line of November 2026 or later (``--no-torch``, ``--steps``, ``--json``). Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from . import machine_description

Runner = Callable[[Path, str, int], dict]


def check_checkout(path: Path) -> Path:
    """``path`` resolved, if it holds a cifarnet source tree; otherwise ``ValueError`` saying why."""
    path = path.expanduser().resolve()
    if not (path / "cifarnet" / "__init__.py").is_file():
        raise ValueError(f"{path} is not a cifarnet checkout (no cifarnet/__init__.py there); "
                         "make one with: git worktree add <dir> <commit>")
    return path


def models_command(model: str, steps: int, out: Path, workers: int | None = None) -> list[str]:
    """The ``cifarnet.bench.models`` command of one round: ``steps`` (0: its default), ``workers``
    training threads (None: its default, the model's recommended setting)."""
    command = [sys.executable, "-m", "cifarnet.bench.models", "--no-torch", "--models", model, "--rounds", "1",
               "--json", str(out)]
    if steps:
        command += ["--steps", str(steps)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return command


def run_models_bench(checkout: Path, model: str, steps: int, workers: int | None = None) -> dict:
    """One round of ``cifarnet.bench.models`` in ``checkout``: its ``cifarnet`` result for ``model``
    (``step_ms``, ``eval_img_per_s``, ``peak_rss_mb``, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        command = models_command(model, steps, out, workers)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout),
                                                                        os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"cifarnet.bench.models failed in {checkout} (exit {done.returncode}):\n"
                               + done.stderr[-2000:])
        return json.loads(out.read_text())["results"][0]["cifarnet"]


def summarise(first: list[dict], second: list[dict]) -> dict:
    """Medians of each side's pairs, and the second's step time over the first's, pair by pair.

    Args:
        first, second: one ``bench.models`` result per pair (``step_ms``, ``eval_img_per_s``,
            ``peak_rss_mb``), in the order they ran.
    """
    if not first or len(first) != len(second):
        raise ValueError("summarise needs the same number (at least one) of results on each side")

    def side(rows: list[dict]) -> dict:
        return {"step_ms": statistics.median(r["step_ms"] for r in rows),
                "eval_img_per_s": statistics.median(r["eval_img_per_s"] for r in rows),
                "peak_rss_mb": [min(r["peak_rss_mb"] for r in rows), max(r["peak_rss_mb"] for r in rows)],
                "step_ms_per_pair": [r["step_ms"] for r in rows]}

    steps = [b["step_ms"] / a["step_ms"] for a, b in zip(first, second, strict=True)]
    evals = [b["eval_img_per_s"] / a["eval_img_per_s"] for a, b in zip(first, second, strict=True)]
    return {"first": side(first), "second": side(second), "pairs": len(first),
            "step_ratio": statistics.median(steps), "second_faster": sum(r < 1 for r in steps),
            "eval_ratio": statistics.median(evals)}


def compare(first: Path, second: Path, model: str, pairs: int, steps: int = 0,
            runner: Runner = run_models_bench, progress: Callable[[str], None] = print) -> dict:
    """``pairs`` rounds of (first, second), each a fresh process; :func:`summarise` of them."""
    a, b = [], []
    for i in range(pairs):
        a.append(runner(first, model, steps))
        b.append(runner(second, model, steps))
        progress(f"{model} pair {i + 1}/{pairs}: {a[-1]['step_ms']:.1f} ms, {b[-1]['step_ms']:.1f} ms")
    return summarise(a, b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.checkouts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="the checkout to compare against (the code before a change)")
    parser.add_argument("second", type=Path, help="the checkout under test (the code after it)")
    parser.add_argument("--models", nargs="+", default=["simplecnn", "resnet32"])
    parser.add_argument("--pairs", type=int, default=8, help="alternating pairs of fresh processes")
    parser.add_argument("--steps", type=int, default=0, help="training steps per process (default: bench.models')")
    parser.add_argument("--workers", type=int, default=None,
                        help="training threads in both checkouts (default: bench.models', the model's setting)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.steps < 0 or (args.workers is not None and args.workers < 1):
        parser.error("--pairs: at least 1; --steps: 0 (the default) or more; --workers: at least 1")
    try:
        first, second = check_checkout(args.first), check_checkout(args.second)
    except ValueError as err:
        parser.error(str(err))
    print(f"{machine_description()}\nfirst: {first}\nsecond: {second}")
    results = {}
    for model in args.models:
        results[model] = r = compare(first, second, model, args.pairs, args.steps,
                                     runner=partial(run_models_bench, workers=args.workers))
        print(f"{model}: step {r['first']['step_ms']:.1f} -> {r['second']['step_ms']:.1f} ms (medians), "
              f"second / first {r['step_ratio']:.3f} per pair, second faster in {r['second_faster']} of "
              f"{r['pairs']}; evaluation {r['first']['eval_img_per_s']:.0f} -> {r['second']['eval_img_per_s']:.0f} "
              f"img/s ({r['eval_ratio']:.3f} per pair); peak RSS {r['first']['peak_rss_mb']} -> "
              f"{r['second']['peak_rss_mb']} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "first": str(first), "second": str(second),
                       "workers": args.workers, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
