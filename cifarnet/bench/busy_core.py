"""A training epoch on an idle machine and beside a busy process, in one or more checkouts.

    git worktree add /tmp/cifarnet-before <commit>
    python -m cifarnet.bench.busy_core /tmp/cifarnet-before . --rounds 3 -- data.root=data data.download=false

Each round runs, in each checkout in turn, ``python -m cifarnet trainer.epochs=1 plots=false``
(plus the arguments after ``--``: by default SimpleCNN with its recommended settings, all of
CIFAR-10) twice: alone, and beside a busy process (one thread spinning in Python, at the priority
``--nice`` gives, 0 by default), as a job of someone else's would be. (On the Intel Xeon, a
spinner at ``nice -n 19`` left both old and new code at their idle speed; at 0 it slowed the old
code 2.4x.) It reports each checkout's median
epoch time (``metrics.csv``'s ``epoch_seconds``: the training steps, not evaluation or start-up)
idle and busy, and their ratio. Issue 34 found 8.8 s idle against 67 to 78 s beside another job,
when one worker thread computed with OpenBLAS's default of one thread per core. Run it on an
otherwise idle machine.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from . import machine_description
from .checkouts import check_checkout

SPIN = "while True:\n    pass\n"


def epoch_seconds(checkout: Path, args: list[str], busy: bool, nice: int = 0,
                  spinners: list[int] | None = None) -> float:
    """One training epoch of ``python -m cifarnet`` in ``checkout``: its ``epoch_seconds``; ``busy``:
    beside a spinning process at priority ``nice`` (its pid appended to ``spinners``, if given; it is
    killed and reaped before this returns)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))}
    spinner = subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", SPIN]) if busy else None
    if spinner is not None and spinners is not None:
        spinners.append(spinner.pid)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "cifarnet", "trainer.epochs=1", "plots=false", "trainer.progress=false",
                       f"hydra.run.dir={tmp}/run", *args]
            done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"the epoch failed in {checkout} (exit {done.returncode}):\n{done.stderr[-2000:]}")
            with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
                return float(next(csv.DictReader(f))["epoch_seconds"])
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="cifarnet source trees (git worktree add ...)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--nice", type=int, default=0, help="the busy process's priority (0: as the run's)")
    parser.add_argument("--json", type=Path, help="write the results here")
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    opts = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    checkouts = [check_checkout(p) for p in opts.checkouts]
    times: dict[str, dict[str, list[float]]] = {str(c): {"idle": [], "busy": []} for c in checkouts}
    spinners: list[int] = []
    for round_ in range(opts.rounds):
        for checkout in checkouts:
            for state in ("idle", "busy"):
                seconds = epoch_seconds(checkout, extra, busy=state == "busy", nice=opts.nice,
                                         spinners=spinners)
                times[str(checkout)][state].append(seconds)
                print(f"round {round_ + 1}: {checkout} {state}: {seconds:.1f} s", flush=True)
    print(machine_description())
    report = {"machine": machine_description(), "args": extra, "rounds": opts.rounds, "nice": opts.nice,
              "spinner_pids": spinners, "checkouts": {}}
    for checkout, got in times.items():
        idle, busy = statistics.median(got["idle"]), statistics.median(got["busy"])
        report["checkouts"][checkout] = {"idle_s": got["idle"], "busy_s": got["busy"], "idle_median_s": idle,
                                         "busy_median_s": busy, "busy_over_idle": round(busy / idle, 2)}
        print(f"{checkout}: epoch {idle:.1f} s idle, {busy:.1f} s beside a busy process: {busy / idle:.2f}x "
              f"(idle {', '.join(f'{s:.1f}' for s in got['idle'])}; busy {', '.join(f'{s:.1f}' for s in got['busy'])})")
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
