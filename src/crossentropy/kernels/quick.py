"""The common call of ``cross_entropy``, at the cost of a few attribute reads.

A training loop calls ``cross_entropy(logits, labels)`` thousands of times on
small batches: ``(N, C)`` float32/float64 logits, C-contiguous, int64 (or int32)
class indices, no class weights, PyTorch's default or simple options.  On such
batches the general path (:func:`~crossentropy._core.prepared.prepare_class_call`,
the layout plan of :mod:`._launch`) costs more than the kernel; :func:`quick_cross_entropy`
proves the call valid with cheap checks and calls the kernel directly:

* every argument is checked by type and value in Python (no array operation);
* one call of the kernel's ``quick`` entry then reads every class index before
  anything else (one outside ``[0, C)`` that is not ``ignore_index`` declines the
  call, nothing written), counts the rows that count for the mean, pre-checks the
  first row for the probabilities-as-logits probe (only if its first 16 values
  lie in [0, 1] and it sums to 1 within ten times the probe's tolerance does the
  whole probe run, here), computes the losses and the gradient and adds them up;
* anything else -- another layout, a weight, an index out of range, a NaN
  option, a GPU tensor, a traced tensor -- returns ``None`` and the general
  path runs, raising its errors.

So the fast path gives exactly what the general path gives, or defers to it.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

import numpy as np

from .._core.options import CrossEntropyOptions
from .._core.prepared import prepare_class_call
from .._core.validate import warn_if_probabilities
from . import _launch, native
from ._launch import host_arrays
from ._torch import attach_gradient

__all__ = ["quick_cross_entropy"]

_FLOATS = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}  # the kernel's dtype codes
_INDEX_CODES = {np.dtype(np.int64): 0, np.dtype(np.int32): 1}  # 1: int32 indices
_REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}  # the kernel's reduction codes
_NUMBERS = (int, float)
_PROBE_TOL = (1e-3, 1e-6)  # looks_like_probabilities' tolerance (float32, float64)
_POOL_MIN = 1 << 12  # the kernel runs one thread below this many elements (CE_POOL_MIN)
_HUGE_PAGES_MIN = 1 << 22  # bytes: NumPy's allocations from this size ask for huge pages
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _options_ok(label_smoothing: Any, z_loss: Any, softcap: Any) -> bool:
    """True if ``CrossEntropyOptions.checked`` would accept these plain numbers."""
    if type(label_smoothing) not in _NUMBERS or not 0 <= label_smoothing <= 1:
        return False
    if type(z_loss) not in _NUMBERS or not z_loss >= 0:
        return False
    return softcap is None or (type(softcap) in _NUMBERS and 0 < softcap < math.inf)


def quick_cross_entropy(
    input: Any,
    target: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    axis: Any,
    z_loss: Any,
    softcap: Any,
    dim: Any,
    wrt: tuple = (),
) -> Any:
    """``cross_entropy(...)`` (``not wrt``) or its rule's ``(value, {"input": g})``
    (``wrt == ("input",)``) for the common call, or ``None``: the general path
    must take it."""
    if weight is not None or type(ignore_index) is not int or type(reduction) is not str:
        return None
    if reduction not in _REDUCTIONS or (wrt and wrt != ("input",)):
        return None
    if dim is not None:
        if axis is not None:
            return None
        axis = dim
    if axis is not None and (type(axis) is not int or axis not in (1, -1)):
        return None  # (an axis such as 1.0: the general path's TypeError)
    kind = type(input)
    if type(target) is not kind or not _options_ok(label_smoothing, z_loss, softcap):
        return None
    if kind is np.ndarray:
        if not native.enabled():
            return None
        opts = (label_smoothing, z_loss, softcap)
        return _numpy_call(input, target, ignore_index, reduction, opts, wrt)
    torch = sys.modules.get("torch")
    if torch is None or kind is not torch.Tensor or _compiling(torch) or not native.enabled():
        return None  # (compiling: the custom operator)
    opts = (label_smoothing, z_loss, softcap)
    return _tensor_call(torch, input, target, ignore_index, reduction, opts, wrt)


def _compiling(torch: Any) -> bool:
    """``torch.compiler.is_compiling()``, the function looked up once."""
    global _is_compiling
    if _is_compiling is None:
        _is_compiling = torch.compiler.is_compiling
    return _is_compiling()


_is_compiling: Any = None


def _numpy_call(x: Any, y: Any, ignore_index: int, reduction: str, opts: tuple, wrt: tuple) -> Any:
    code = _FLOATS.get(x.dtype)
    if code is None or x.ndim != 2 or y.ndim != 1 or not x.flags.c_contiguous:
        return None
    n, c = x.shape
    if not n or not c or y.shape[0] != n or not y.flags.c_contiguous or not x.flags.aligned:
        return None
    y32 = _INDEX_CODES.get(y.dtype)
    if y32 is None or not y.flags.aligned:
        return None
    g = np.empty_like(x) if wrt else None
    loss = np.empty(n, dtype=x.dtype) if reduction == "none" else None
    xptr = x.__array_interface__["data"][0]
    yptr = y.__array_interface__["data"][0]
    gptr = 0 if g is None else g.__array_interface__["data"][0]
    lptr = 0 if loss is None else loss.__array_interface__["data"][0]
    args = (code, n, c, xptr, yptr, y32, ignore_index, reduction, opts, gptr, lptr, not wrt)
    total = _kernel(*args, x)
    if total is None:
        return None
    value = (
        loss if loss is not None else np.asarray(total, dtype=x.dtype)
    )  # 0-d, as the general path
    return (value, {"input": g}) if wrt else value


def _tensor_call(
    torch: Any, x: Any, y: Any, ignore_index: int, reduction: str, opts: tuple, wrt: tuple
) -> Any:
    dtype = x.dtype
    code = 0 if dtype is torch.float32 else 1 if dtype is torch.float64 else None
    if code is None or not x.is_cpu or x.dim() != 2 or not x.is_contiguous() or x.is_neg():
        return None
    native.use_torch_threads()
    n, c = x.shape
    if not n or not c or y.dim() != 1 or y.shape[0] != n or not y.is_cpu or not y.is_contiguous():
        return None
    ydtype = y.dtype
    if ydtype is not torch.int64 and ydtype is not torch.int32:
        return None
    try:
        xptr, yptr = x.data_ptr(), y.data_ptr()
    except RuntimeError:  # no storage (a tensor of a torch.func transform, say)
        return None
    graph = x.requires_grad and torch.is_grad_enabled()
    g = _gradient_buffer(torch, x, n * c, code) if graph or wrt else None
    loss = torch.empty(n, dtype=dtype) if reduction == "none" else None
    gptr = 0 if g is None else g.data_ptr()
    lptr = 0 if loss is None else loss.data_ptr()
    y32 = int(ydtype is torch.int32)
    total = _kernel(
        code, n, c, xptr, yptr, y32, ignore_index, reduction, opts, gptr, lptr, not wrt, x
    )
    if total is None:
        return None
    value = loss if loss is not None else torch.scalar_tensor(total, dtype=dtype)
    if graph:
        prepare = functools.partial(_prepared, x, y, ignore_index, reduction, opts)
        value = attach_gradient(x, value, g, reduction == "none", prepare)
    return (value, {"input": g}) if wrt else value


def _gradient_buffer(torch: Any, x: Any, size: int, code: int) -> Any:
    """An uninitialised tensor like the 2-D ``x`` (``size`` elements) for the gradient.
    A large one is NumPy's memory: NumPy asks the kernel for huge pages there, where a
    fresh PyTorch allocation takes a page fault per 4 KiB as the kernel first writes it
    (at 4096 x 32000 float32: 128,000 faults, twice the kernel's own time)."""
    if size * (4, 8)[code] < _HUGE_PAGES_MIN:
        return torch.empty_like(x)
    return torch.from_numpy(np.empty(tuple(x.shape), dtype=(np.float32, np.float64)[code]))


def _kernel(
    code: int,
    n: int,
    c: int,
    xptr: int,
    yptr: int,
    y32: int,
    ignore_index: int,
    reduction: str,
    opts: tuple,
    gptr: int,
    lptr: int,
    probe: bool,
    x: Any,
) -> float | None:
    """Run the kernel's one-step call on the ``(n, c)`` C-contiguous logits ``x``
    (at ``xptr``) and their ``n`` class indices; return the reduced loss (0.0
    for ``'none'``: the per-row losses are at ``lptr``), the gradient of the
    reduced loss at ``gptr`` if nonzero; or ``None`` if an index is out of range
    (nothing was written: the general path raises its error).  ``probe``: warn if
    the logits look like probabilities."""
    if not _INT64_MIN <= ignore_index <= _INT64_MAX:
        return None
    ls, z, cap = opts
    threads = 1 if n * c < _POOL_MIN else native.get_num_threads()
    total, status = native.extension.quick(
        code, n, c, xptr, yptr, y32, ignore_index, _REDUCTIONS[reduction], ls, z, cap or 0.0,
        gptr, lptr, int(c <= _launch.SMALL_C), threads, 10 * _PROBE_TOL[code] if probe else 0.0,
        _launch.ROW_MODE,
    )  # fmt: skip
    if status & 1:
        return None
    if status & 4:  # an index read in range by the check, out of range by the kernel
        raise _launch.changed_target_error(c)
    if status & 2:  # the first row may be probabilities: the whole probe
        _warn(x)
    return total


def _warn(x: Any) -> None:
    """The probabilities-as-logits probe and its warning, on a NumPy view of ``x``."""
    host = x if isinstance(x, np.ndarray) else x.detach().numpy()
    warn_if_probabilities(native.numpy_namespace(), host, -1, "cross_entropy")


def _prepared(x: Any, y: Any, ignore_index: int, reduction: str, opts: tuple) -> tuple:
    """``(ClassCall, options)`` of a quick call, for autograd to compute the gradient
    again (a second backward, or ``create_graph=True``)."""
    # the tensors themselves if the kernels were disabled since the forward
    arrays = host_arrays(x.detach(), y, None, ignore_index) or (x.detach(), y, None)
    call = prepare_class_call(
        *arrays,
        reduction=reduction,
        ignore_index=ignore_index,
    )
    return call, CrossEntropyOptions.checked(*opts)
