"""A training step split between processes (MPI) against the same step split between threads.

    python -m cifarnet.bench.processes                       # ResNet-32, batch 128: 2x1 against 1x2
    python -m cifarnet.bench.processes --processes 2 --workers 1 --rounds 5 --model resnet20

Each round times, in fresh processes and alternating, the step of ``trainer.processes=P
trainer.workers=W`` (``mpiexec -n P``, each rank its share of the batch on W threads: forward,
loss, backward, the gradient allreduce and the SGD update, batch norm synchronised) and the step of
one process with ``P*W`` threads, each after a warm-up; it reports the median step of each and
their ratio per round. Needs the ``[mpi]`` extra; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from ..blas import limited_blas_threads
from ..comm import LOCAL
from ..losses import SoftmaxCrossEntropy
from ..memory import keep_freed_memory
from ..models import build_model, model_description
from ..optim import SGD
from ..parallel import part_edges
from ..training.step import forward_backward, read_back, thread_group
from . import machine_description

WARM_UP_STEPS = 3


def time_steps(model: str, batch: int, workers: int, steps: int, comm=LOCAL) -> list[float]:
    """Seconds of each of ``steps`` training steps (after the warm-up) of this process's share."""
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    y_all = rng.integers(0, 10, batch)
    start, stop = part_edges(batch, comm.size)[comm.rank]
    x, y = x_all[start:stop], y_all[start:stop]
    net = build_model(model_description(model), seed=0)
    loss_fn, opt = SoftmaxCrossEntropy(), SGD(lr=0.01, momentum=0.9)
    group = thread_group(len(y), workers, np, comm)
    times = []
    for i in range(WARM_UP_STEPS + steps):
        comm.barrier()
        began = time.perf_counter()
        result = forward_backward(net, loss_fn, x, y, workers, group=group, comm=comm, total=batch)
        read_back(result, y, net.store.grads, comm)
        opt.step(net, result.grads)
        comm.barrier()
        if i >= WARM_UP_STEPS:
            times.append(time.perf_counter() - began)
    return times


def _child(args) -> None:
    """One timed configuration; prints the median step in ms (rank 0). Freed memory is kept for
    reuse (:mod:`cifarnet.memory`), as the experiment runner does on the NumPy backend."""
    keep_freed_memory()
    comm = LOCAL
    if args.as_rank:
        from ..distributed.mpi import MPICommunicator

        comm = MPICommunicator()
    with limited_blas_threads(1):              # every thread of every process computes with one BLAS thread
        times = time_steps(args.model, args.batch, args.workers, args.steps, comm)
    if comm.rank == 0:
        print(json.dumps({"median_ms": 1e3 * statistics.median(times)}))


def _run(command: list[str]) -> float:
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])["median_ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.processes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="threads per process")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round, after the warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    from ..distributed.launch import find_mpiexec

    mpiexec = find_mpiexec()
    common = [sys.executable, "-m", "cifarnet.bench.processes", "--child", "--model", args.model, "--batch",
              str(args.batch), "--steps", str(args.steps)]
    threads = args.processes * args.workers
    print(f"{args.model}, batch {args.batch}, {args.steps} steps after {WARM_UP_STEPS} of warm-up, "
          f"{args.rounds} rounds; {machine_description()}")
    split, threaded = [], []
    for round_ in range(args.rounds):
        split.append(_run([mpiexec, "-n", str(args.processes), *common, "--workers", str(args.workers), "--as-rank"]))
        threaded.append(_run([*common, "--workers", str(threads)]))
        print(f"round {round_ + 1}: {args.processes} processes x {args.workers} threads {split[-1]:.1f} ms, "
              f"1 process x {threads} threads {threaded[-1]:.1f} ms, ratio {split[-1] / threaded[-1]:.3f}", flush=True)
    a, b = statistics.median(split), statistics.median(threaded)
    print(f"median step: {args.processes} processes x {args.workers} threads {a:.1f} ms; 1 process x {threads} "
          f"threads {b:.1f} ms; ratio {a / b:.3f} (per round: "
          f"{', '.join(f'{s / t:.3f}' for s, t in zip(split, threaded, strict=True))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
