"""The fused kernels (:mod:`cifarnet.kernels`): every CUDA source compiles with NVRTC for sm_80 and
sm_90 without spills, runs on the CPU (``tests/cuda_shim.py``) to the numbers of its NumPy twin, and
the fused variants' launch counts; the variants themselves are in the variant harness
(``tests/test_variants.py``, variant ``cupy-fused``)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import cifarnet.functional  # noqa: F401 - registers the fused variants and their kernels
from cifarnet.kernels import KERNELS, compile_report

from .cuda_shim import COMPILER, compiled


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _conv_args(kernel: str):
    n, h, w, c, kh, kw, stride, pad = 2, 5, 6, 3, 3, 3, 2, 1
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    if kernel == "im2col":
        return 4, [_r(n, h, w, c), np.zeros((n * ho * wo, kh * kw * c)), n, h, w, c, kh, kw, stride, pad, ho, wo]
    add = int(kernel == "col2im_add")                 # onto a gradient dx already holds
    return 4, [_r(n * ho * wo, kh * kw * c), _r(n, h, w, c, seed=1), n, h, w, c, kh, kw, stride, pad, ho, wo, add]


def _bn_args(kernel: str):
    rows, c = 37, 5
    x, dout = _r(rows, c) * 2 + 1, _r(rows, c, seed=1)
    mean, invstd = x.mean(axis=0), 1 / np.sqrt(x.var(axis=0) + 1e-5)
    gamma, beta = np.random.default_rng(2).uniform(0.5, 2, c), _r(c, seed=3)
    dbeta, dgamma = dout.sum(axis=0), (dout * (x - mean)).sum(axis=0) * invstd
    return {
        "bn_stats": (c, [x, np.zeros(c), np.zeros(c), _r(c, seed=4), np.abs(_r(c, seed=5)) + 0.5, rows, c, 1e-5, 0.1,
                         1]),
        "bn_apply": (3, [x, mean, invstd, gamma, beta, np.zeros((rows, c)), rows * c, c]),
        "bn_grad_sums": (c, [dout, x, mean, invstd, np.zeros(c), np.zeros(c), rows, c]),
        "bn_dx": (3, [dout, x, mean, invstd, gamma, dbeta, dgamma, np.zeros((rows, c)), rows * c, c, rows]),
    }[kernel]


def _relu_args(kernel: str):
    x = _r(4, 7)
    x[0, 0] = np.nan
    if kernel == "relu_forward":
        return 3, [x, np.zeros((4, 7)), x.size]
    return 3, [np.maximum(x, 0), _r(4, 7, seed=1), np.zeros((4, 7)), x.size]


def _bn_act_args(kernel: str):
    """Batch norm's arguments plus the fused output, for ReLU with a residual (the GELU cases run in
    the variant harness through the kernels' twins)."""
    rows, c = 37, 5
    x, dout, res = _r(rows, c) * 2 + 1, _r(rows, c, seed=1), _r(rows, c, seed=6)
    mean, invstd = x.mean(axis=0), 1 / np.sqrt(x.var(axis=0) + 1e-5)
    gamma, beta = np.random.default_rng(2).uniform(0.5, 2, c), _r(c, seed=3)
    out = np.maximum((x - mean) * invstd * gamma + beta + res, 0)
    d = dout * (out > 0)
    dbeta, dgamma = d.sum(axis=0), (d * (x - mean)).sum(axis=0) * invstd
    return {
        "bn_apply_act": (3, [x, mean, invstd, gamma, beta, res, np.zeros((rows, c)), rows * c, c, 1, 1]),
        "bn_grad_sums_act": (c, [dout, x, out, mean, invstd, gamma, beta, np.zeros(c), np.zeros(c), rows, c, 1]),
        "bn_dx_act": (3, [dout, x, out, mean, invstd, gamma, beta, dbeta, dgamma, np.zeros((rows, c)),
                          np.zeros((rows, c)), rows * c, c, rows, 1, 1, 1]),
    }[kernel]


def _bn_gelu_args(kernel: str):
    """The same kernels with GELU (activation 2), no residual."""
    name = kernel.removesuffix("_gelu")
    grid, args = _bn_act_args(name)
    args = list(args)
    if name == "bn_apply_act":
        args[-2], args[-1] = 2, 0
    elif name == "bn_grad_sums_act":
        args[-1] = 2
    else:
        args[-3], args[-1] = 2, 0
    return grid, args


def _step_args(kernel: str):
    """The loss, pooling, update and summary kernels' arguments."""
    n, k = 37, 10
    logits, labels = _r(n, k) * 3, np.random.default_rng(1).integers(0, k, n)
    grads = _r(300, seed=2)
    grads[17] = np.inf
    x, dout = _r(3, 5, 4), _r(3, 4, seed=1)
    p, g, v, decay = _r(50), _r(50, seed=1), _r(50, seed=2), np.abs(_r(50, seed=3)) * 1e-3
    return {
        "softmax_xent": (1, [logits, labels, np.zeros((n, k)), np.zeros(1), n, k, 0.1]),
        "step_summary": (1, [np.asarray([1.5]), logits, labels, grads, np.zeros(3), n, k, grads.size]),
        "gap_forward": (2, [x, np.zeros((3, 4)), 3, 5, 4]),
        "gap_backward": (4, [dout, np.zeros((3, 5, 4)), 3, 5, 4]),
        "sgd_step": (3, [p, g, v, decay, 0.0, 1, 0.1, 0.9, 1, 0, p.size]),
        "sgd_step_first": (3, [p, g, np.zeros(50), decay, 5e-4, 0, 0.1, 0.9, 0, 1, p.size]),
    }[kernel]


def _columns_args(kernel: str):
    """Batch norm's output pass writing a 3x3 'same' convolution's columns, ReLU (GELU: ``_gelu``)."""
    n, h, w, c = 2, 4, 5, 3
    x = _r(n, h, w, c) * 2 + 1
    mean, invstd = x.reshape(-1, c).mean(axis=0), 1 / np.sqrt(x.reshape(-1, c).var(axis=0) + 1e-5)
    gamma, beta = np.random.default_rng(2).uniform(0.5, 2, c), _r(c, seed=3)
    activation = 2 if kernel.endswith("_gelu") else 1
    return 5, [x, mean, invstd, gamma, beta, np.zeros((n, h, w, c)), np.full((n * h * w, 9 * c), 7.0), n, h, w, c,
               3, 3, 1, activation]


ARGS = {"im2col": _conv_args, "col2im": _conv_args, "bn_stats": _bn_args, "bn_apply": _bn_args,
        "bn_grad_sums": _bn_args, "bn_dx": _bn_args, "relu_forward": _relu_args, "relu_backward": _relu_args,
        "bn_apply_act": _bn_act_args, "bn_grad_sums_act": _bn_act_args, "bn_dx_act": _bn_act_args,
        "softmax_xent": _step_args, "step_summary": _step_args, "gap_forward": _step_args, "gap_backward": _step_args,
        "sgd_step": _step_args, "bn_act_columns": _columns_args}
GELU_ARGS = {f"{name}_gelu": _bn_gelu_args for name in ("bn_apply_act", "bn_grad_sums_act", "bn_dx_act")}
VARIANT_ARGS = {**GELU_ARGS, "col2im_add": _conv_args, "sgd_step_first": _step_args,
                "bn_act_columns_gelu": _columns_args}


def test_every_kernel_has_a_case():
    assert set(KERNELS) == set(ARGS)


@pytest.mark.skipif(COMPILER is None, reason="needs a C++ compiler (g++) to run CUDA sources on the CPU")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(ARGS) + sorted(VARIANT_ARGS))
def test_the_cuda_source_run_on_the_cpu_computes_what_its_twin_does(name, dtype):
    kernel = KERNELS[name.removesuffix("_gelu").removesuffix("_add").removesuffix("_first")]
    grid, args = {**ARGS, **VARIANT_ARGS}[name](name)
    args = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    if name == "step_summary":                            # its output is float64 whatever the logits are
        args[4] = args[4].astype(np.float64)
    theirs, ours = copy.deepcopy(args), copy.deepcopy(args)
    kernel.twin(*theirs)
    compiled(kernel, dtype)(grid, *ours)
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol, equal_nan=True, err_msg=f"{name} argument {i}")
    written = [i for i, (a, b) in enumerate(zip(theirs, args, strict=True))
               if isinstance(a, np.ndarray) and not np.array_equal(a, b, equal_nan=True)]
    assert written, f"{name}: the twin wrote nothing"


def test_a_shim_catches_a_wrong_kernel():
    """The shim's comparison fails for a source that indexes wrongly (the check can fail)."""
    from cifarnet.kernels import Kernel
    from cifarnet.kernels.relu import RELU_FORWARD, relu_forward_twin

    if COMPILER is None:
        pytest.skip("needs a C++ compiler (g++)")
    wrong = Kernel.__new__(Kernel)
    wrong.name, wrong.twin = "relu_forward", relu_forward_twin
    wrong.source = RELU_FORWARD.replace("x[i] > (real)0 ? x[i]", "x[i] > (real)0 ? x[0]")
    x = _r(3, 4)
    out, want = np.zeros_like(x), np.zeros_like(x)
    compiled(wrong, np.float64)(2, x, out, x.size)
    relu_forward_twin(x, want, x.size)
    assert not np.allclose(out, want)



def _nvrtc_or_skip():
    try:
        from cupy.cuda import nvrtc as module

        module.getVersion()
    except Exception as err:  # noqa: BLE001 - CuPy or the NVRTC wheel missing: say which
        pytest.skip(f"NVRTC not available (pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12): {err}")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ARGS))
def test_every_cuda_source_compiles_with_nvrtc_without_spills(name, arch, dtype):
    _nvrtc_or_skip()
    report = compile_report(KERNELS[name], arch, dtype)
    assert report["registers"] > 0, report["log"]
    assert report["spill_stores"] == 0 and report["spill_loads"] == 0, report["log"]


def test_a_source_that_does_not_compile_says_why():
    _nvrtc_or_skip()
    from cifarnet.kernels import Kernel
    from cifarnet.kernels.base import KERNELS as registry

    broken = Kernel("broken_kernel", 'extern "C" __global__ void broken_kernel(real* x) { x[0] = y; }',
                    lambda x: None)
    try:
        with pytest.raises(RuntimeError, match=r"broken_kernel \(sm_80, float\) does not compile:[\s\S]*identifier "
                                               r"\"y\" is undefined"):
            compile_report(broken, "sm_80")
    finally:
        registry.pop("broken_kernel")


def test_gpu_check_without_a_gpu_does_what_the_cpu_can_and_says_so(tmp_path, capsys):
    import json

    from cifarnet.bench import gpu_check

    assert gpu_check.main(["--out", str(tmp_path / "check.json")]) == 0
    report = json.loads((tmp_path / "check.json").read_text())
    printed = capsys.readouterr().out
    assert report["gpu"] is None and report["why_no_gpu"] and "no GPU" in printed
    assert report["failed"] == [] and report["step"] == [] and report["timing"] == []
    assert {v["variant"] for v in report["variants"]} == {"cupy-fused"} and all(v["ok"] for v in report["variants"])
    assert {v["op"] for v in report["variants"]} == {"conv2d", "batch_norm", "batch_norm_act", "relu",
                                                     "softmax_cross_entropy",
                                                     "global_avg_pool", "sgd_update", "step_summary"}
    counts = report["launches"]["counted_on_cpu"]
    assert counts["resnet32"]["fused"] < 600 < counts["resnet32"]["reference"]
    if isinstance(report["compile"], list):                 # NVRTC present: every kernel, both archs and dtypes
        assert len(report["compile"]) == len(KERNELS) * 2 * 2
    else:
        assert report["compile"].startswith("not run")


def test_gpu_check_records_a_failing_part_and_runs_the_others(tmp_path, monkeypatch, capsys):
    """A part that raises (as the static-buffer part first did on a GPU, there by crashing) is
    reported with its traceback under ``errors`` and in ``failed``; the parts after it still run,
    the JSON is written, the exit status is 1; ``--skip`` leaves parts out."""
    import json

    from cifarnet.bench import gpu_check

    def broken(*args):
        raise RuntimeError("planted")

    monkeypatch.setattr(gpu_check, "variants_section", broken)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out), "--skip", "compile"]) == 1
    report = json.loads(out.read_text())
    assert report["failed"] == ["variants: RuntimeError: planted"]
    assert "planted" in report["errors"]["variants"] and "Traceback" in report["errors"]["variants"]
    assert "compile" not in report and report["launches"]["counted_on_cpu"]["resnet32"]["fused"] > 0
    assert "variants: failed" in capsys.readouterr().err


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_batch_norm_writing_the_next_convolution_s_columns_gives_what_im2col_of_its_output_gives(activation):
    """The fused batch norm with ``columns`` (:mod:`cifarnet.kernels.bn_columns`, its twin here) writes
    the output the reference computes and the column matrix ``im2col`` makes of it; the fused
    convolution given those columns computes what it computes from its input."""
    from cifarnet.functional import batch_norm_act, conv2d
    from cifarnet.functional.dispatch import FUSED

    n, h, w, c = 3, 5, 4, 6
    x = _r(n, h, w, c) * 2 - 1
    gamma, beta = np.random.default_rng(2).uniform(0.5, 2, c), _r(c, seed=3)
    stats = [np.zeros(c), np.ones(c)]
    want, _ = batch_norm_act.variants["reference"].forward(x, gamma, beta, *[s.copy() for s in stats],
                                                           activation=activation, training=True)
    cols = np.full((n * h * w, 9 * c), np.nan)
    out, _ = batch_norm_act.variants[FUSED].forward(x, gamma, beta, *[s.copy() for s in stats], activation=activation,
                                                    training=True, columns=(cols, 3, 3, 1))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    expected = np.zeros_like(cols)
    KERNELS["im2col"].twin(want, expected, n, h, w, c, 3, 3, 1, 1, h, w)
    np.testing.assert_allclose(cols, expected, rtol=1e-12, atol=1e-12)
    W = _r(3, 3, c, 4, seed=5)
    fused = conv2d.variants[FUSED]
    with_columns, saved = fused.forward(out, W, None, stride=1, padding=1, columns=cols)
    np.testing.assert_allclose(with_columns, fused.forward(out, W, None, stride=1, padding=1)[0], rtol=1e-12)
    assert saved[0] is cols                                  # kept for the weight gradient
    with pytest.raises(ValueError, match="columns"):
        fused.forward(out, W, None, stride=1, padding=1, columns=cols[:-1])
