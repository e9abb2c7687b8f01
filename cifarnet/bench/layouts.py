"""Which convolution layout is fastest on this machine: the blocking limit, A/B in one process.

    python -m cifarnet.bench.layouts                          # ResNet-32, batch 128: limits 16 (default), 0, 32
    python -m cifarnet.bench.layouts --limits 16,0 --pairs 20 --json layouts.json

The ``numpy`` variant of ``conv2d`` gathers one patch per block of output pixels (1x2, or 2x2 for
the narrowest: ``choose_block``) for stride-1
layers with up to ``BLOCK_MAX_CHANNELS`` input channels (:mod:`cifarnet.functional.conv`); 0
blocks nothing, 16 blocks ResNet-32's first stage, 32 its first two. Which limit is fastest
depends on the machine (on one AMD EPYC, blocking at 16 made the ResNet-32 step 0.93x; on a Zen 4,
not blocking made it 0.97x to 1.03x: no clear winner). Differences of a few percent drown in the drift between
fresh processes on a shared machine, so this times the limits inside one process, on one model
and one batch, alternating step by step (training as ``trainer.workers`` sets it, and evaluation
batches of 500), and reports each limit's median step and its median ratio to the first limit's
step of the same round. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..functional import conv
from . import machine_description
from .models import CifarnetRunner
from .settings import compare_values

DEFAULT_LIMITS = (16, 0, 32)


def compare_limits(limits: list[int], pairs: int, model: str = "resnet32", batch: int = 128,
                   eval_rounds: int = 3) -> list[dict]:
    """Each limit's median step (ms), its median per-round ratio to ``limits[0]``, and its
    evaluation throughput (img/s), timed in turn in this process (:func:`cifarnet.bench.settings.compare_values`);
    the limit is restored."""
    runner = CifarnetRunner(model, batch)
    rows = compare_values(conv, "BLOCK_MAX_CHANNELS", limits, pairs, runner, eval_rounds, runner.x_eval.shape[0])
    return [{"limit": r["value"], "default": r["default"], "step_ms": r["step_ms"], "ratio": r["ratio"],
             "eval_img_per_s": r["eval_img_per_s"]} for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.layouts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limits", default=",".join(map(str, DEFAULT_LIMITS)),
                        help="blocking limits to compare, comma-separated; ratios are to the first")
    parser.add_argument("--pairs", type=int, default=12, help="alternating rounds of one step per limit")
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        limits = [int(v) for v in args.limits.split(",")]
    except ValueError:
        parser.error(f"--limits takes whole numbers separated by commas, got {args.limits!r}")
    if len(set(limits)) != len(limits) or min(limits) < 0 or args.pairs < 1:
        parser.error("--limits: distinct numbers >= 0; --pairs: at least 1")
    rows = compare_limits(limits, args.pairs, args.model, args.batch)
    print(f"{machine_description()}; {args.model}, batch {args.batch}, {args.pairs} alternating steps per limit")
    print(f"{'block up to C':>13} {'step ms':>8} {'ratio':>6} {'eval img/s':>10}")
    for r in rows:
        mark = "  (default)" if r["default"] else ""
        print(f"{r['limit']:>13} {r['step_ms']:8.1f} {r['ratio']:6.3f} {r['eval_img_per_s']:10.0f}{mark}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "model": args.model, "batch": args.batch,
                       "pairs": args.pairs, "limits": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
