"""Does a tuning setting pay? Training steps timed in one process, the setting's values in turn.

    python -m cifarnet.bench.settings cifarnet.functional.conv.WINOGRAD_MIN_CHANNELS_ALONE 24 16 --workers 1 --batch 64
    python -m cifarnet.bench.settings cifarnet.arrays.winograd.SEPARABLE_MAX_BYTES 0 16384 --model resnet20
    python -m cifarnet.bench.settings cifarnet.functional.batchnorm_act.CHUNK_BYTES 2097152 4194304 --json bn.json

Fresh processes in turn (:mod:`cifarnet.bench.checkouts`) drift by a few percent from pair to
pair, which hides changes of 1 to 3%. This times one model on one batch in one process instead, a
module-level setting (a tuning constant read at call time) set to each value before each step:
two warm-up steps per value, then ``--pairs`` rounds of one step per value, the order reversed
every other round (ABBA), so that a slow or fast stretch of the machine falls on every value alike.
It reports each value's median step, the median over rounds of its step divided by the first
value's step of the same round, in how many rounds it was faster than the first, and its
evaluation throughput; the setting is restored afterwards, also when a step fails. To see the
method's own noise, compare a value with itself (``... CHUNK_BYTES 2097152 2097152``): the ratio
stays within about 1% of 1 on an idle machine (docs/performance.md). Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import statistics
import sys
from types import ModuleType
from typing import Any, Protocol

from . import machine_description
from .models import CifarnetRunner

WARM_UP_STEPS = 2


class Runner(Protocol):
    def step(self) -> float: ...

    def eval_batch(self) -> float: ...


def round_order(values: list[Any], round_index: int) -> list[int]:
    """The indices of ``values`` in the order round ``round_index`` times them: in turn, reversed
    every other round (ABBA for two values)."""
    order = list(range(len(values)))
    return order if round_index % 2 == 0 else order[::-1]


def compare_values(module: ModuleType, name: str, values: list[Any], pairs: int, runner: Runner,
                   eval_rounds: int = 0, images_per_eval: int = 0) -> list[dict]:
    """Each value of ``module.name``: its median step (ms), median per-round ratio to the first
    value's step, rounds faster than the first, and (``eval_rounds`` > 0) evaluation images per
    second; ``module.name`` is restored afterwards.

    Raises:
        AttributeError: ``module`` has no setting ``name`` (a typo would otherwise time nothing).
    """
    if not hasattr(module, name):
        raise AttributeError(f"{module.__name__} has no setting {name!r}")
    default = getattr(module, name)
    steps: list[list[float]] = [[] for _ in values]
    evals: list[list[float]] = [[] for _ in values]
    try:
        for value in values:                                  # warm-up: each value's first allocations
            setattr(module, name, value)
            for _ in range(WARM_UP_STEPS):
                runner.step()
        for r in range(pairs):
            for i in round_order(values, r):
                setattr(module, name, values[i])
                steps[i].append(runner.step())
        for r in range(eval_rounds):
            for i in round_order(values, r):
                setattr(module, name, values[i])
                evals[i].append(runner.eval_batch())
    finally:
        setattr(module, name, default)
    first = steps[0]
    rows = []
    for value, times, eval_times in zip(values, steps, evals, strict=True):
        ratios = [t / f for t, f in zip(times, first, strict=True)]
        rows.append({"value": value, "default": value == default, "step_ms": 1e3 * statistics.median(times),
                     "ratio": statistics.median(ratios), "faster_rounds": sum(q < 1 for q in ratios),
                     "eval_img_per_s": images_per_eval / statistics.median(eval_times) if eval_times else None})
    return rows


def resolve(target: str) -> tuple[ModuleType, str]:
    """``"package.module.NAME"`` -> (the module, ``"NAME"``)."""
    module_name, _, name = target.rpartition(".")
    if not module_name or not name:
        raise ValueError(f"a setting is named module.NAME, e.g. cifarnet.functional.conv.CHUNK_BYTES; got {target!r}")
    return importlib.import_module(module_name), name


def parse_value(text: str) -> Any:
    """A Python literal (``16``, ``2097152``, ``0.5``, ``True``, ``(1, 2)``, ``None``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"a value is a Python literal (a number, True, None, a tuple), got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.settings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", help="module.NAME, e.g. cifarnet.functional.conv.CHUNK_BYTES")
    parser.add_argument("values", nargs="+", help="two or more values; ratios are to the first")
    parser.add_argument("--pairs", type=int, default=12, help="rounds of one step per value")
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="training threads (default: one per core)")
    parser.add_argument("--eval-rounds", type=int, default=3, help="evaluation batches per value (0: none)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    try:
        module, name = resolve(args.setting)
        values = [parse_value(v) for v in args.values]
    except (ValueError, ImportError) as err:
        parser.error(str(err))
    if len(values) < 2 or args.pairs < 1 or args.batch < 1 or args.eval_rounds < 0:
        parser.error("give two or more values; --pairs and --batch at least 1, --eval-rounds at least 0")
    if not hasattr(module, name):
        parser.error(f"{module.__name__} has no setting {name!r}")
    runner = CifarnetRunner(args.model, args.batch, workers=args.workers)
    rows = compare_values(module, name, values, args.pairs, runner, args.eval_rounds, runner.x_eval.shape[0])
    workers = "one thread per core" if args.workers is None else f"{args.workers} thread(s)"
    print(f"{machine_description()}; {args.model}, batch {args.batch}, {workers}, {args.pairs} rounds of one step "
          f"per value, order reversed every other round")
    print(f"{name:>28} {'step ms':>8} {'ratio':>6} {'faster':>7} {'eval img/s':>10}")
    for r in rows:
        mark = "  (default)" if r["default"] else ""
        evaluated = "" if r["eval_img_per_s"] is None else f"{r['eval_img_per_s']:10.0f}"
        print(f"{r['value']!r:>28} {r['step_ms']:8.1f} {r['ratio']:6.3f} {r['faster_rounds']:>3}/{args.pairs:<3} "
              f"{evaluated}{mark}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "setting": args.setting, "model": args.model,
                       "batch": args.batch, "workers": args.workers, "pairs": args.pairs,
                       "values": [dict(r, value=repr(r["value"])) for r in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
