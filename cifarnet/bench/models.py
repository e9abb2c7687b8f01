"""Training and evaluation speed of the reference models, with PyTorch side by side if installed.

    python -m cifarnet.bench.models                          # SimpleCNN (batch 64) and ResNet-32 (128)
    python -m cifarnet.bench.models --models resnet32 --rounds 5 --json bench.json
    python -m cifarnet.bench.models --no-torch --breakdown   # per-layer forward/backward times
    python -m cifarnet.bench.models --models resnet32 --workers 1   # training unsplit, one thread
    python -m cifarnet.bench.models --models resnet32 --static-buffers   # trainer.static_buffers=true
    python -m cifarnet.bench.models --models airbench94 --batch 1024  # airbench's recipe and batch

For each model it reports the median training-step time (forward, loss, backward, SGD update on
one fixed random batch, after warm-up, with the batch split between threads as each model's
config recommends: ``trainer.workers``, and one BLAS thread per worker, as the runner computes),
training and evaluation images per second (batches of
500 through the inference path evaluation uses), and the peak resident memory during training.
When ``torch`` is importable the same measurements run on equivalent PyTorch models
(``cifarnet.bench.torch_reference``). Every round runs each framework in a fresh process of its
own, alternating, and the ratio of the medians is printed with each round's ratio. ``--breakdown``
adds the time of each top-level layer's forward and backward, so the next optimisation is obvious.

airbench94 (batch 1024 by default) steps with its recipe's optimizer (airbench's decoupled SGD
with its parameter groups) and summed, label-smoothed loss, its whitening layer fitted to the
batch; its PyTorch twin (:mod:`cifarnet.bench.torch_airbench`) runs in channels-last layout, as
the published script does. Each model's arithmetic rate is reported too: the multiply-adds of its
convolution and linear layers in a training step (forward, input and weight gradients where they
are needed) over the step time, beside this machine's float32 matrix-product rate measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np

from ..backend import to_numpy
from ..experiment import make_backend
from ..inference import infer
from ..losses import SoftmaxCrossEntropy
from ..models import build_model, fit_to_data, model_description
from ..optim import SGD
from ..training import train_step
from ..training.plan import TrainingPlan
from . import machine_description

DEFAULT_BATCH = {"simplecnn": 64, "airbench94": 1024}
DEFAULT_WORKERS = {"simplecnn": 1}    # as conf/model/*.yaml recommend (trainer.workers); None: one per core
EVAL_BATCH = 500
AIRBENCH_GROUPS = [{"kind": "batchnorm", "lr_scale": 64.0}, {"match": "whiten.b", "frozen_after_epochs": 3}]
WARM_UP_S = 2.0          # each timing process first runs training steps for this long (at least 3)


def _batch(backend, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    return backend.asarray(x), backend.asarray(rng.integers(0, 10, batch))


class CifarnetRunner:
    """One model on one backend, ready to time steps."""

    def __init__(self, name: str, batch: int, backend_name: str = "numpy", workers: int | None = None,
                 static_buffers: bool = False):
        self.workers = workers                                 # training threads (cifarnet.parallel)
        self.static_buffers = static_buffers                   # trainer.static_buffers
        self.backend = make_backend({"name": backend_name})   # as the experiment runner sets it up
        self.model = build_model(model_description(name), seed=0)
        self.loss, self.opt = SoftmaxCrossEntropy(), SGD(lr=0.01, momentum=0.9)
        self.x, self.y = _batch(self.backend, batch)
        if name == "airbench94":                               # its recipe's optimizer and loss
            fit_to_data(self.model, to_numpy(self.x))
            self.loss = SoftmaxCrossEntropy(0.2, "sum")
            self.opt = SGD(lr=11.5, momentum=0.85, nesterov=True, weight_decay=0.0153, decoupled=True,
                           groups=AIRBENCH_GROUPS)
            self.opt.batch_size = batch
        self.model.to(self.backend)
        self.x_eval, _ = _batch(self.backend, EVAL_BATCH, seed=1)

    def step(self) -> float:
        start = time.perf_counter()
        train_step(self.model, self.loss, self.opt, self.x, self.y, self.workers, static_buffers=self.static_buffers)
        self.backend.synchronize()
        return time.perf_counter() - start

    def eval_batch(self) -> float:
        start = time.perf_counter()
        infer(self.model, self.x_eval)                # what evaluation runs (cifarnet.training.evaluate)
        self.backend.synchronize()
        return time.perf_counter() - start


class TorchRunner:
    """The equivalent PyTorch model (NCHW), CPU."""

    def __init__(self, name: str, batch: int):
        import torch

        from . import torch_airbench
        from .torch_reference import build

        self.torch, self.layout, self.reduction, self.smoothing = torch, torch.contiguous_format, "mean", 0.0
        if name == "airbench94":
            self.model = torch_airbench.build().float()
            self.opt = torch_airbench.optimizer(self.model, batch)
            self.layout, self.reduction, self.smoothing = torch.channels_last, "sum", 0.2
        else:
            self.model = build(name)
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.model = self.model.to(memory_format=self.layout)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, 32, 32, generator=g).to(memory_format=self.layout)
        self.y = torch.randint(0, 10, (batch,), generator=g)
        self.x_eval = torch.randn(EVAL_BATCH, 3, 32, 32, generator=g).to(memory_format=self.layout)

    def step(self) -> float:
        torch = self.torch
        start = time.perf_counter()
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(self.model(self.x), self.y, label_smoothing=self.smoothing,
                                          reduction=self.reduction).backward()
        self.opt.step()
        return time.perf_counter() - start

    def eval_batch(self) -> float:
        start = time.perf_counter()
        self.model.eval()
        with self.torch.no_grad():
            self.model(self.x_eval)
        return time.perf_counter() - start


def training_multiply_adds(model, input_shape=(32, 32, 3)) -> int:
    """Multiply-adds of one image's training step in the convolution and linear layers (whitening
    included): each one's forward, its weight gradient where the weights train, its input gradient
    unless it reads the images. Shapes come from running the inference nodes on one image."""
    from ..inference import trace
    from ..inference.plan import run_node

    nodes, _ = trace(model)
    values = {0: np.zeros((1, *input_shape), dtype=np.float32)}
    total = 0
    for node in nodes:
        values[node.output] = out = run_node(node, [values[i] for i in node.inputs])
        layer = node.layer
        if node.kind in ("conv", "whitening"):
            kh, kw = layer.kernel_size
            forward = out.size * kh * kw * layer.in_channels
        elif node.kind == "linear":
            forward = out.size * layer.in_features
        else:
            continue
        total += forward * (1 + ("W" in layer.params) + (node.inputs[0] != 0))
    return int(total)


def sgemm_rate(size: int = 4096, repeats: int = 3) -> float:
    """This machine's float32 matrix-product rate (GFLOP/s): the best of ``repeats`` products of two
    ``size x size`` matrices with NumPy's BLAS on every core."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def layer_breakdown(runner: CifarnetRunner, repeats: int = 3) -> list[tuple[str, float, float]]:
    """Median forward and backward milliseconds of each top-level layer over ``repeats`` steps,
    training on one thread (``workers=1``, restored afterwards), so that each layer's time is
    its whole-batch time: the training plan's nodes (:mod:`cifarnet.training.plan`) timed and
    added up by the top-level layer they belong to (a batch norm fused with the ReLU after it
    counts for the batch norm's layer)."""
    plan = TrainingPlan.of(runner.model)
    step: dict[tuple[str, str], float] = defaultdict(float)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    workers, runner.workers = runner.workers, 1

    def clock(position: int, direction: str, started: float) -> None:
        runner.backend.synchronize()
        step[(plan.owners[position], direction)] += time.perf_counter() - started

    forward, backward = plan.forward, plan.backward
    plan.forward = lambda *a, **k: forward(*a, clock=clock, **k)          # instance attributes shadow
    plan.backward = lambda *a, **k: backward(*a, clock=clock, **k)
    try:
        runner.step()
        for _ in range(repeats):
            step.clear()
            runner.step()
            for key, seconds in step.items():
                times[key].append(seconds)
    finally:
        runner.workers = workers
        del plan.__dict__["forward"], plan.__dict__["backward"]
    layers = runner.model.children
    return [(name, 1e3 * statistics.median(times[(name, "fwd")] or [0.0]),
             1e3 * statistics.median(times[(name, "bwd")] or [0.0])) for name in layers]


def timed_run(framework: str, name: str, batch: int, backend: str, steps: int, eval_batches: int,
              workers: int | None = None, preload: str | None = None, static_buffers: bool = False) -> dict:
    """Run one framework's timings in a fresh process (see :func:`_timing_child`), with ``preload``
    (a shared library, e.g. jemalloc) in its ``LD_PRELOAD``."""
    code = ("from cifarnet.bench.models import _timing_child; "
            f"_timing_child({framework!r}, {name!r}, {batch}, {backend!r}, {steps}, {eval_batches}, {workers!r}, "
            f"{static_buffers!r})")
    env = dict(os.environ, LD_PRELOAD=preload) if preload else None
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "timing child failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _timing_child(framework: str, name: str, batch: int, backend: str, steps: int, eval_batches: int,
                  workers: int | None = None, static_buffers: bool = False) -> None:
    """Warm up, time ``steps`` training steps, note the peak RSS, then time ``eval_batches``
    evaluation batches; print the results as one JSON line."""
    if framework != "torch":                           # as the runner computes: one BLAS thread per worker
        from ..blas import limited_blas_threads
        from ..parallel import BLAS_THREADS_PER_WORKER

        with limited_blas_threads(BLAS_THREADS_PER_WORKER):
            return _time_runner(CifarnetRunner(name, batch, backend, workers, static_buffers), steps, eval_batches)
    _time_runner(TorchRunner(name, batch), steps, eval_batches)


def _time_runner(runner, steps: int, eval_batches: int) -> None:
    warm_until = time.perf_counter() + WARM_UP_S       # warm-up: first-touch allocations, thread pools,
    for done in range(100):                            # PyTorch's kernel selection
        runner.step()
        if done >= 2 and time.perf_counter() > warm_until:
            break
    step_times = [runner.step() for _ in range(steps)]
    peak = peak_rss_of_this_process_mb()              # training only: before the 500-image eval batches
    runner.eval_batch()
    eval_times = [runner.eval_batch() for _ in range(eval_batches)]
    print(json.dumps({"step_s": step_times, "eval_s": eval_times, "peak_rss_mb": peak}))


def peak_rss_of_this_process_mb() -> float:
    """High-water resident set size of this process (``VmHWM``; ``ru_maxrss`` can carry the value
    a parent had when it forked), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def measure(name: str, batch: int, rounds: int, steps: int, eval_batches: int, backend: str, with_torch: bool,
            breakdown: bool, workers: int | None = None, torch_preload: str | None = None,
            static_buffers: bool = False) -> dict:
    """Time ``name`` in ``rounds`` rounds; each round runs each framework in its own fresh process.

    One process per framework and round, alternating: the machine's drift then hits both alike,
    and neither library's idle worker threads (OpenBLAS and OpenMP spin for a while after each
    parallel region) steal cores from the other, as they do when both run in one process.
    """
    frameworks = ["cifarnet"] + (["torch"] if with_torch else [])
    runs: dict[str, list[dict]] = defaultdict(list)
    for _ in range(rounds):
        for key in frameworks:
            runs[key].append(timed_run(key, name, batch, backend, steps, eval_batches, workers,
                                       torch_preload if key == "torch" else None, static_buffers))
    result = {"model": name, "batch": batch, "backend": backend, "workers": workers, "torch_preload": torch_preload,
              "static_buffers": static_buffers,
              "train_gflop_per_step": round(2 * batch * training_multiply_adds(
                  build_model(model_description(name), seed=0)) / 1e9, 1)}
    for key in frameworks:
        step = statistics.median(t for run in runs[key] for t in run["step_s"])
        evals = statistics.median(t for run in runs[key] for t in run["eval_s"])
        result[key] = {"step_ms": round(1e3 * step, 1), "train_img_per_s": round(batch / step, 1),
                       "eval_img_per_s": round(EVAL_BATCH / evals, 1),
                       "steps_timed": sum(len(run["step_s"]) for run in runs[key]),
                       "peak_rss_mb": round(max(run["peak_rss_mb"] for run in runs[key]), 1),
                       "round_step_ms": [round(1e3 * statistics.median(run["step_s"]), 1) for run in runs[key]]}
    if with_torch:
        result["round_step_ratios"] = [round(c / t, 3) for c, t in zip(result["cifarnet"]["round_step_ms"],
                                                                        result["torch"]["round_step_ms"], strict=True)]
    if breakdown:
        runner = CifarnetRunner(name, batch, backend)
        result["layers"] = [{"layer": n, "fwd_ms": round(f, 2), "bwd_ms": round(b, 2)}
                            for n, f, b in layer_breakdown(runner)]
    return result


def print_report(results: list[dict], peak: float | None = None) -> None:
    print(f"machine: {machine_description()}")
    if peak is not None:
        print(f"float32 matrix product (4096^2, NumPy's BLAS, every core): {peak:.0f} GFLOP/s")
    head = (f"{'model':<10} {'batch':>5} {'framework':<10} {'step ms':>9} {'train img/s':>12} {'eval img/s':>11} "
            f"{'peak MB':>8}")
    print(head)
    print("-" * len(head))
    for res in results:
        for key in ("cifarnet", "torch"):
            if key in res:
                r = res[key]
                print(f"{res['model']:<10} {res['batch']:>5} {key:<10} {r['step_ms']:>9.1f} "
                      f"{r['train_img_per_s']:>12,.0f} "
                      f"{r['eval_img_per_s']:>11,.0f} {r['peak_rss_mb']:>8,.0f}")
        if "torch" in res:
            c, t = res["cifarnet"], res["torch"]
            print(f"{'':<10} {'':>5} {'ratio':<10} {c['step_ms'] / t['step_ms']:>8.2f}x "
                  f"{'':>12} {c['eval_img_per_s'] / t['eval_img_per_s']:>10.2f}x "
                  f"{c['peak_rss_mb'] / t['peak_rss_mb']:>7.2f}x   (cifarnet / PyTorch)")
            print(f"{'':<10} {'':>5} {'per round':<10} "
                  + " ".join(f"{r:.2f}x" for r in res["round_step_ratios"]) + "   (training step)")
        rates = [f"{key} {res['train_gflop_per_step'] / (res[key]['step_ms'] / 1e3):.0f}"
                 for key in ("cifarnet", "torch") if key in res]
        share = f" ({rates[0].split()[1]} = {100 * float(rates[0].split()[1]) / peak:.0f}% of the matrix product's)" \
            if peak else ""
        print(f"{'':<10} {'':>5} {'GFLOP/s':<10} {res['train_gflop_per_step']} GFLOP a step: "
              + ", ".join(rates) + share)
    for res in results:
        if res.get("torch_preload") and "torch" in res:
            print(f"PyTorch ran with LD_PRELOAD={res['torch_preload']}")
    print("cifarnet training threads per batch (trainer.workers): "
          + ", ".join(f"{res['model']} {res.get('workers') or 'one per core'}" for res in results))
    for res in results:
        if "layers" in res:
            print(f"\nper-layer time, {res['model']} batch {res['batch']}, training on one thread (median ms):")
            total_f = sum(row["fwd_ms"] for row in res["layers"])
            total_b = sum(row["bwd_ms"] for row in res["layers"])
            print(f"  {'layer':<16} {'forward':>8} {'backward':>9}")
            for row in res["layers"]:
                print(f"  {row['layer']:<16} {row['fwd_ms']:>8.2f} {row['bwd_ms']:>9.2f}")
            print(f"  {'total':<16} {total_f:>8.2f} {total_b:>9.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["simplecnn", "resnet32"])
    parser.add_argument("--batch", type=int, help="batch size (default: 64 for simplecnn, 128 otherwise)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (a fresh process each)")
    parser.add_argument("--steps", type=int, default=0, help="training steps per round (default by model)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--workers", type=int, help="training threads per batch (default: the model's recommended "
                                                    "trainer.workers: 1 for simplecnn, one per core otherwise)")
    parser.add_argument("--static-buffers", action="store_true",
                        help="cifarnet's steps in buffers allocated once (trainer.static_buffers=true)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--breakdown", action="store_true", help="per-layer forward/backward times")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--torch-preload", metavar="LIB",
                        help="LD_PRELOAD for the PyTorch processes only, e.g. jemalloc: "
                             "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (apt-get install libjemalloc2)")
    args = parser.parse_args(argv)
    with_torch = not args.no_torch and torch_available()
    if not args.no_torch and not with_torch:
        print("torch is not importable: measuring cifarnet alone (pip install torch in another venv to compare)")
    results = []
    for name in args.models:
        batch = args.batch or DEFAULT_BATCH.get(name, 128)
        steps = args.steps or (40 if name == "simplecnn" else 5)
        eval_batches = 8 if name == "simplecnn" else 2
        workers = args.workers if args.workers is not None else DEFAULT_WORKERS.get(name)
        results.append(measure(name, batch, args.rounds, steps, eval_batches, args.backend, with_torch,
                               args.breakdown, workers, args.torch_preload, args.static_buffers))
    peak = sgemm_rate()
    print_report(results, peak)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_description(), "sgemm_gflop_per_s": round(peak, 1), "results": results},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
