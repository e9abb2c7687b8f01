"""How fast the data side is, without any model: loading, statistics, and batches per second.

    python -m cifarnet.bench.data --root data            # real CIFAR-10 in data/cifar-10-batches-py
    python -m cifarnet.bench.data --source synthetic      # no files needed

Prints the time to load the dataset, to compute its normalisation statistics, and the pipeline's
throughput in images per second for augmented float32 training batches (median over repeats of
a full pass), both prepared inline and through the background prefetch thread.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from ..backend import get_backend
from ..data import Augmentation, BatchLoader, Normalization, load_dataset
from . import machine_description


def measure(loader: BatchLoader, repeats: int, max_batches: int) -> list[float]:
    """Images per second of ``repeats`` passes over at most ``max_batches`` batches each."""
    rates = []
    for r in range(repeats):
        start, images = time.perf_counter(), 0
        for i, (_, y) in enumerate(loader.epoch(r)):
            images += len(y)
            if i + 1 >= max_batches:
                break
        loader.backend.synchronize()
        rates.append(images / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="cifar10", choices=["cifar10", "synthetic"])
    parser.add_argument("--root", default="data", help="CIFAR-10 root (holds cifar-10-batches-py/)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-batches", type=int, default=10**9, help="cap on batches per pass")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    options = {"root": args.root, "download": False} if args.source == "cifar10" else {}
    dataset = load_dataset(args.source, **options)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    norm = Normalization.from_images(dataset.train.images)
    stats_s = time.perf_counter() - t0
    backend = get_backend(args.backend)

    results = {"machine": machine_description(), "source": args.source, "backend": args.backend,
               "train_images": len(dataset.train), "test_images": len(dataset.test),
               "load_seconds": round(load_s, 3), "stats_seconds": round(stats_s, 3), "batch_size": args.batch_size}
    print(f"machine: {results['machine']}")
    print(f"loaded {len(dataset.train) + len(dataset.test):,} images ({args.source}) in {load_s:.2f} s; "
          f"normalisation statistics in {stats_s:.2f} s")
    print(f"{'pipeline (augmented float32 batches of ' + str(args.batch_size) + ')':<52} {'median img/s':>12}  runs")
    for label, prefetch in (("prepared inline", 0), ("background thread (prefetch 2)", 2)):
        loader = BatchLoader(dataset.train, args.batch_size, norm, backend=backend, augmentation=Augmentation(),
                             shuffle=True, drop_last=True, seed=0, prefetch=prefetch)
        rates = measure(loader, args.repeats, args.max_batches)
        results[f"images_per_second_prefetch{prefetch}"] = round(statistics.median(rates))
        print(f"{label:<52} {statistics.median(rates):>12,.0f}  {', '.join(f'{r:,.0f}' for r in rates)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
