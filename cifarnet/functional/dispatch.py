"""Ops with one implementation per array module, and the registry of every op.

An op is a named pair of pure functions, ``forward(x, ...) -> (out, ctx)`` and
``backward(ctx, dout) -> (dx, grads)``, written as a small class of static methods (a *variant*).
Every op has a ``reference`` variant, the obvious formula that runs on any array module and is
the oracle the others are tested against (``tests/test_variants.py``). Other variants are
registered for an array module (``"numpy"``, ``"cupy"``) and are used for arrays of that module;
an array module without one of its own uses the reference. The context returned by ``forward``
remembers its variant, so ``backward`` always runs the matching one.

Update ops (the optimizers' in-place parameter updates) have ``apply`` instead of
``forward``/``backward``; they dispatch the same way.

**Fused kernels.** A variant registered as ``"cupy-fused"`` (:mod:`cifarnet.functional.fused`: CUDA
kernels of :mod:`cifarnet.kernels`, each with a NumPy twin) is used for CuPy arrays only while
:func:`use_fused_kernels` is on (``backend.kernels=fused``, or ``auto``, the runner's default on CuPy since the
kernels passed ``cifarnet.bench.gpu_check`` on an H200; off in a bare process). On NumPy arrays such
a variant runs its twins, which is how the variant harness checks it on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..backend import array_module
from ..registry import Registry

OPS = Registry("op")
FUSED = "cupy-fused"
_fused = {"on": False}


def use_fused_kernels(on: bool) -> None:
    """Whether CuPy arrays take the ``"cupy-fused"`` variants where an op has one (default: off)."""
    _fused["on"] = bool(on)


def fused_kernels() -> bool:
    return _fused["on"]


@dataclass(frozen=True)
class Ctx:
    """What ``forward`` kept for ``backward``: the variant that ran and its saved values."""

    variant: type
    saved: Any


class Op:
    """A named op: a reference variant, and at most one variant per array module, named after it.

    Args:
        register: add the op to :data:`OPS` (tests make unregistered ops of their own).
    """

    def __init__(self, name: str, register: bool = True):
        self.name = name
        self.variants: dict[str, type] = {}           # "reference", "numpy", "cupy" -> class
        if register:
            OPS.register(name)(self)

    # -- registration -----------------------------------------------------------------------------
    def reference(self, cls: type) -> type:
        """Register ``cls`` as the reference variant (the plain formula, every array module)."""
        return self._add("reference", cls)

    def implementation(self, module: str):
        """Decorator: register the variant used for arrays of ``module`` (``"numpy"``, ``"cupy"``, or
        ``"cupy-fused"``: CuPy's while fused kernels are on)."""
        if module == "reference":
            raise ValueError("use Op.reference for the reference variant")
        return lambda cls: self._add(module, cls)

    def _add(self, name: str, cls: type) -> type:
        if name in self.variants:
            raise ValueError(f"op {self.name!r} already has a variant {name!r}")
        cls.op_name, cls.variant_name = self.name, name
        self.variants[name] = cls
        return cls

    # -- dispatch ---------------------------------------------------------------------------------
    def variant_for(self, x) -> type:
        """The variant that runs for array ``x``: its module's own (CuPy's fused one while they are
        switched on), else the reference."""
        module = array_module(x).__name__
        if module == "cupy" and _fused["on"] and FUSED in self.variants:
            return self.variants[FUSED]
        return self.variants.get(module, self.variants["reference"])

    def forward(self, x, *args, workspace=None, **kwargs) -> tuple[Any, Ctx | None]:
        """``(out, ctx)``; ``ctx`` is None when the call asked to keep nothing (``keep=False``).
        ``workspace`` (:mod:`cifarnet.arrays.workspace`) reaches the variants that take one (their
        class says ``takes_workspace = True``); the others allocate as always."""
        variant = self.variant_for(x)
        if workspace is not None and getattr(variant, "takes_workspace", False):
            kwargs["workspace"] = workspace
        out, saved = variant.forward(x, *args, **kwargs)
        return out, (None if saved is None else Ctx(variant, saved))

    def backward(self, ctx: Ctx | None, dout, **kwargs):
        """``(dx, grads)`` from the ``ctx`` of a forward that kept it."""
        if ctx is None:
            raise RuntimeError(f"{self.name}: backward needs the context of a forward called with keep=True")
        return ctx.variant.backward(ctx.saved, dout, **kwargs)

    def apply(self, param, *args, **kwargs) -> None:
        """Run an update op's variant for ``param``'s array module (in place)."""
        self.variant_for(param).apply(param, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Op({self.name!r}, variants={sorted(self.variants)})"
