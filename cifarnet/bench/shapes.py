"""The matrix products and element-wise passes of a ResNet-32 step, one shape at a time.

    python -m cifarnet.bench.shapes                  # one BLAS thread, a 64-image part (the training split)
    python -m cifarnet.bench.shapes --threads 2 --images 128 --json shapes.json

For each stage's 3x3 convolution (16, 32 and 64 channels at 32x32, 16x16 and 8x8) it times the three
products of im2col convolution, forward ``(NHW, 9C) @ (9C, C)``, weight gradient ``(9C, NHW) @ (NHW,
C)`` and column gradient ``(NHW, C) @ (C, 9C)``, each also in the transposed orientation (the same
product computed as ``(B.T @ A.T).T``, which BLAS may run faster for narrow shapes), in GFLOP/s; and
the element-wise passes batch norm and ReLU make over that stage's activations (``add``,
``multiply``, ``maximum``, a per-channel sum), in ns per element; and each stage's convolution as
cifarnet runs it (the ``numpy`` variant of ``conv2d``, gathers and chunking included), per pass
(forward, weight gradient, input gradient), in each layout it can take: plain im2col, blocked (one
patch per 2x2 block of output pixels, or per two neighbours in a row: :mod:`cifarnet.arrays.blocks`)
or Winograd (:mod:`cifarnet.arrays.winograd`), with the layout the variant picks by default on a
thread computing alone marked; and, when PyTorch is importable (run it from an environment
with both, as for :mod:`cifarnet.bench.models`), PyTorch's convolution of the same shapes per pass
beside them. Medians of ``--repeats`` after a
warm-up; the machine is printed with them. Meant for comparing machines (AMD, Intel) and spotting
the shape that holds a step back; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial

import numpy as np

from ..blas import limited_blas_threads
from . import machine_description

STAGES = ((16, 32), (32, 16), (64, 8))           # channels, image side


def _median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _transposed(a, b):
    """``a @ b`` computed as ``(b.T @ a.T).T``."""
    return (b.T @ a.T).T


def products(images: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for c, side in STAGES:
        m, k = images * side * side, 9 * c
        cols = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, c), dtype=np.float32)
        d = rng.standard_normal((m, c), dtype=np.float32)
        operands = {"forward (NHW,9C)@(9C,C)": (cols, w), "weight grad (9C,NHW)@(NHW,C)": (cols.T, d),
                    "column grad (NHW,C)@(C,9C)": (d, w.T)}
        cases = {name: (partial(np.matmul, a, b), partial(_transposed, a, b)) for name, (a, b) in operands.items()}
        for name, (plain, transposed) in cases.items():
            flops = 2 * m * k * c
            a, b = _median_s(plain, repeats), _median_s(transposed, repeats)
            rows.append({"channels": c, "side": side, "product": name, "gflops": flops / a / 1e9,
                         "gflops_transposed": flops / b / 1e9, "ms": 1e3 * a, "ms_transposed": 1e3 * b})
    return rows


def passes(images: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for c, side in STAGES:
        x = rng.standard_normal((images * side * side, c), dtype=np.float32)
        y, out = rng.standard_normal(x.shape, dtype=np.float32), np.empty_like(x)
        zero = np.float32(0)
        cases = {"add": partial(np.add, x, y, out=out), "multiply": partial(np.multiply, x, y, out=out),
                 "maximum (ReLU)": partial(np.maximum, x, zero, out=out), "per-channel sum": partial(np.sum, x, axis=0)}
        for name, fn in cases.items():
            rows.append({"channels": c, "side": side, "pass": name, "ns_per_element": 1e9 * _median_s(fn, repeats)
                         / x.size})
    return rows


def convolutions(images: int, repeats: int) -> list[dict]:
    """Forward, weight-gradient and input-gradient time (ms) of each stage's 3x3 convolution per
    layout: im2col with one pixel, 2x2 or 1x2 blocks per patch, and Winograd (``layout``: ``"1x1"``,
    ``"2x2"``, ``"1x2"``, ``"winograd"``; ``default``: the one this thread takes by itself)."""
    from ..functional.conv import Conv2dNumpy, choose_block, use_winograd

    rng = np.random.default_rng(2)
    rows = []
    for c, side in STAGES:
        x = rng.standard_normal((images, side, side, c), dtype=np.float32)
        w = (0.1 * rng.standard_normal((3, 3, c, c))).astype(np.float32)
        dout = rng.standard_normal(x.shape, dtype=np.float32)
        default = "winograd" if use_winograd(c, c, (3, 3), 1, 1) else "{}x{}".format(*choose_block(c, (3, 3), 1,
                                                                                                   side, side))
        for layout in ("1x1", "2x2", "1x2", "winograd"):
            how = {"winograd": True} if layout == "winograd" else {
                "winograd": False, "block": tuple(int(b) for b in layout.split("x"))}
            _, ctx = Conv2dNumpy.forward(x, w, None, padding=1, **how)
            forward = _median_s(partial(Conv2dNumpy.forward, x, w, None, padding=1, **how), repeats)
            weight = _median_s(partial(Conv2dNumpy.backward, ctx, dout, need_dx=False), repeats)
            both = _median_s(partial(Conv2dNumpy.backward, ctx, dout), repeats)
            rows.append({"channels": c, "side": side, "layout": layout, "default": layout == default,
                         "forward_ms": 1e3 * forward, "weight_grad_ms": 1e3 * weight,
                         "input_grad_ms": 1e3 * max(0.0, both - weight), "total_ms": 1e3 * (forward + both)})
    return rows


def torch_convolutions(images: int, repeats: int, threads: int) -> list[dict] | None:
    """The same convolutions in PyTorch (NCHW, ``threads`` intra-op threads), per pass, in ms;
    None when PyTorch is not importable. The weight and input gradients are timed apart through
    ``aten.convolution_backward`` with one output asked for at a time."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    backward = torch.ops.aten.convolution_backward
    generator = torch.Generator().manual_seed(2)
    rows = []
    with torch.no_grad():
        for c, side in STAGES:
            x = torch.randn(images, c, side, side, generator=generator)
            w = 0.1 * torch.randn(c, c, 3, 3, generator=generator)
            dout = torch.randn(images, c, side, side, generator=generator)

            def grad(mask, x=x, w=w, dout=dout):
                return backward(dout, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

            forward = _median_s(partial(torch.nn.functional.conv2d, x, w, padding=1), repeats)
            weight = _median_s(partial(grad, [False, True, False]), repeats)
            inputs = _median_s(partial(grad, [True, False, False]), repeats)
            rows.append({"channels": c, "side": side, "forward_ms": 1e3 * forward, "weight_grad_ms": 1e3 * weight,
                         "input_grad_ms": 1e3 * inputs, "total_ms": 1e3 * (forward + weight + inputs)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.shapes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images per product (64: one part of a split batch)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    with limited_blas_threads(args.threads):
        found = {"machine": machine_description(), "images": args.images, "threads": args.threads,
                 "products": products(args.images, args.repeats), "passes": passes(args.images, args.repeats),
                 "convolutions": convolutions(args.images, args.repeats),
                 "torch_convolutions": torch_convolutions(args.images, args.repeats, args.threads)}
    print(f"{found['machine']}; {args.images} images, {args.threads} BLAS thread(s), medians of {args.repeats}")
    print(f"{'C':>3} {'HxW':>6}  {'product':30} {'GFLOP/s':>8} {'transposed':>10}  {'ms':>7}")
    for r in found["products"]:
        print(f"{r['channels']:>3} {r['side']:>3}x{r['side']:<2}  {r['product']:30} {r['gflops']:8.1f} "
              f"{r['gflops_transposed']:10.1f}  {r['ms']:7.2f}")
    print(f"{'C':>3} {'HxW':>6}  {'pass':30} {'ns/element':>10}")
    for r in found["passes"]:
        print(f"{r['channels']:>3} {r['side']:>3}x{r['side']:<2}  {r['pass']:30} {r['ns_per_element']:10.2f}")
    print(f"{'C':>3} {'HxW':>6}  {'3x3 conv layout':30} {'forward':>8} {'weight grad':>11} {'input grad':>10} "
          f"{'total ms':>8}")
    names = {"1x1": "plain im2col", "2x2": "blocked 2x2", "1x2": "blocked 1x2", "winograd": "Winograd F(4x4, 3x3)"}
    layouts = [(names[r["layout"]] + (" (default)" if r["default"] else ""), r)
               for r in found["convolutions"]]
    layouts += [("PyTorch (NCHW)", r) for r in found["torch_convolutions"] or []]
    for layout, r in sorted(layouts, key=lambda pair: pair[1]["channels"]):
        print(f"{r['channels']:>3} {r['side']:>3}x{r['side']:<2}  {layout:30} {r['forward_ms']:8.2f} "
              f"{r['weight_grad_ms']:11.2f} {r['input_grad_ms']:10.2f} {r['total_ms']:8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(found, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
