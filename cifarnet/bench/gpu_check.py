"""The one command to run when a GPU is lent: is the CuPy path right, how many launches, how fast.

    python -m cifarnet.bench.gpu_check --out docs/gpu_check.json     # 43 s on an H200 (CuPy 14.2)

Needs the ``cuda12`` (or ``cuda13``) extra on the GPU machine; PyTorch with CUDA, if importable,
adds its times and counts the kernels a step launches. Without a GPU it says so, does what the CPU
can (the kernels compiled by NVRTC, the fused variants' NumPy twins against the references, the
launch counts of :mod:`cifarnet.counting`) and exits 0. Exit status 1 when a check failed.

The JSON (``--out``): ``{"machine", "cupy", "gpu": {name, compute_capability, memory_gib, driver,
runtime} or null, "why_no_gpu", "compile": [{kernel, arch, dtype, registers, spill_stores,
spill_loads}], "variants": [{op, variant, case, dtype, on, max_rel_error, ok}], "step": [{model,
kernels, loss_rel_error, grad_rel_error, param_rel_error, read_back_ok, ok}], "static": {model, batch,
kernels, pool_mallocs_per_step: {allocated, static}, same_addresses, outputs_checked, inside_arena,
grad_rel_error, ok} or null, "launches": {"counted_on_cpu": {model: {reference, fused}}, "on_gpu":
{model/kernels: count} or null}, "timing": [{model, what, batch, kernels, framework, median_ms}],
"failed": [names of failed checks], "errors": {part or case: traceback}}``; error ratios are the
largest absolute difference over the largest absolute reference value.

Each part (``compile``, ``variants``, ``step``, ``static``, ``launches``, ``timing``; ``--skip``
leaves some out) and each case within one runs on when another raised: the exception goes into
``failed`` and its traceback into ``errors``, and the JSON is rewritten after every part, so a run
cut short keeps what it found. A crash of the process itself (a segmentation fault in a library)
cannot be caught: run it with ``python -X faulthandler`` and ``--skip`` the part that crashed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ..backend import NUMPY, cupy_available, get_backend, to_numpy, use_tf32
from ..functional import (
    batch_norm,
    batch_norm_act,
    conv2d,
    global_avg_pool,
    relu,
    sgd_update,
    softmax_cross_entropy,
    step_summary,
)
from ..functional.dispatch import FUSED, use_fused_kernels
from ..kernels import KERNELS, KernelCompileError, compile_report
from ..losses import SoftmaxCrossEntropy
from ..models import build_model, model_description
from ..models.data_init import fit_to_data
from . import machine_description


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _bn(c):
    rng = np.random.default_rng(c)
    return [rng.uniform(0.5, 2, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.2, 3, c)]


# (op, case, args, kwargs): odd shapes on purpose (batch 1, one channel, non-square, stride 2)
CASES = [
    (conv2d, "3x3 same, bias", [_r(2, 7, 9, 3), _r(3, 3, 3, 4, seed=1), _r(4, seed=2)], {"stride": 1, "padding": 1}),
    (conv2d, "stride 2, 16 channels", [_r(3, 9, 8, 16), _r(3, 3, 16, 8, seed=1), None], {"stride": 2, "padding": 1}),
    (conv2d, "1x1 stride 2, batch 1", [_r(1, 6, 6, 4), _r(1, 1, 4, 6, seed=1), None], {"stride": 2, "padding": 0}),
    (batch_norm, "images, training", [_r(4, 5, 3, 6) * 2 + 1, *_bn(6)], {"training": True}),
    (batch_norm, "features, training, batch 3", [_r(3, 5) * 3 - 1, *_bn(5)], {"training": True}),
    (batch_norm, "images, eval", [_r(3, 4, 4, 3), *_bn(3)], {"training": False}),
    (relu, "images", [_r(2, 3, 4, 5)], {}),
    (batch_norm_act, "relu, training", [_r(4, 5, 3, 6) * 2 + 1, *_bn(6)], {"training": True, "activation": "relu"}),
    (batch_norm_act, "relu after a residual", [_r(3, 4, 4, 5) * 2, *_bn(5)],
     {"training": True, "activation": "relu", "residual": _r(3, 4, 4, 5, seed=7)}),
    (batch_norm_act, "gelu, training, 40 channels", [_r(2, 5, 5, 40) * 2 - 1, *_bn(40)],
     {"training": True, "activation": "gelu"}),
    (conv2d, "3x3, dx added onto a gradient", [_r(2, 8, 8, 16), _r(3, 3, 16, 16, seed=1), None],
     {"stride": 1, "padding": 1, "backward": {"dx_add": _r(2, 8, 8, 16, seed=3)}}),
    (softmax_cross_entropy, "300 rows, smoothed", [_r(300, 10) * 3, np.arange(300) % 10], {"label_smoothing": 0.1}),
    (global_avg_pool, "images", [_r(3, 5, 7, 6)], {}),
    (sgd_update, "nesterov, decay per element", [_r(1000), _r(1000, seed=1), {"velocity": _r(1000, seed=2)}],
     {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": np.repeat([5e-4, 0.0], 500)}),
    (sgd_update, "momentum, first step", [_r(777), _r(777, seed=1), {}], {"lr": 0.1, "momentum": 0.9}),
    (step_summary, "5000 gradients, one infinite", [np.asarray(1.25), _r(300, 10), np.arange(300) % 10,
                                                    np.where(np.arange(5000) == 4321, np.inf, _r(5000))], {}),
]


def _error(got, want) -> float:
    got, want = np.asarray(to_numpy(got), dtype=np.float64), np.asarray(want, dtype=np.float64)
    same = (got == want) | (np.isnan(got) & np.isnan(want))           # infinities and NaNs where expected
    if not same.all() and not np.isfinite(got[~same]).all():
        return float("inf")
    finite = np.abs(want[np.isfinite(want)])
    with np.errstate(invalid="ignore"):                                # inf - inf where both are inf
        differences = np.where(same, 0.0, np.abs(got - want))
    return float(differences.max(initial=0.0) / max(float(finite.max(initial=0.0)), 1e-30))


def _to(backend, value, dtype):
    """A copy of ``value`` on ``backend``: float arrays as ``dtype``, integer ones as they are, dicts
    of arrays entry by entry."""
    if isinstance(value, dict):
        return {k: _to(backend, v, dtype) for k, v in value.items()}
    if not isinstance(value, np.ndarray):
        return value
    return backend.asarray(value.copy(), dtype=dtype if value.dtype.kind == "f" else None)


def check_variant(op, variant: str, case: str, args, kwargs, dtype, backend) -> dict:
    """One case through ``op``'s ``variant`` on ``backend`` against the reference (NumPy, float64):
    forward and backward (``kwargs["backward"]``: the backward's own keyword arguments), an update
    op's new parameter and state, a forward-only op's output."""
    reference, tried = op.variants["reference"], op.variants[variant]
    backward_kwargs = kwargs.get("backward", {})
    kwargs = {k: v for k, v in kwargs.items() if k != "backward"}
    ref_args, var_args = [_to(NUMPY, a, np.float64) for a in args], [_to(backend, a, dtype) for a in args]
    ref_kwargs, var_kwargs = ({k: _to(where, v, t) for k, v in kwargs.items()}
                              for where, t in ((NUMPY, np.float64), (backend, dtype)))
    if hasattr(reference, "apply"):
        reference.apply(*ref_args, **ref_kwargs)
        tried.apply(*var_args, **var_kwargs)
        errors = [_error(var_args[0], ref_args[0])] + [_error(var_args[2][k], ref_args[2][k]) for k in ref_args[2]]
        return _verdict(op, variant, case, dtype, backend, errors)
    out_ref, saved_ref = reference.forward(*ref_args, **ref_kwargs)
    out_var, saved_var = tried.forward(*var_args, **var_kwargs)
    errors = [_error(out_var, out_ref)]
    errors += [_error(a, b) for a, b in zip(var_args[1:], ref_args[1:], strict=True)
               if isinstance(b, np.ndarray) and b.dtype.kind == "f"]
    if not hasattr(reference, "backward"):
        return _verdict(op, variant, case, dtype, backend, errors)
    dout = _r(*np.shape(out_ref), seed=99)
    dx_ref, grads_ref = reference.backward(saved_ref, dout, **{k: _to(NUMPY, v, np.float64)
                                                               for k, v in backward_kwargs.items()})
    dx_var, grads_var = tried.backward(saved_var, backend.asarray(dout, dtype=dtype),
                                       **{k: _to(backend, v, dtype) for k, v in backward_kwargs.items()})
    pairs = zip(dx_var, dx_ref, strict=True) if isinstance(dx_ref, tuple) else [(dx_var, dx_ref)]   # with a residual's
    errors += [_error(a, b) for a, b in pairs] + [_error(grads_var[k], grads_ref[k]) for k in grads_ref]
    return _verdict(op, variant, case, dtype, backend, errors)


def _verdict(op, variant: str, case: str, dtype, backend, errors: list[float]) -> dict:
    worst = max(errors)
    tolerance = 1e-10 if dtype == np.float64 else 2e-4
    return {"op": op.name, "variant": variant, "case": case, "dtype": np.dtype(dtype).name, "on": backend.name,
            "max_rel_error": worst, "ok": worst <= tolerance}


def check_step(model_name: str, backend, fused: bool) -> dict:
    """One training step on ``backend`` against NumPy's, float32, the same weights: the loss, the
    gradients, the step's read-back (loss, correct) and the weights after an SGD update. Dropout
    is off where the model has it, so both sides compute the same function."""
    from ..optim import SGD
    from ..training.step import forward_backward, read_back

    results = {}
    for where in (NUMPY, backend):
        use_fused_kernels(fused and where is backend)
        model = build_model(_without_dropout(model_name), seed=0)
        rng = np.random.default_rng(0)
        images = rng.standard_normal((16, 32, 32, 3)).astype(np.float32)
        fit_to_data(model, images)          # airbench94's whitening filters, from the step's images
        model = model.to(where)
        x = where.asarray(images)
        y = where.asarray(rng.integers(0, 10, 16))
        result = forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
        grads = to_numpy(model.store.grads).copy()
        summary = read_back(result, y, model.store.grads)
        SGD(lr=0.1, momentum=0.9, weight_decay=5e-4).step(model, result.grads)
        results[where.name] = (float(result.loss), grads, summary, to_numpy(model.store.params).copy())
    use_fused_kernels(False)
    (loss_a, grads_a, sum_a, params_a), (loss_b, grads_b, sum_b, params_b) = results["numpy"], results[backend.name]
    loss_err, grad_err, param_err = abs(loss_a - loss_b) / abs(loss_a), _error(grads_b, grads_a), _error(params_b,
                                                                                                        params_a)
    read_back_ok = abs(sum_a.loss - sum_b.loss) <= 1e-4 * abs(sum_a.loss) and sum_a.correct == sum_b.correct \
        and sum_a.finite and sum_b.finite
    return {"model": model_name, "kernels": "fused" if fused else "reference", "loss_rel_error": loss_err,
            "grad_rel_error": grad_err, "param_rel_error": param_err, "read_back_ok": read_back_ok,
            "ok": loss_err <= 1e-4 and grad_err <= 1e-2 and param_err <= 1e-3 and read_back_ok}


def _without_dropout(model_name: str) -> dict:
    description = model_description(model_name)
    return {**description, "dropout": 0.0} if "dropout" in description else description


STEP_MODELS = ("resnet20", "airbench94")    # airbench94: batch norm + GELU, whitening, max-pool


def cpu_launch_counts() -> dict:
    from ..counting import counting_backend
    from ..training.step import forward_backward, read_back

    counts = {}
    for name in ("resnet32", "simplecnn"):
        counts[name] = {}
        for kernels in ("reference", "fused"):
            use_fused_kernels(kernels == "fused")
            backend = counting_backend()
            model = build_model(model_description(name), seed=0).to(backend)
            x = backend.xp.asarray(_r(4, 32, 32, 3).astype(np.float32))
            y = backend.xp.asarray(np.arange(4) % 10)
            backend.xp.reset()
            read_back(forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1), y, model.store.grads)
            counts[name][kernels] = backend.xp.launches      # forward, loss, backward, read-back (no update)
    use_fused_kernels(False)
    return counts


def gpu_kernel_count(model_name: str, backend, batch: int) -> int | None:
    """Kernels one forward-backward launches on the GPU, from PyTorch's profiler (CUPTI records every
    kernel of the process, CuPy's included); None without PyTorch on CUDA."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from ..training.step import forward_backward

    model = build_model(model_description(model_name), seed=0).to(backend)
    x = backend.asarray(_r(batch, 32, 32, 3).astype(np.float32))
    y = backend.asarray(np.arange(batch) % 10)
    forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
    backend.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1)
        backend.synchronize()
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


def time_step(model_name: str, backend, batch: int, repeats: int = 10, static_buffers: bool = False) -> float:
    """Median ms of a training step (forward, backward, SGD) on ``backend``; one line on out-of-memory."""
    from ..optim import SGD
    from ..training import train_step

    model = build_model(model_description(model_name), seed=0).to(backend)
    x = backend.asarray(_r(batch, 32, 32, 3).astype(np.float32))
    y = backend.asarray(np.arange(batch) % 10)
    optimizer, loss_fn, times = SGD(lr=0.01, momentum=0.9), SoftmaxCrossEntropy(), []
    try:
        for i in range(repeats + 3):
            start = time.perf_counter()
            train_step(model, loss_fn, optimizer, x, y, workers=1, static_buffers=static_buffers)
            backend.synchronize()
            if i >= 3:
                times.append(1e3 * (time.perf_counter() - start))
    except backend.xp.cuda.memory.OutOfMemoryError:
        total = backend.xp.cuda.Device().mem_info[1] / 2**30
        raise SystemExit(f"cifarnet: error: out of GPU memory at batch {batch} ({model_name}; the device has "
                         f"{total:.1f} GiB): try --batch {batch // 2}") from None
    return statistics.median(times)


SECTIONS = ("compile", "variants", "step", "static", "launches", "timing")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifarnet.bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json", help="the JSON report (default: gpu_check.json)")
    parser.add_argument("--batch", type=int, default=128, help="ResNet-32 batch for the timings")
    parser.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, metavar="PART",
                        help=f"parts not to run, of: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    report: dict = {"machine": machine_description(), "failed": [], "errors": {}}
    ok, why = cupy_available()
    report["gpu"], report["why_no_gpu"] = None, None if ok else why
    try:
        import cupy
        report["cupy"] = cupy.__version__
    except ImportError:
        report["cupy"] = None
    backend = get_backend("cupy") if ok else NUMPY
    if ok:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        report["gpu"] = {"name": props["name"].decode(), "compute_capability": f"{props['major']}{props['minor']}",
                         "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
                         "driver": cupy.cuda.runtime.driverGetVersion(),
                         "runtime": cupy.cuda.runtime.runtimeGetVersion()}
    print(f"cifarnet gpu_check on {report['machine']}: " + (report["gpu"]["name"] if ok else f"no GPU ({why}); "
                                                             "running what the CPU can"), flush=True)
    archs = [f"sm_{report['gpu']['compute_capability']}"] if ok else ["sm_80", "sm_90"]
    out = Path(args.out)
    sections = [("compile", lambda: compile_section(report, archs)),
                ("variants", lambda: variants_section(report, backend, ok)),
                ("step", lambda: step_section(report, backend, ok)),
                ("static", lambda: static_section(report, backend, ok)),
                ("launches", lambda: launches_section(report, backend, ok)),
                ("timing", lambda: timing_section(report, backend, ok, args.batch))]
    for name, run in sections:
        if name not in args.skip:
            run_section(report, name, run, out)
    out.write_text(json.dumps(report, indent=2))
    for line in summary(report):
        print(line)
    print(f"written to {args.out}")
    return 1 if report["failed"] else 0


def run_section(report: dict, name: str, run, out: Path) -> None:
    """Run one part of the check; an exception is recorded (name, traceback) instead of ending the
    check, the kernel setting is put back, and the JSON is rewritten so a run cut short keeps what it
    found."""
    start = time.perf_counter()
    try:
        guarded(report, name, run)
    finally:
        use_fused_kernels(False)
    print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    out.write_text(json.dumps(report, indent=2))


def guarded(report: dict, label: str, run, *args):
    """``run(*args)``, or None with the failure recorded under ``label`` (its traceback in ``errors``)."""
    try:
        return run(*args)
    except Exception:  # noqa: BLE001 - one case failing must not hide the others
        report["errors"][label] = traceback.format_exc()
        report["failed"].append(f"{label}: {traceback.format_exc().strip().splitlines()[-1]}")
        print(f"{label}: failed\n{report['errors'][label]}", file=sys.stderr, flush=True)
        return None


def compile_section(report: dict, archs: list[str]) -> None:
    report["compile"] = []
    try:
        for kernel in KERNELS.values():
            for arch in archs:
                for dtype in (np.float32, np.float64):
                    found = compile_report(kernel, arch, dtype)
                    found.pop("log")
                    report["compile"].append(found)
    except KernelCompileError as err:
        report["failed"].append(f"compile: {err}")
    except Exception as err:  # noqa: BLE001 - no CuPy or no NVRTC library here: say so, go on
        report["compile"] = f"not run: {type(err).__name__}: {err}"


def variants_section(report: dict, backend, ok: bool) -> None:
    report["variants"] = []
    for op, case, cargs, kwargs in CASES:
        variants = [v for v in ("reference", "cupy", FUSED) if v in op.variants] if ok else [FUSED]
        for variant in variants:
            for dtype in (np.float64, np.float32):
                use_fused_kernels(variant == FUSED)
                label = f"variant {op.name}/{variant}/{case}/{np.dtype(dtype).name}"
                result = guarded(report, label, check_variant, op, variant, case, cargs, kwargs, dtype,
                                 backend if ok else NUMPY)
                if result is not None:
                    report["variants"].append(result)
                    if not result["ok"]:
                        report["failed"].append(label)


def step_section(report: dict, backend, ok: bool) -> None:
    report["step"] = []
    for model_name, fused in [(m, f) for m in STEP_MODELS for f in (False, True)] if ok else ():
        label = f"step {model_name} {'fused' if fused else 'reference'}"
        result = guarded(report, label, check_step, model_name, backend, fused)
        if result is not None:
            report["step"].append(result)
            if not result["ok"]:
                report["failed"].append(label)


def launches_section(report: dict, backend, ok: bool) -> None:
    report["launches"] = {"counted_on_cpu": cpu_launch_counts(), "on_gpu": {} if ok else None}
    for kernels in ("reference", "fused") if ok else ():
        use_fused_kernels(kernels == "fused")
        report["launches"]["on_gpu"][f"resnet32/{kernels}"] = guarded(
            report, f"launches on the GPU, {kernels}", gpu_kernel_count, "resnet32", backend, 16)


def static_section(report: dict, backend, ok: bool) -> None:
    """ResNet-20 with ``backend.kernels=fused`` and static buffers on the GPU: the plan's outputs at
    the same device addresses in three steps and inside its workspace's arena, the pool allocations a
    step makes (CuPy's allocator wrapped to count them), and the gradients against a step without."""
    report["static"] = None
    if not ok:
        return
    import cupy

    from ..layers.base import TRAIN
    from ..store import FlatStore
    from ..training.plan import TrainingPlan
    from ..training.step import forward_backward

    pool, mallocs_now = cupy.get_default_memory_pool(), [0]

    def counting_malloc(size):
        mallocs_now[0] += 1
        return pool.malloc(size)

    use_fused_kernels(True)
    rng = np.random.default_rng(4)
    x = backend.asarray(rng.standard_normal((16, 32, 32, 3)).astype(np.float32))
    y = backend.asarray(np.arange(16) % 10)
    grads, mallocs = {}, {}
    for static in (False, True):
        model = build_model(model_description("resnet20", dropout=0.0), seed=0).to(backend)
        counts = []
        for _ in range(3):
            mallocs_now[0] = 0
            cupy.cuda.set_allocator(counting_malloc)
            try:
                forward_backward(model, SoftmaxCrossEntropy(), x, y, workers=1, static_buffers=static)
                backend.synchronize()
            finally:
                cupy.cuda.set_allocator(pool.malloc)
            counts.append(mallocs_now[0])
        grads[static], mallocs[static] = to_numpy(FlatStore.of(model).grads).copy(), counts
    plan = TrainingPlan.of(model)
    workspace = plan.workspace(0)
    arena = workspace.arrays()[-1]
    addresses, inside = [], []
    for _ in range(3):
        logits, tape = plan.forward(x, TRAIN, workspace=workspace)
        outputs = [tape.outputs[i] for i, node in enumerate(plan.nodes)
                   if node.kind in ("conv", "batchnorm", "global_avg_pool")]
        addresses.append([int(out.data.ptr) for out in outputs])
        inside.append(all(arena.data.ptr <= out.data.ptr < arena.data.ptr + arena.nbytes for out in outputs))
        plan.backward(tape, backend.xp.ones_like(logits), FlatStore.of(model).grad_views, workspace=workspace)
    backend.synchronize()
    report["static"] = {"model": "resnet20", "batch": 16, "kernels": "fused",
                        "pool_mallocs_per_step": {"allocated": mallocs[False], "static": mallocs[True]},
                        "same_addresses": addresses[0] == addresses[1] == addresses[2],
                        "outputs_checked": len(addresses[0]), "inside_arena": all(inside),
                        "grad_rel_error": _error(grads[True], grads[False])}
    report["static"]["ok"] = (report["static"]["same_addresses"] and report["static"]["inside_arena"]
                              and report["static"]["grad_rel_error"] <= 1e-5)
    if not report["static"]["ok"]:
        report["failed"].append("static buffers")


def timing_section(report: dict, backend, ok: bool, batch: int) -> None:
    report["timing"] = []
    for kernels in ("reference", "fused", "fused, static buffers", "fused, TF32") if ok else ():
        use_fused_kernels(kernels != "reference")
        use_tf32(backend, "TF32" in kernels)
        try:
            median = guarded(report, f"timing {kernels}", time_step, "resnet32", backend, batch, 10,
                             "static" in kernels)
        finally:
            use_tf32(backend, False)
        if median is not None:
            report["timing"].append({"model": "resnet32", "what": "training step", "batch": batch,
                                     "kernels": kernels, "framework": "cifarnet", "median_ms": median})
    use_fused_kernels(False)
    if ok:
        report["timing"] += guarded(report, "timing torch", torch_times, batch) or []


def torch_times(batch: int) -> list[dict]:
    """PyTorch eager's ResNet-32 step on CUDA (the same architecture), if PyTorch with CUDA is importable."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    from .torch_reference import build

    model = build("resnet32").cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32, device="cuda"), torch.randint(0, 10, (batch,), device="cuda")
    rows, default_tf32 = [], torch.backends.cudnn.allow_tf32
    for tf32 in (default_tf32, not default_tf32):          # its default (TF32 convolutions), then the other
        torch.backends.cudnn.allow_tf32 = tf32
        times = []
        for i in range(13):
            torch.cuda.synchronize()
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(1e3 * (time.perf_counter() - start))
        rows.append({"model": "resnet32", "what": "training step", "batch": batch,
                     "kernels": "eager, TF32 convolutions" if tf32 else "eager, float32",
                     "framework": f"torch {torch.__version__}", "median_ms": statistics.median(times)})
    torch.backends.cudnn.allow_tf32 = default_tf32
    return rows


def summary(report: dict) -> list[str]:
    variants = report.get("variants", [])
    lines = [f"variants: {sum(v['ok'] for v in variants)} of {len(variants)} within tolerance "
             f"(on {variants[0]['on'] if variants else '-'})"]
    if isinstance(report.get("compile"), list):
        spills = [c for c in report["compile"] if c["spill_stores"] or c["spill_loads"]]
        lines.append(f"compiled: {len(report['compile'])} kernel builds, {len(spills)} with spills")
    else:
        lines.append(f"compiled: {report.get('compile', 'not run')}")
    for model, counts in report.get("launches", {}).get("counted_on_cpu", {}).items():
        lines.append(f"launches of a {model} forward-backward counted on the CPU: {counts['reference']} "
                     f"(reference), {counts['fused']} (fused)")
    for what, count in (report.get("launches", {}).get("on_gpu") or {}).items():
        lines.append(f"kernels a {what} forward-backward launched on the GPU (batch 16): {count}")
    if report.get("static"):
        st = report["static"]
        lines.append(f"static buffers: addresses kept {st['same_addresses']}, in the arena {st['inside_arena']}, "
                     f"pool allocations per step {st['pool_mallocs_per_step']}, gradients {st['grad_rel_error']:.1e}")
    lines += [f"step {s['model']} ({s['kernels']}): loss {s['loss_rel_error']:.1e}, gradients "
              f"{s['grad_rel_error']:.1e} from NumPy's" for s in report.get("step", [])]
    lines += [f"{t['framework']} {t['model']} {t['what']} (batch {t['batch']}, {t['kernels']}): "
              f"{t['median_ms']:.1f} ms" for t in report.get("timing", [])]
    lines.append("failed: " + (", ".join(report["failed"]) or "nothing"))
    return lines


if __name__ == "__main__":
    sys.exit(main())
