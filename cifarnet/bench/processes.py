"""A training step split between processes against the same step split between threads.

    python -m cifarnet.bench.processes                       # ResNet-32, batch 128: 2x1 against 1x2
    python -m cifarnet.bench.processes --processes 2 --workers 1 --rounds 5 --model resnet20
    python -m cifarnet.bench.processes --transport shm mpi   # both transports, and threads

Each round times, in fresh processes and alternating, the step of ``trainer.processes=P
trainer.workers=W`` on each ``--transport`` (``shm``: P ranks on a shared-memory world, as the
launcher starts them; ``mpi``: ``mpiexec -n P``; each rank its share of the batch on W threads:
forward, loss, backward, the gradient allreduce and the SGD update, batch norm synchronised) and the
step of one process with ``P*W`` threads, each after a warm-up; it reports the median step of each
and their ratios per round. ``mpi`` needs the ``[mpi]`` extra; run it on an idle machine.
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
        from ..distributed.shm import SharedMemoryCommunicator, in_shared_world

        comm = SharedMemoryCommunicator.from_environment() if in_shared_world() else MPICommunicator()
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


def _run_shared(command: list[str], processes: int) -> float:
    """``command`` as ``processes`` ranks of a shared-memory world; rank 0's median."""
    from ..distributed.shm import create_world, remove_world, world_environment

    world = create_world(processes)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    ranks: list[subprocess.Popen] = []
    try:
        ranks += [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(env, **world_environment(world, rank, processes)))
                 for rank in range(processes)]
        outputs = [rank.communicate(timeout=1800) for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
        remove_world(world)
    if any(rank.returncode for rank in ranks):
        raise RuntimeError(f"{' '.join(command)} failed:\n" + "".join(err for _, err in outputs))
    return json.loads(outputs[0][0].strip().splitlines()[-1])["median_ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.processes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="threads per process")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round, after the warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transport", nargs="+", choices=("shm", "mpi"), default=["shm"],
                        help="the processes' transports to time (default: shm)")
    parser.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    from ..distributed.launch import find_mpiexec

    mpiexec = find_mpiexec() if "mpi" in args.transport else None
    common = [sys.executable, "-m", "cifarnet.bench.processes", "--child", "--model", args.model, "--batch",
              str(args.batch), "--steps", str(args.steps)]
    threads = args.processes * args.workers
    ranks = [*common, "--workers", str(args.workers), "--as-rank"]
    print(f"{args.model}, batch {args.batch}, {args.steps} steps after {WARM_UP_STEPS} of warm-up, "
          f"{args.rounds} rounds; {machine_description()}")
    split: dict[str, list[float]] = {t: [] for t in args.transport}
    threaded: list[float] = []
    for round_ in range(args.rounds):
        for transport in args.transport:
            split[transport].append(_run([mpiexec, "-n", str(args.processes), *ranks]) if transport == "mpi"
                                    else _run_shared(ranks, args.processes))
        threaded.append(_run([*common, "--workers", str(threads)]))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{args.processes} processes x {args.workers} threads ({t}) {split[t][-1]:.1f} ms" for t in split)
            + f", 1 process x {threads} threads {threaded[-1]:.1f} ms; ratios "
            + ", ".join(f"{t} {split[t][-1] / threaded[-1]:.3f}" for t in split), flush=True)
    b = statistics.median(threaded)
    for transport, times in split.items():
        a = statistics.median(times)
        print(f"median step: {args.processes} processes x {args.workers} threads ({transport}) {a:.1f} ms; 1 process "
              f"x {threads} threads {b:.1f} ms; ratio {a / b:.3f} (per round: "
              f"{', '.join(f'{s / t:.3f}' for s, t in zip(times, threaded, strict=True))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
