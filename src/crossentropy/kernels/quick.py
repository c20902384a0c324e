"""The common call of ``cross_entropy``, at the cost of a few attribute reads.

A training loop calls ``cross_entropy(logits, labels)`` thousands of times on
small batches: ``(N, C)`` float32/float64 logits, C-contiguous, int64 (or int32)
class indices, no class weights, PyTorch's default or simple options.  On such
batches the general path (:func:`~crossentropy._core.prepared.prepare_class_call`,
the layout plan of :mod:`._launch`) costs more than the kernel; :func:`quick_cross_entropy`
proves the call valid with cheap checks and calls the kernel directly:

* every argument is checked by type and value in Python (no array operation),
  except the class indices, whose range one unsigned maximum establishes (a
  negative index is a huge unsigned one);
* the probabilities-as-logits probe first reads the first row: unless its first
  16 values lie in [0, 1] and it sums to 1 (within ten times the probe's
  tolerance) the probe cannot fire;
* anything else -- another layout, a weight, an index out of range or equal to
  ``ignore_index``, a NaN option, a GPU tensor, a traced tensor -- returns
  ``None`` and the general path runs, raising its errors.

So the fast path gives exactly what the general path gives, or defers to it.
"""

from __future__ import annotations

import ctypes
import functools
import math
import struct
import sys
import threading
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
_INDEX_VIEWS = {np.dtype(np.int64): (np.uint64, 0), np.dtype(np.int32): (np.uint32, 1)}
_REDUCTIONS = ("mean", "sum", "none")
_NUMBERS = (int, float)
_PROBE_TOL = (1e-3, 1e-6)  # looks_like_probabilities' tolerance (float32, float64)
_HEAD = 16  # values of the first row read before its sum
_PAR_MIN = 1 << 16  # the kernel runs one thread below this many elements
_HUGE_PAGES_MIN = 1 << 22  # bytes: NumPy's allocations from this size ask for huge pages
_scratch = threading.local()
_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


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
    if weight is not None or type(ignore_index) is not int or reduction not in _REDUCTIONS:
        return None
    if dim is not None:
        if axis is not None:
            return None
        axis = dim
    if axis is not None and (type(axis) is not int or axis not in (1, -1)):
        return None  # (an axis such as 1.0: the general path's TypeError)
    if wrt not in ((), ("input",)):
        return None
    kind, torch = type(input), None
    if kind is not np.ndarray:
        torch = sys.modules.get("torch")
        if torch is None or kind is not torch.Tensor or torch.compiler.is_compiling():
            return None  # (compiling: the custom operator)
    if type(target) is not kind or not _options_ok(label_smoothing, z_loss, softcap):
        return None
    if not native.enabled():
        return None
    opts = (label_smoothing, z_loss, softcap)
    if torch is None:
        return _numpy_call(input, target, ignore_index, reduction, opts, wrt)
    return _tensor_call(torch, input, target, ignore_index, reduction, opts, wrt)


def _numpy_call(x: Any, y: Any, ignore_index: int, reduction: str, opts: tuple, wrt: tuple) -> Any:
    code = _FLOATS.get(x.dtype)
    if code is None or x.ndim != 2 or y.ndim != 1 or not x.flags.c_contiguous:
        return None
    n, c = x.shape
    if n == 0 or y.shape[0] != n or not y.flags.c_contiguous or not x.flags.aligned:
        return None
    view = _INDEX_VIEWS.get(y.dtype)
    if view is None or np.maximum.reduce(y.view(view[0])) >= c:
        return None  # an index to check, or to ignore: the general path
    if not wrt and c > 1 and _probe_may_fire(x[0], c, code):
        _warn(x)
    g = np.empty_like(x) if wrt else None
    xptr = x.__array_interface__["data"][0]
    gptr = 0 if g is None else g.__array_interface__["data"][0]
    yptr = y.__array_interface__["data"][0]
    loss = np.empty(n, dtype=x.dtype) if reduction == "none" else None
    lptr = 0 if loss is None else loss.__array_interface__["data"][0]
    total = _kernel(code, n, c, xptr, yptr, view[1], ignore_index, reduction, opts, gptr, lptr)
    if loss is not None:
        value = loss
    else:  # a 0-d array, as the general path gives
        value = np.asarray(total, dtype=x.dtype)
    return (value, {"input": g}) if wrt else value


def _tensor_call(
    torch: Any, x: Any, y: Any, ignore_index: int, reduction: str, opts: tuple, wrt: tuple
) -> Any:
    dtype = x.dtype
    code = 0 if dtype is torch.float32 else 1 if dtype is torch.float64 else None
    if code is None or not x.is_cpu or x.dim() != 2 or not x.is_contiguous() or x.is_neg():
        return None
    n, c = x.shape
    if n == 0 or y.dim() != 1 or y.shape[0] != n or not y.is_cpu or not y.is_contiguous():
        return None
    if y.dtype is not torch.int64 and y.dtype is not torch.int32:
        return None
    try:
        xptr, yptr = x.data_ptr(), y.data_ptr()
    except RuntimeError:  # no storage (a tensor of a torch.func transform, say)
        return None
    y32 = int(y.dtype is torch.int32)
    if not _indices_below(y, yptr, n, y32, c):
        return None  # an index to check, or to ignore: the general path
    graph = x.requires_grad and torch.is_grad_enabled()
    if not wrt and c > 1 and _probe_may_fire(xptr, c, code):
        _warn(x)
    g = _gradient_buffer(torch, x, n * c, code) if graph or wrt else None
    loss = torch.empty(n, dtype=dtype) if reduction == "none" else None
    gptr = 0 if g is None else g.data_ptr()
    lptr = 0 if loss is None else loss.data_ptr()
    total = _kernel(code, n, c, xptr, yptr, y32, ignore_index, reduction, opts, gptr, lptr)
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


def _struct(kind: str, count: int) -> struct.Struct:
    """A ``struct.Struct`` reading ``count`` values of the format character ``kind``."""
    s = _STRUCTS.get((kind, count))
    if s is None:
        s = _STRUCTS[kind, count] = struct.Struct(f"={count}{kind}")
    return s


def _indices_below(y: Any, ptr: int, n: int, y32: int, c: int) -> bool:
    """True if the ``n`` class indices of the CPU tensor ``y`` (at ``ptr``, int64, or
    int32 if ``y32``) lie in ``[0, c)``: read as unsigned, a negative one is huge.
    A few are read from memory at once (cheaper than a NumPy view and a reduction)."""
    if n <= 256:
        size = 4 if y32 else 8
        return max(_struct("IQ"[1 - y32], n).unpack(ctypes.string_at(ptr, n * size))) < c
    return np.maximum.reduce(y.numpy().view((np.uint64, np.uint32)[y32])) < c


def _probe_may_fire(row: Any, c: int, code: int) -> bool:
    """False if the first row of logits rules the probabilities-as-logits probe out
    (it needs every inspected entry in [0, 1] and every row summing to 1); True
    if the probe must run.  ``row`` is a NumPy row, or the address of ``c``
    float32 (``code`` 0) or float64 values.  Its first 16 values are read first:
    logits almost always have one outside [0, 1]."""
    head = min(c, _HEAD)
    if isinstance(row, np.ndarray):
        first = row[:head].tolist()
    else:
        first = _struct("fd"[code], head).unpack(ctypes.string_at(row, head * (4, 8)[code]))
    if not all(0 <= v <= 1 for v in first):  # (NaN too)
        return False
    if c <= _HEAD:
        total = sum(first)
    else:
        if not isinstance(row, np.ndarray):
            size = c * (4, 8)[code]
            row = np.frombuffer(ctypes.string_at(row, size), (np.float32, np.float64)[code])
        with np.errstate(all="ignore"):
            total = float(np.add.reduce(row, dtype=np.float64))
    return not abs(total - 1) > 10 * _PROBE_TOL[code]


def _warn(x: Any) -> None:
    """The probabilities-as-logits probe and its warning, on a NumPy view of ``x``."""
    host = x if isinstance(x, np.ndarray) else x.detach().numpy()
    warn_if_probabilities(native.numpy_namespace(), host, -1, "cross_entropy")


def _buffer(code: int, size: int) -> tuple[Any, int]:
    """This thread's scratch array of at least ``size`` float32 (``code`` 0) or
    float64 values, and its address.  A ``ctypes`` array: on small calls NumPy
    temporaries cost more than their own time (measured: ~2 µs more per call,
    from the allocations they interleave with PyTorch's)."""
    held = getattr(_scratch, "float64" if code else "float32", None)
    if held is None or len(held[0]) < size:
        a = ((ctypes.c_float, ctypes.c_double)[code] * max(size, 256))()
        held = (a, ctypes.addressof(a))
        setattr(_scratch, "float64" if code else "float32", held)
    return held


def _total(values: Any, count: int, code: int) -> float:
    """The sum, in float64, of the first ``count`` entries of a scratch array."""
    if count <= 256:
        return sum(values[:count])
    with np.errstate(all="ignore"):
        flat = np.frombuffer(values, (np.float32, np.float64)[code], count)
        return float(np.add.reduce(flat, dtype=np.float64))


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
) -> float:
    """Run the kernel on ``(n, c)`` C-contiguous logits whose ``n`` indices lie in
    ``[0, c)``; return the reduced loss (0.0 for ``'none'``: the per-row losses
    are at ``lptr``), the gradient of the reduced loss at ``gptr`` if nonzero."""
    columns = c <= _launch.SMALL_C
    od, xs, ys = ((1, n), (0, c, 1), (n, 1)) if columns else ((n, 1), (c, 0, 1), (1, 1))
    has_ignore = 1 if 0 <= ignore_index < c else 0
    denom = float(n)
    if reduction == "mean" and has_ignore:
        denom, bad = native.extension.target_weight_sum(
            code, *od, c, yptr, *ys, y32, ignore_index, 1, 0
        )
        if bad:
            raise _launch.changed_target_error(c)
    scale = 1.0 if reduction != "mean" else (1.0 / denom if denom else 0.0)
    partial, sums, count, kind = None, 0, n, code
    if lptr == 0:
        if columns:  # the columns kernel adds up each block of rows (float64): one sum each
            rows = _launch.COLUMN_ROWS[code]
            count, kind = (n + rows - 1) // rows, 1
            partial, sums = _buffer(1, count)
        else:  # the per-row losses, added up here
            partial, lptr = _buffer(code, n)
    threads = 1 if n * c < _PAR_MIN else native.get_num_threads()
    ls, z, cap = opts
    bad = native.extension.cross_entropy(
        code, *od, c, xptr, *xs, gptr, *xs, 0, 0, 0, 0, yptr, *ys, y32,
        ignore_index if has_ignore else 0, has_ignore, 0, lptr, sums,
        ls, z, cap or 0.0, scale, _launch.ROW_MODE, int(columns), threads, 0, 0,  # ints as doubles
    )  # fmt: skip
    if bad:  # an index read in range by the check, out of range by the kernel
        raise _launch.changed_target_error(c)
    if partial is None:
        return 0.0
    total = _total(partial, count, kind)
    if reduction == "sum":
        return total
    return total / denom if denom else math.nan


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
