"""The fused cross-entropy kernel inside ``jax.jit``: an XLA FFI custom call on CPU.

:func:`cross_entropy` takes a prepared
:class:`~crossentropy._core.prepared.ClassCall` of JAX arrays (tracers under
``jit``) and returns what the reference
:func:`~crossentropy._core.softmax_ce.evaluate_cross_entropy` returns, with the
losses and the gradient computed in one pass by the C kernel
(``_ce.c``, compiled with the handler ``_ce_xla.cc`` into the optional
extension ``_ce_xla``), or ``None`` when it does not apply: the extension was
not built (JAX absent at build time), kernels disabled, fewer than
:data:`MIN_SIZE` logits, rows of more than 32 and fewer than
:data:`MIN_CLASSES` classes that the kernel's short-row path does not take
(class weights, probabilities, a soft cap), where XLA's own fused loops are as
fast, or a K-dim input whose class count is too large for the columns
kernel.
Half-precision logits run on their float32 copy, as on the portable path.

What XLA sees is ``jax.lax.platform_dependent``: the custom call on CPU, the
portable formula (the same arrays through ``_core.softmax_ce``) on GPU and TPU.
The custom call is wrapped in a ``jax.custom_jvp`` whose JVP is JAX's
derivative of the portable formula, so that second derivatives
(``jax.hessian``, a gradient of a gradient) stay exact; under ``jax.vmap`` it
batches as ``vmap_method="broadcast_all"``: the handler runs the kernel once
per batch element.  The kernel's threads (:func:`~.native.get_num_threads`)
are fixed when a function is traced.

The reduction happens inside the call: the handler reads the class indices
once for the ``'mean'`` denominator (the summed weights of the counted
targets, PyTorch's weighted mean) before the kernel runs, so that the kernel
writes the gradient of the reduced loss directly, and sums the per-row losses
itself: the jitted ``value_and_grad`` of a loss is the custom call alone, no
XLA operation around it.  From :data:`ASYNC_ROWS` rows on, XLA sums the
per-row losses (or each row's share of the mean) instead, so that its CPU
client runs the program on its own thread as any other.  A class index outside ``[0, C)`` (which ``jit``
cannot check) gives that row a NaN loss and gradient, as on the portable path
(and a NaN ``'mean'``, whose denominator it makes NaN).
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .._core.namespace import index_dtype, restore
from .._core.options import CrossEntropyOptions
from .._core.prepared import ClassCall
from .._core.reduction import grad_scale, reduce
from .._core.softmax_ce import cross_entropy_rows
from . import native
from ._launch import SMALL_C

__all__ = ["ASYNC_ROWS", "MIN_CLASSES", "MIN_SIZE", "available", "cross_entropy"]

#: the custom call's name in XLA's registry
TARGET = "crossentropy_cross_entropy"
#: fewer logits than this stay on XLA's own loops: the custom call costs about 2 us
#: more than a jitted function of a few XLA operations
MIN_SIZE = 128
#: rows of more than ``SMALL_C`` and fewer than this many classes take the custom
#: call only on the kernel's short-row path (class indices, no weights, no soft
#: cap), 0.5-0.9x the time of XLA's loops from (64, 100) to (256, 400); its general
#: row path is slower there (1.5x at (256, 100) with weights).  Up to ``SMALL_C``
#: classes (the columns kernel) and from this many on, every call takes it
MIN_CLASSES = 512
#: the columns kernel (small C or a K-dim layout) keeps three (C, 32) blocks per thread
_COLUMNS_MAX_C = (16 << 20) // (3 * 32 * 8)


@functools.cache
def _extension() -> Any:
    """The compiled handler module, or ``None`` if it was not built."""
    try:
        return importlib.import_module(__package__ + "._ce_xla")
    except ImportError:
        return None


def available() -> bool:
    """True if the XLA handler was built (JAX was importable at build time)."""
    return _extension() is not None


@functools.cache
def _registered() -> str:
    import jax

    jax.ffi.register_ffi_target(TARGET, _extension().cross_entropy, platform="cpu")
    return TARGET


def _applies(b: ClassCall, options: CrossEntropyOptions) -> bool:
    xp, x, C = b.xp, b.x, b.n_classes
    if not (available() and native.enabled()) or x.dtype not in (xp.float32, xp.float64):
        return False
    if math.prod(x.shape) < MIN_SIZE:
        return False
    short_rows = not b.probs and b.weight is None and options.softcap is None
    if SMALL_C < C < MIN_CLASSES and not short_rows:
        return False
    inner = math.prod(x.shape[b.axis : -1])  # D of a K-dim layout (N, C, d1, ..., dK)
    return inner == 1 or C <= _COLUMNS_MAX_C  # the columns kernel's buffers


def _ignore(b: ClassCall) -> tuple[int, bool]:
    """``(ignore_index, has_ignore)`` as the handler compares int64 indices."""
    i = b.ignore_index
    if i is None or not -(1 << 63) <= int(i) < (1 << 63):
        return 0, False  # no index equals it
    return int(i), True


def _caller_layout(b: ClassCall, a: Any) -> Any:
    return a if b.axis == a.ndim - 1 else b.xp.moveaxis(a, -1, b.axis)


#: the reductions as the handler numbers them, and with XLA's sum after it: the
#: per-row losses, or each row's share of the mean
_REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}
_SHARES = {"none": 0, "sum": 0, "mean": 3}
#: from this many rows XLA sums the handler's per-row losses (or shares of the
#: mean): XLA's CPU client runs a program it deems cheap (under 1000 flops, which
#: the custom call alone is: its cost is unknown) on the calling thread, where
#: result buffers of a few MiB come from the main heap and are faulted in again
#: on most calls (measured at (4096, 1000): 100-300 page faults and up to 2x the
#: time); the sum makes it an ordinary program, run on XLA's own thread
ASYNC_ROWS = 1024


class _Rows:
    """The reduced loss (or the per-row losses) and the scaled gradients of one
    call, as a function of arrays: the custom call on CPU, the portable formula
    elsewhere and for derivatives.  ``scale`` multiplies the gradients (and sets
    the number of ``vmap`` batch dimensions); the reduction's own factor, the
    ``'mean'`` denominator, is computed from the target (and weights) on both
    paths."""

    def __init__(self, b: ClassCall, options: CrossEntropyOptions, grads: tuple[bool, bool]):
        self.b, self.options, self.grads = b, options, grads

    def portable(self, x: Any, target: Any, weight: Any, scale: Any) -> tuple:
        b, xp = self.b, self.b.xp
        t = xp.moveaxis(target, b.axis, -1) if b.probs and b.axis != x.ndim - 1 else target
        w = weight if b.weight is not None else None
        call = replace(b, x=xp.moveaxis(x, b.axis, -1), target=t, weight=w, class_weight=w)
        loss, denom, g, dt = cross_entropy_rows(call, self.options, any(self.grads))
        value = reduce(xp, loss, b.reduction, denom)
        scale = scale * grad_scale(xp, loss, b.reduction, denom)
        empty = xp.zeros((0,), dtype=x.dtype)
        g = _caller_layout(b, scale * g) if self.grads[0] else empty
        dt = _caller_layout(b, scale * dt) if self.grads[1] else empty
        return value, g, dt

    def fused(self, x: Any, target: Any, weight: Any, scale: Any) -> Sequence[Any]:
        import jax

        b, o = self.b, self.options
        shape = lambda want: x.shape if want else (0,)  # noqa: E731
        rows = x.shape[: b.axis] + x.shape[b.axis + 1 :]
        shares = b.reduction != "none" and math.prod(rows) >= ASYNC_ROWS
        results = (
            jax.ShapeDtypeStruct(rows if b.reduction == "none" or shares else (), x.dtype),
            jax.ShapeDtypeStruct(shape(self.grads[0]), x.dtype),
            jax.ShapeDtypeStruct(shape(self.grads[1]), x.dtype),
        )
        ignore, has_ignore = _ignore(b)
        call = jax.ffi.ffi_call(_registered(), results, vmap_method="broadcast_all")
        loss, g, dt = call(
            x, target, weight, scale,
            axis=np.int64(b.axis), ignore_index=np.int64(ignore), has_ignore=has_ignore,
            probabilities=bool(b.probs), label_smoothing=np.float64(o.label_smoothing),
            z_loss=np.float64(o.z_loss), softcap=np.float64(o.softcap or 0.0),
            threads=np.int64(native.get_num_threads()),
            reduction=np.int64((_SHARES if shares else _REDUCTIONS)[b.reduction]),
        )  # fmt: skip
        return (b.xp.sum(loss) if shares else loss), g, dt

    def __call__(self, *arrays: Any) -> tuple:
        import jax

        @jax.custom_jvp
        def rows(*arrays: Any) -> tuple:
            return jax.lax.platform_dependent(*arrays, cpu=self.fused, default=self.portable)

        @rows.defjvp
        def derivative(primals: tuple, tangents: tuple) -> tuple:
            return jax.jvp(self.portable, primals, tangents)

        return rows(*arrays)


def cross_entropy(
    b: ClassCall, options: CrossEntropyOptions, wrt: tuple[str, ...]
) -> tuple[Any, dict] | None:
    """``(value, {name: gradient})`` of cross-entropy on JAX arrays through the
    custom call, as ``evaluate_cross_entropy(b, options, wrt)`` returns it, or
    ``None`` if it does not apply."""
    if not _applies(b, options):
        return None
    xp, x = b.xp, b.x
    target = _caller_layout(b, b.target) if b.probs else b.target
    if not b.probs and target.dtype not in (xp.int32, xp.int64):
        target = xp.astype(target, index_dtype(xp))
    weight = b.weight if b.weight is not None else xp.zeros((0,), dtype=x.dtype)
    scale = xp.ones((), dtype=x.dtype)  # a constant: XLA runs no operation for it
    rows = _Rows(b, options, ("input" in wrt, "target" in wrt))
    value, g, dt = rows(_caller_layout(b, x), target, weight, scale)
    value = restore(xp, value, b.dtype)
    grads = {}
    if "input" in wrt:
        grads["input"] = restore(xp, g, b.dtype)
    if "target" in wrt:
        grads["target"] = restore(xp, dt, b.dtype)
    return value, grads
