"""How much of the gradient reduction the backward pass hides: a training step over a slow network.

    python -m cifarnet.bench.overlap --model resnet20 --batch 64 --mb-per-s 50 --latency-ms 1

    python -m cifarnet.bench.overlap --latency-ms 20 --mb-per-s 1e9 --batch-norm   # 20 ms a reduction, all

One process stands for rank 0 of two (:class:`DelayedCommunicator`: the other rank holds the same
gradients, so a sum doubles them) on a network modelled as one link: each reduction takes
``latency + bytes / bandwidth`` and the link carries one at a time, in the order they were started.
By default batch norm's sums cross without delay and the step is timed with one blocking
``allreduce`` after the backward pass and with the plan's buckets (:mod:`cifarnet.training.overlap`)
reduced while it runs. With ``--batch-norm`` its sums take the link too, and the two steps timed
are the step as it was before issue 33 (batch norm's two exchanges a forward pass, the blocking
allreduce) and as it is (one exchange, :func:`cifarnet.functional.batchnorm.train_statistics`, and
the buckets). A step on a network without delay takes turns with them, step by step; the report
gives each median and what the network adds to it. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import queue
import statistics
import threading
import time

import numpy as np

from ..comm import Communicator
from ..losses import SoftmaxCrossEntropy
from ..models import build_model, model_description
from ..training.step import forward_backward
from . import machine_description


class _Pending:
    def __init__(self):
        self.done = threading.Event()

    def wait(self) -> None:
        self.done.wait()


class DelayedCommunicator(Communicator):
    """Rank 0 of two whose peer contributes what it does (sums double), over a link on which a
    reduction of ``b`` bytes takes ``latency_s + b / bytes_per_s``, one at a time, in order.

    ``batch_norm``: ``sum`` (batch norm's statistics) takes the link too (else it crosses at once);
    ``one_exchange``: batch norm sends its statistics in one exchange a forward pass, as every
    communicator now has it (False: ``statistics_exchanges`` 2, as before issue 33).

    Attributes: ``reductions``: ``(started, finished, bytes)`` per reduction on the link (perf_counter).
    """

    rank, size, leader = 0, 2, True

    def __init__(self, latency_s: float = 0.0, bytes_per_s: float = float("inf"), batch_norm: bool = False,
                 one_exchange: bool = True):
        self.latency_s, self.bytes_per_s = latency_s, bytes_per_s
        self.batch_norm, self.statistics_exchanges = batch_norm, 1 if one_exchange else 2
        self.reductions: list[tuple[float, float, int]] = []
        self._link: queue.Queue = queue.Queue()
        threading.Thread(target=self._carry, daemon=True).start()

    def _seconds(self, buffer) -> float:
        return self.latency_s + buffer.nbytes / self.bytes_per_s

    def _carry(self) -> None:
        while True:
            buffer, pending, started = self._link.get()
            time.sleep(self._seconds(buffer))
            buffer *= 2
            self.reductions.append((started, time.perf_counter(), buffer.nbytes))
            pending.done.set()

    def sum(self, *values) -> tuple:
        if self.batch_norm:                           # packed into one buffer, as MPI sends it
            self.allreduce(np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values]))
        return tuple(v * 2 for v in values)

    def iallreduce(self, buffer) -> _Pending:
        pending = _Pending()
        self._link.put((buffer, pending, time.perf_counter()))
        return pending

    def allreduce(self, buffer) -> None:
        self.iallreduce(buffer).wait()


def step_seconds(model, x, y, comm: Communicator, overlap: bool) -> float:
    """Seconds of one forward-backward step (one thread) over ``comm``."""
    start = time.perf_counter()
    forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1, comm=comm, total=2 * len(y), overlap=overlap)
    return time.perf_counter() - start


def alternating(model, x, y, conditions: dict, steps: int) -> dict[str, float]:
    """Median step seconds of each of ``conditions`` (name -> (communicator, overlap)), the
    conditions taking turns step by step (so the machine's drift falls on all alike), after one
    step of each to warm up."""
    times: dict[str, list[float]] = {name: [] for name in conditions}
    for round_ in range(steps + 1):
        for name, (comm, overlap) in conditions.items():
            seconds = step_seconds(model, x, y, comm, overlap)
            if round_:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64, help="this process's share of the global batch")
    parser.add_argument("--mb-per-s", type=float, default=50.0, help="the link's bandwidth, MB/s")
    parser.add_argument("--latency-ms", type=float, default=1.0, help="the delay of every reduction")
    parser.add_argument("--steps", type=int, default=15, help="steps of each kind, taking turns")
    parser.add_argument("--batch-norm", action="store_true",
                        help="batch norm's sums take the link too; compare the step before issue 33 with today's")
    parser.add_argument("--json", help="also write the results here")
    opts = parser.parse_args(argv)
    from ..blas import limited_blas_threads
    from ..memory import keep_freed_memory

    keep_freed_memory()
    model = build_model(model_description(opts.model), seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((opts.batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, opts.batch)
    link = (opts.latency_ms / 1e3, opts.mb_per_s * 1e6)
    slow = DelayedCommunicator(*link, batch_norm=opts.batch_norm)
    before = DelayedCommunicator(*link, batch_norm=True, one_exchange=False) if opts.batch_norm else slow
    with limited_blas_threads(1):
        medians = alternating(model, x, y, {"free": (DelayedCommunicator(), True), "blocking": (before, False),
                                            "overlapped": (slow, True)}, opts.steps)
    per_step = {name: len(comm.reductions) // (opts.steps + 1) for name, comm in (("blocking", before),
                                                                                  ("overlapped", slow))}
    free, blocking, overlapped = medians["free"], medians["blocking"], medians["overlapped"]
    grads_mb = model.store.grads.nbytes / 1e6
    report = {"machine": machine_description(), "model": opts.model, "batch": opts.batch,
              "gradient_mb": round(grads_mb, 3), "mb_per_s": opts.mb_per_s, "latency_ms": opts.latency_ms,
              "step_ms_no_delay": round(free * 1e3, 1), "step_ms_blocking": round(blocking * 1e3, 1),
              "step_ms_overlapped": round(overlapped * 1e3, 1), "batch_norm_delayed": opts.batch_norm,
              "reductions_per_step_blocking": per_step["blocking"],
              "reductions_per_step_overlapped": per_step["overlapped"],
              "added_ms_blocking": round((blocking - free) * 1e3, 1),
              "added_ms_overlapped": round((overlapped - free) * 1e3, 1)}
    print(report["machine"])
    print(f"{opts.model}, batch {opts.batch} a process, {grads_mb:.2f} MB of gradients over {opts.mb_per_s:g} MB/s "
          f"and {opts.latency_ms:g} ms a reduction (one reduction of the whole buffer: "
          f"{(opts.latency_ms + grads_mb / opts.mb_per_s * 1e3):.0f} ms)")
    before_name = "before (batch norm's two exchanges, blocking allreduce)" if opts.batch_norm else "blocking allreduce"
    now_name = "now (one exchange, buckets during the backward pass)" if opts.batch_norm else \
        "buckets during the backward pass"
    print(f"step without delay {report['step_ms_no_delay']} ms; {before_name} {report['step_ms_blocking']} ms "
          f"(+{report['added_ms_blocking']}, {per_step['blocking']} reductions a step); {now_name} "
          f"{report['step_ms_overlapped']} ms (+{report['added_ms_overlapped']}, {per_step['overlapped']} reductions)")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
