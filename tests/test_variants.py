"""Every registered variant of every op against the op's reference, forward and backward.

The llm.c habit: each fast implementation (the tuned NumPy code today, CuPy kernels tomorrow) is
checked against the plain formula on the same inputs, in float64 and float32, with odd shapes
(batch 1, one channel, non-square images). A variant registered for ``"cupy"`` runs on CuPy
arrays (skipped without a GPU); every other one on NumPy arrays. The reference runs on NumPy in
float64 and is the oracle.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from cifarnet.backend import NUMPY, cupy_available, get_backend, to_numpy
from cifarnet.functional import OPS, Op
from cifarnet.functional.conv import Conv2dReference


@dataclass
class Case:
    """Inputs of one op call: ``forward(*args, **kwargs)`` (update ops: ``apply``), with
    ``backward_kwargs`` for the backward. Arrays in ``args`` are float64 NumPy arrays."""

    name: str
    args: tuple
    kwargs: dict[str, Any] = field(default_factory=dict)
    backward_kwargs: dict[str, Any] = field(default_factory=dict)


def _r(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _distinct(*shape, seed=0):
    """Well separated values: no ties, so every max has one winner whatever the rounding."""
    return np.random.default_rng(seed).permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) * 0.01


def _bn(c, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.2, 3.0, c)


CASES: dict[str, list[Case]] = {
    "conv2d": [
        Case("3x3 same, bias", (_r(2, 7, 7, 3), _r(3, 3, 3, 4, seed=1), _r(4, seed=2)), {"stride": 1, "padding": 1}),
        Case("16 channels, blocked", (_r(2, 8, 8, 16), _r(3, 3, 16, 16, seed=1), None), {"stride": 1, "padding": 1}),
        Case("batch 1, one channel, non-square", (_r(1, 9, 6, 1), _r(3, 3, 1, 2, seed=1), _r(2, seed=2)),
             {"stride": 1, "padding": 0}),
        Case("stride 2", (_r(3, 9, 8, 3), _r(3, 3, 3, 5, seed=1), None), {"stride": 2, "padding": 1}),
        Case("1x1 stride 2 projection", (_r(2, 6, 6, 4), _r(1, 1, 4, 6, seed=1), None), {"stride": 2, "padding": 0}),
        Case("no input gradient", (_r(2, 6, 6, 3), _r(3, 3, 3, 4, seed=1), _r(4, seed=2)), {"stride": 1, "padding": 1},
             {"need_dx": False}),
        Case("24 -> 32 channels, Winograd, non-square",
             (_r(3, 9, 6, 24), _r(3, 3, 24, 32, seed=1, scale=0.2), _r(32, seed=2)), {"stride": 1, "padding": 1}),
        Case("Winograd without padding, 3x3 output", (_r(2, 5, 5, 32), _r(3, 3, 32, 24, seed=1, scale=0.2), None),
             {"stride": 1, "padding": 0}),
        # the input gradient added onto one already there (a residual block's input), on each path
        Case("dx added, 3x3 odd size", (_r(2, 7, 7, 3), _r(3, 3, 3, 4, seed=1), None), {"stride": 1, "padding": 1},
             {"dx_add": _r(2, 7, 7, 3, seed=5)}),
        Case("dx added, blocked", (_r(2, 8, 8, 16), _r(3, 3, 16, 16, seed=1), None), {"stride": 1, "padding": 1},
             {"dx_add": _r(2, 8, 8, 16, seed=5)}),
        Case("dx added, stride 2", (_r(3, 9, 8, 3), _r(3, 3, 3, 5, seed=1), None), {"stride": 2, "padding": 1},
             {"dx_add": _r(3, 9, 8, 3, seed=5)}),
        Case("dx added, Winograd", (_r(3, 9, 6, 24), _r(3, 3, 24, 32, seed=1, scale=0.2), None),
             {"stride": 1, "padding": 1}, {"dx_add": _r(3, 9, 6, 24, seed=5)}),
    ],
    "batch_norm": [
        Case("images, training", (_r(4, 5, 3, 6, scale=2) + 1, *_bn(6)), {"training": True}),
        Case("features, training", (_r(7, 5, scale=3) - 1, *_bn(5)), {"training": True}),
        Case("batch 1 image, training", (_r(1, 3, 4, 2), *_bn(2)), {"training": True}),
        Case("images, eval", (_r(3, 4, 4, 3), *_bn(3)), {"training": False}),
        Case("features, eval", (_r(5, 4), *_bn(4)), {"training": False}),
    ],
    "batch_norm_act": [
        Case("relu, images, training", (_r(4, 5, 3, 6, scale=2) + 1, *_bn(6)),
             {"training": True, "activation": "relu"}),
        Case("relu after a residual", (_r(3, 4, 4, 5, scale=2), *_bn(5)),
             {"training": True, "activation": "relu", "residual": _r(3, 4, 4, 5, seed=7)}),
        Case("gelu, images, training", (_r(2, 5, 5, 4, scale=2) - 1, *_bn(4)),
             {"training": True, "activation": "gelu"}),
        Case("gelu, features, eval", (_r(6, 3, scale=2), *_bn(3)), {"training": False, "activation": "gelu"}),
        Case("relu after a residual, eval", (_r(2, 3, 3, 4), *_bn(4)),
             {"training": False, "activation": "relu", "residual": _r(2, 3, 3, 4, seed=8)}),
    ],
    "max_pool2d": [
        Case("2x2 tiles", (_distinct(2, 6, 8, 3),), {"kernel": 2, "stride": 2}),
        Case("3x3 overlapping, non-square", (_distinct(2, 7, 9, 2),), {"kernel": 3, "stride": 2}),
        Case("batch 1, one channel, odd size", (_distinct(1, 5, 5, 1),), {"kernel": 2, "stride": 2}),
        Case("wide: 32 channels, 7x9 -> 3x4", (_distinct(2, 7, 9, 32),), {"kernel": 2, "stride": 2}),
        Case("wide: 3x3 windows, 7 -> 2", (_distinct(2, 7, 7, 40),), {"kernel": 3}),
        Case("wide: ties go to the first", (np.round(_r(2, 5, 5, 32), 0),), {"kernel": 2, "stride": 2}),
    ],
    "global_avg_pool": [Case("images", (_r(3, 4, 5, 2),))],
    "linear": [
        Case("with bias", (_r(5, 7), _r(7, 3, seed=1), _r(3, seed=2))),
        Case("batch 1, no bias", (_r(1, 4), _r(4, 2, seed=1), None)),
    ],
    "relu": [Case("images", (_r(2, 3, 4, 5),))],
    "gelu": [Case("images", (_r(2, 3, 4, 5, scale=3),)), Case("features", (_r(7, 3),))],
    "dropout": [Case("rate 0.3", (_r(6, 20),), {"rate": 0.3, "generator": "seed:7"})],
    "softmax_cross_entropy": [
        Case("plain", (_r(6, 5, scale=3), np.arange(6) % 5), {"label_smoothing": 0.0}, {"dloss": None}),
        Case("smoothed", (_r(6, 5, scale=3), np.arange(6) % 5), {"label_smoothing": 0.1}, {"dloss": None}),
    ],
    "pad_shortcut": [Case("16 -> 32, stride 2", (_r(2, 6, 6, 4),), {"stride": 2, "channels": 8}),
                     Case("odd size", (_r(1, 5, 7, 2),), {"stride": 2, "channels": 5})],
    "sgd_update": [
        Case("plain, decay", (_r(3, 4), _r(3, 4, seed=1), {}), {"lr": 0.1, "weight_decay": 5e-4}),
        Case("momentum, new state", (_r(3, 4), _r(3, 4, seed=1), {}), {"lr": 0.1, "momentum": 0.9}),
        Case("nesterov, decay, state", (_r(3, 4), _r(3, 4, seed=1), {"velocity": _r(3, 4, seed=2)}),
             {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
        Case("flat, decay per element", (_r(12), _r(12, seed=1), {"velocity": _r(12, seed=2)}),
             {"lr": 0.1, "momentum": 0.9, "weight_decay": np.repeat([5e-4, 0.0, 5e-4], 4)}),
        Case("rate and decay per element (parameter groups)", (_r(12), _r(12, seed=1), {"velocity": _r(12, seed=2)}),
             {"lr": np.repeat([0.1, 0.0, 0.05], 4), "momentum": 0.9, "weight_decay": np.repeat([5e-4, 0.0, 1e-3], 4)}),
    ],
    "step_summary": [
        Case("finite", (np.asarray(2.5), _r(7, 4), np.array([0, 1, 2, 3, 0, 1, 2]), _r(30, seed=1))),
        Case("a gradient not finite", (np.asarray(0.5), _r(5, 3), np.arange(5) % 3,
                                       np.array([1.0, np.inf, 2.0, -1.0]))),
        Case("a NaN gradient, ties in a row", (np.asarray(1.0), np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]]),
                                               np.array([0, 2]), np.array([np.nan, 1.0]))),
    ],
    "adam_update": [
        Case("first step", (_r(5,), _r(5, seed=1), {}), {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                                                          "step": 1}),
        Case("decoupled, later step", (_r(3, 2), _r(3, 2, seed=1), {"m": _r(3, 2, seed=2), "v": _r(3, 2, seed=3) ** 2}),
             {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "step": 4, "weight_decay": 0.01,
              "decoupled": True}),
        Case("flat, decay per element", (_r(8), _r(8, seed=1), {"m": _r(8, seed=2), "v": _r(8, seed=3) ** 2}),
             {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "step": 2,
              "weight_decay": np.repeat([0.0, 0.01], 4), "decoupled": True}),
    ],
}


def _backend_for(variant_name: str):
    if variant_name == "cupy":
        ok, why = cupy_available()
        if not ok:
            pytest.skip(f"CuPy variant needs a GPU: {why}")
        return get_backend("cupy")
    return NUMPY


def _on(backend, value, dtype):
    """Move arrays (and arrays inside dicts) to ``backend`` as ``dtype``; "seed:N" becomes a generator."""
    if isinstance(value, np.ndarray):
        return backend.asarray(value, dtype=dtype if value.dtype.kind == "f" else None)
    if isinstance(value, dict):
        return {k: _on(backend, v, dtype) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("seed:"):
        return np.random.default_rng(int(value[5:]))
    return value


def _close(name: str, got, want, rtol: float, problems: list[str]) -> None:
    if isinstance(want, tuple):                                  # several input gradients (dx, dresidual)
        if not isinstance(got, tuple) or len(got) != len(want):
            problems.append(f"{name}: {type(got).__name__} where the reference gives {len(want)} arrays")
            return
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(f"{name}[{i}]", g, w, rtol, problems)
        return
    if got is None or want is None:
        if (got is None) != (want is None):
            problems.append(f"{name}: one side is None")
        return
    got, want = to_numpy(got).astype(np.float64), np.asarray(to_numpy(want), dtype=np.float64)
    if got.shape != want.shape:
        problems.append(f"{name}: shape {got.shape} != {want.shape}")
        return
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    err = float(np.abs(got - want).max(initial=0.0)) / scale
    if not err <= rtol:
        problems.append(f"{name}: max error {err:.2e} of the largest value, above {rtol:.0e}")


def compare(op: Op, variant_name: str, case: Case, dtype=np.float64) -> list[str]:
    """Run ``case`` through ``op``'s reference (NumPy, float64) and through one variant (its
    backend, ``dtype``); the differences found, as text (empty: they agree)."""
    reference, variant = op.variants["reference"], op.variants[variant_name]
    backend = _backend_for(variant_name)
    rtol = 1e-10 if dtype == np.float64 else 2e-4
    problems: list[str] = []
    ref_args = [copy.deepcopy(_on(NUMPY, a, np.float64)) for a in case.args]
    var_args = [_on(backend, a, dtype) for a in case.args]
    ref_kwargs = {k: _on(NUMPY, v, np.float64) for k, v in case.kwargs.items()}
    var_kwargs = {k: _on(backend, v, dtype) for k, v in case.kwargs.items()}
    if hasattr(reference, "apply"):                               # an update op: compare the new state
        reference.apply(*ref_args, **ref_kwargs)
        variant.apply(*var_args, **var_kwargs)
        _close("param", var_args[0], ref_args[0], rtol, problems)
        for slot in ref_args[2]:
            _close(f"state[{slot}]", var_args[2].get(slot), ref_args[2][slot], rtol, problems)
        return problems
    out_ref, saved_ref = reference.forward(*ref_args, **ref_kwargs)
    out_var, saved_var = variant.forward(*var_args, **var_kwargs)
    _close("forward", out_var, out_ref, rtol, problems)
    if not hasattr(reference, "backward"):                       # a forward-only op (the step's summary)
        return problems
    for i, (a, b) in enumerate(zip(var_args, ref_args, strict=True)):   # arrays updated in place (running statistics)
        if isinstance(b, np.ndarray) and i > 0:
            _close(f"argument {i} after forward", a, b, rtol, problems)
    dout = np.random.default_rng(99).standard_normal(np.shape(to_numpy(out_ref)))
    ref_bkw = {k: copy.deepcopy(_on(NUMPY, v, np.float64)) for k, v in case.backward_kwargs.items()}
    var_bkw = {k: copy.deepcopy(_on(backend, v, dtype)) for k, v in case.backward_kwargs.items()}
    dx_ref, grads_ref = reference.backward(saved_ref, dout, **ref_bkw) if "dloss" not in \
        case.backward_kwargs else reference.backward(saved_ref, None)
    dx_var, grads_var = variant.backward(saved_var, backend.asarray(dout, dtype=dtype), **var_bkw) \
        if "dloss" not in case.backward_kwargs else variant.backward(saved_var, None)
    for k in ref_bkw:                                   # an array given to add into is the one returned
        if k.endswith("_add") and (dx_ref is not ref_bkw[k] or dx_var is not var_bkw[k]):
            problems.append(f"{k}: the input gradient is not the array given to add into")
    _close("dx", dx_var, dx_ref, rtol, problems)
    if grads_var.keys() != grads_ref.keys():
        problems.append(f"gradient names {sorted(grads_var)} != {sorted(grads_ref)}")
    for name in grads_ref:
        _close(f"grad {name}", grads_var.get(name), grads_ref[name], rtol, problems)
    return problems


def _variant_cases():
    """Every variant in float64 and float32; the reference in float32 only (in float64 it is the oracle)."""
    for op_name in OPS:
        op = OPS.get(op_name)
        for variant_name in op.variants:
            for dtype in ([np.float32] if variant_name == "reference" else [np.float64, np.float32]):
                for case in CASES.get(op_name, []):
                    yield pytest.param(op, variant_name, case, dtype,
                                       id=f"{op_name}-{variant_name}-{np.dtype(dtype).name}-{case.name}")


def test_every_op_has_cases():
    assert set(OPS) == set(CASES), "an op without cases here is an op nobody checks"
    assert all("reference" in OPS.get(name).variants for name in OPS)


@pytest.mark.parametrize("op, variant_name, case, dtype", list(_variant_cases()))
def test_variant_matches_reference(op, variant_name, case, dtype):
    problems = compare(op, variant_name, case, dtype)
    assert not problems, f"{op.name} variant {variant_name!r}, case {case.name!r}: " + "; ".join(problems)


def _wrong_conv(scale_out: float = 1.0, scale_dw: float = 1.0) -> Op:
    """A conv op whose NumPy variant is the reference with its output or weight gradient scaled."""
    op = Op("conv2d_under_test", register=False)
    op.reference(type("Reference", (Conv2dReference,), {}))

    @op.implementation("numpy")
    class Wrong:
        @staticmethod
        def forward(*args, **kwargs):
            out, saved = Conv2dReference.forward(*args, **kwargs)
            return out * scale_out, saved

        @staticmethod
        def backward(saved, dout, need_dx=True):
            dx, grads = Conv2dReference.backward(saved, dout, need_dx)
            return dx, {**grads, "W": grads["W"] * scale_dw}

    return op


@pytest.mark.parametrize("wrong, expected", [({"scale_out": 1.0001}, "forward"), ({"scale_dw": 0.999}, "grad W")])
def test_a_wrong_variant_fails_the_harness(wrong, expected):
    op = _wrong_conv(**wrong)
    problems = compare(op, "numpy", CASES["conv2d"][0])
    assert problems and any(p.startswith(expected) for p in problems), problems
    assert not compare(_wrong_conv(), "numpy", CASES["conv2d"][0])     # unscaled, it passes


def test_a_backend_without_its_own_variant_runs_the_reference():
    from cifarnet.functional import relu

    assert relu.variant_for(np.zeros(1)).variant_name == "reference"
    assert OPS.get("conv2d").variant_for(np.zeros(1)).variant_name == "numpy"


def test_variants_cannot_be_registered_twice():
    op = Op("twice", register=False)
    op.reference(type("First", (Conv2dReference,), {}))
    with pytest.raises(ValueError, match="already has a variant 'reference'"):
        op.reference(type("Second", (Conv2dReference,), {}))

