"""The fused cross-entropy kernel's launch: layout plan, buffers, reduction, results.

:func:`run` hands a prepared :class:`~crossentropy._core.prepared.ClassCall`
to the C kernel (strided, in place: no copies of the logits) and returns the
value and the gradients, or ``None`` when the layout does not fit the kernel.
:func:`host_arrays` gives NumPy views of PyTorch CPU tensors, so that a call on
tensors is validated and run as on NumPy arrays.  The entry point that decides
whether the kernel applies is :mod:`crossentropy.kernels.cross_entropy`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from .._core.errors import TargetIndexError
from .._core.namespace import restore
from .._core.options import CrossEntropyOptions
from .._core.prepared import ClassCall
from .._core.reduction import grad_scale, reduce
from .._core.validate import check_index_target
from . import native
from .native import Strided, rows_geometry, strided, strided_array

__all__ = ["changed_target_error", "host_arrays", "host_buffer", "package", "run", "tensors"]

#: classes up to this many are processed across rows (columns kernel)
SMALL_C = 32
#: 0: rows with a finite maximum take the fast path; -n: the exact path only,
#: one-pass statistics for rows longer than n (tests compare the two)
ROW_MODE = 0
#: the columns kernel keeps three (C, rows-per-block) buffers per thread
_COLUMN_BUFFER_LIMIT = 16 << 20
#: rows per block of the columns kernel (float32, float64): a reduced loss
#: comes back as one sum per block
COLUMN_ROWS = (32, 16)
#: class-index dtypes the kernel reads in place (codes of ``strided``)
_INDEX_CODES = {2: 0, 4: 1}  # int64, int32 -> the kernel's y32 flag
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _contiguous(xp: Any, a: Any) -> Any:
    """``a`` C-contiguous and aligned (a copy if it is not)."""
    if isinstance(a, (np.ndarray, np.generic)):  # unbatched input: 0-d ops give NumPy scalars
        return np.require(a, requirements=("C", "A"))
    return a.contiguous()


def _class_last(xp: Any, a: Any, axis: int) -> Any:
    return a if axis == a.ndim - 1 else xp.moveaxis(a, axis, -1)


def _empty(xp: Any, like: Any, shape: tuple) -> Any:
    """A new array of ``like``'s library and dtype.  CPU tensors are NumPy memory
    seen through ``torch.from_numpy``: NumPy asks the kernel for huge pages, so
    the page faults of a large fresh buffer cost half as much."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=like.dtype)
    import torch

    dtype = {torch.float32: np.float32, torch.float64: np.float64}.get(like.dtype)
    if dtype is None or like.device.type != "cpu":
        return xp.empty(shape, dtype=like.dtype, device=like.device)
    return torch.from_numpy(np.empty(shape, dtype=dtype))


def _fold(lead: tuple, a: Strided, rows_first: bool, od: tuple | None) -> tuple | None:
    """``(s0, s1, class stride)`` of ``a`` for rows ``(O, D) == od``, or None."""
    geo = rows_geometry(lead, a.strides[:-1], rows_first)
    if geo is None or (od is not None and geo[:2] != od):
        return None
    return geo


def _class_indices(b: ClassCall, lead: tuple, rows_first: bool, od: tuple) -> tuple:
    """``(pointer, (s0, s1), y32, keep, (ignore, has_ignore))``: the caller's
    class-index target as the kernel reads it (row ``o * D + d`` at ``o * s0 +
    d * s1``, for the logits' ``od = (O, D)``), in place when it is int64 or
    int32 and C-ordered or folding like the logits, else as a contiguous int64
    copy (``keep``), and the kernel's ``ignore_index`` arguments for it."""
    t = b.target
    if isinstance(t, np.generic):
        t = np.asarray(t)
    y = strided(t)
    if y is not None and y.code in _INDEX_CODES:
        ignore = _ignore(b.ignore_index)
        if _c_ordered(y):
            return y.ptr, (od[1], 1), _INDEX_CODES[y.code], y, ignore
        geo = rows_geometry(lead, y.strides, rows_first)
        if geo is not None and geo[:2] == od:
            return y.ptr, geo[2:], _INDEX_CODES[y.code], y, ignore
    t, ignore = _int64_copy(t, b.ignore_index)
    return strided_array(t).ptr, (od[1], 1), 0, t, ignore


def _int64_copy(t: Any, ignore_index: int | None) -> tuple[Any, tuple[int, int]]:
    """A contiguous, aligned int64 copy of the class indices ``t`` (any integer
    dtype, NumPy or PyTorch) and the kernel's ``(ignore, has_ignore)`` for it.

    Every value converts exactly, except uint64 values beyond int64's range,
    which become -1 (out of range for the kernel, as they were).  An
    ``ignore_index`` that only uint64 can hold marks its rows with int64's
    minimum, which no converted value equals.
    """
    uint64 = str(t.dtype).removeprefix("torch.") == "uint64"
    marker = None
    if uint64 and ignore_index is not None and _INT64_MAX < ignore_index < 1 << 64:
        marker = t == ignore_index
    if isinstance(t, np.ndarray):
        y = np.array(t, dtype=np.int64, order="C")  # a copy: aligned, whatever t was
        if uint64:
            y[t > _INT64_MAX] = -1
        if marker is not None:
            y[marker] = _INT64_MIN
    else:
        import torch

        y = t.to(torch.int64).contiguous().clone()
        if uint64:
            y[t.to(torch.int64) < 0] = -1  # the wrapped values
        if marker is not None:
            y[marker] = _INT64_MIN
    if marker is not None:
        return y, (_INT64_MIN, 1)
    return y, _ignore(ignore_index)


def _c_ordered(a: Strided) -> bool:
    """True if element ``i`` of ``a`` in C order is at ``ptr + i`` elements."""
    step = 1
    for n, s in zip(reversed(a.shape), reversed(a.strides)):
        if n != 1 and s != step:
            return False
        step *= n
    return True


def _ignore(ignore_index: int | None) -> tuple[int, int]:
    """``(ignore, has_ignore)``: the kernel's ``ignore_index`` arguments for int64
    (or int32) class indices; an integer beyond int64's range equals none of them."""
    if ignore_index is None or not _INT64_MIN <= ignore_index <= _INT64_MAX:
        return 0, 0
    return int(ignore_index), 1


class _Plan(NamedTuple):
    """The kernel's arguments for one call, besides the gradient buffers."""

    columns: bool  # the columns kernel (else the rows kernel)
    od: tuple  # rows r = o * D + d: (O, D)
    xs: tuple  # element strides of o, d and the class in the logits
    gs: tuple  # the same in the gradient
    tp: int  # probability targets: pointer (0 for class indices)
    ts: tuple  # and strides
    yp: int  # class indices: pointer (0 for probabilities)
    ys: tuple  # and strides of o, d
    y32: int  # 1 if the class indices are int32
    ignore: tuple  # (ignore, has_ignore) for those class indices
    wp: int  # contiguous class weights, or 0
    keep: tuple  # arrays the pointers point into, alive until the call returns


def _plan(b: ClassCall, x: Strided, g_strides: tuple | None) -> _Plan | None:
    """The kernel's layout arguments for ``x`` (and the gradient's class-last
    element strides ``g_strides``), or ``None`` if the layout is not supported."""
    C = b.n_classes
    lead = x.shape[:-1]
    t = strided(b.target) if b.probs else None
    if b.probs and (t is None or t.code != x.code):
        return None
    columns = (
        C <= SMALL_C
        or x.strides[-1] != 1
        or (g_strides is not None and g_strides[-1] != 1)
        or (t is not None and t.strides[-1] != 1)
    )
    if columns and 3 * C * 32 * 8 > _COLUMN_BUFFER_LIMIT:
        return None
    geo = _fold(lead, x, not columns, None)
    if geo is None:
        return None
    od = geo[:2]
    gs = (0, 0, 0)
    if g_strides is not None:
        gg = _fold(lead, Strided(None, 0, x.shape, g_strides, x.code), not columns, od)
        if gg is None:
            return None
        gs = (gg[2], gg[3], g_strides[-1])
    tp, ts, y = 0, (0, 0, 0), (0, (0, 0), 0, None, (0, 0))
    if t is not None:
        tg = _fold(lead, t, not columns, od)
        if tg is None:
            return None
        tp, ts = t.ptr, (tg[2], tg[3], t.strides[-1])
    else:
        y = _class_indices(b, lead, not columns, od)
    weight = None if b.weight is None else _contiguous(b.xp, b.weight)
    wp = 0 if weight is None else strided_array(weight).ptr
    xs = (geo[2], geo[3], x.strides[-1])
    return _Plan(columns, od, xs, gs, tp, ts, y[0], y[1], y[2], y[4], wp, (t, y[3], weight))


def _launch(
    b: ClassCall,
    x: Strided,
    plan: _Plan,
    gp: int,
    dtp: int,
    reused: bool,
    options: CrossEntropyOptions,
    scale: float,
    loss: Any,
    per_row: bool,
) -> None:
    p, lp = plan, strided_array(loss).ptr
    bad = native.extension.cross_entropy(
        x.code, *p.od, b.n_classes, x.ptr, *p.xs, gp, *p.gs, p.tp, *p.ts,
        p.yp, *p.ys, p.y32, *p.ignore, p.wp, lp if per_row else 0, 0 if per_row else lp,
        options.label_smoothing, options.z_loss, options.softcap or 0.0, scale, ROW_MODE,
        int(p.columns), native.get_num_threads(), dtp, int(reused),
    )  # fmt: skip
    if bad:
        _raise_bad_target(b)


def _raise_bad_target(b: ClassCall) -> None:
    """The kernel met a class index outside ``[0, C)`` that the checks before it
    did not see (the target changed meanwhile): the same error as the check."""
    check_index_target(b.xp, b.target, b.n_classes, b.ignore_index)
    raise changed_target_error(b.n_classes)


def changed_target_error(n_classes: int) -> TargetIndexError:
    """The error of a class index outside ``[0, C)`` that the kernel read after
    the checks had passed: the target changed during the call."""
    return TargetIndexError(
        f"a class index outside [0, {n_classes - 1}] (C={n_classes}) was read while "
        f"computing: the target changed during the call (another thread writing it?)"
    )


def _grad_shape(b: ClassCall, x: Strided) -> tuple:
    shape = list(x.shape[:-1])
    shape.insert(b.axis, b.n_classes)
    return tuple(shape)


def _class_last_strides(b: ClassCall, shape: tuple) -> tuple:
    """Element strides of the class-last view of a C-contiguous ``shape``."""
    strides, step = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        strides[i] = step
        step *= shape[i]
    strides.append(strides.pop(b.axis))
    return tuple(strides)


def _denominator(b: ClassCall, x: Strided, p: _Plan) -> float:
    """What ``'mean'`` divides by: the rows, or the weights of the counted targets."""
    if b.probs:
        return float(p.od[0] * p.od[1])
    total, bad = native.extension.target_weight_sum(
        x.code, *p.od, b.n_classes, p.yp, *p.ys, p.y32, *p.ignore, p.wp
    )
    if bad:
        _raise_bad_target(b)
    return total


def _on_host(a: Any) -> Any:
    """A NumPy view of a CPU tensor that needs no gradient (else ``a``)."""
    return a if isinstance(a, (np.ndarray, np.generic)) else a.numpy()


def _reduce(b: ClassCall, loss: Any, denom: float, host: Any, dtype: Any) -> Any:
    """``reduce`` in NumPy on the per-row losses or on the columns kernel's
    block sums (small tensor reductions in PyTorch wake its thread pool for
    nothing), in the compute ``dtype``, as ``b.xp``'s array."""
    if b.reduction == "none":
        return loss
    value = reduce(host, _on_host(loss), b.reduction, denom).astype(dtype)
    if isinstance(b.x, np.ndarray):
        return value
    import torch

    return torch.from_numpy(np.asarray(value))


def run(
    b: ClassCall,
    options: CrossEntropyOptions,
    need_grad: bool,
    out: Any = None,
    target_grad: bool = False,
) -> tuple[Any, Any, Any] | None:
    """``(value, gradient, target gradient)`` from the kernel (the gradients
    ``None`` unless asked for), or ``None`` if it does not apply.  Gradients have
    the caller's layout and the compute dtype; ``out`` (that shape and dtype)
    receives the input's when given, and may be the input itself.  A
    temperature is applied to a scaled copy of the logits (the kernel has
    none), its factor to the gradient's scale."""
    xp = b.xp
    inv_t = 1.0
    if options.temperature != 1:
        inv_t, options = options.tempered()
        b = dataclasses.replace(b, x=b.x * inv_t)
    x = strided(b.x)
    if x is None or x.code > 1 or any(n == 0 for n in x.shape):
        return None
    need_grad = need_grad or target_grad
    g_full = g = dt_full = None
    g_strides = None
    if need_grad and out is None:
        g_strides = _class_last_strides(b, _grad_shape(b, x))
    elif need_grad:
        g = strided(_class_last(xp, out, b.axis))
        if g is None or g.code != x.code:
            return None
        g_full, g_strides = out, g.strides
    plan = _plan(b, x, g_strides)
    if plan is None:
        return None
    denom = _denominator(b, x, plan) if options.normalizer is None else options.normalizer
    if need_grad and out is None:
        g_full = _empty(xp, b.x, _grad_shape(b, x))
        g = strided_array(_class_last(xp, g_full, b.axis))
    dtp = 0
    if target_grad:
        dt_full = _empty(xp, b.x, _grad_shape(b, x))
        dt = strided_array(_class_last(xp, dt_full, b.axis))
        if g is None or dt.strides != g.strides:  # g is set: target_grad implies need_grad
            return None
        dtp = dt.ptr
    per_row = b.reduction == "none" or not plan.columns
    if per_row:
        loss = _empty(xp, b.x, tuple(x.shape[:-1]))
    else:  # the columns kernel sums each block's losses (no per-row array)
        rows = plan.od[0] * plan.od[1]
        nb = COLUMN_ROWS[x.code]
        loss = np.zeros((rows + nb - 1) // nb)
    host = native.numpy_namespace()
    scale = float(grad_scale(host, _on_host(loss), b.reduction, denom)) * inv_t if need_grad else 1.0
    gp = 0 if g is None else g.ptr
    _launch(b, x, plan, gp, dtp, out is not None, options, scale, loss, per_row)
    dtype = (np.float32, np.float64)[x.code]
    return _reduce(b, loss, denom, host, dtype), g_full, dt_full


def package(b: ClassCall, wrt: tuple[str, ...], value: Any, g: Any, dt: Any) -> tuple[Any, dict]:
    """What ``evaluate_cross_entropy`` returns: the value and the asked-for gradients,
    in the caller's dtype (a host batch's is its compute dtype: nothing to cast)."""

    def cast(a: Any) -> Any:
        return a if b.dtype == b.x.dtype else restore(b.xp, a, b.dtype)

    grads = {}
    if "input" in wrt:
        grads["input"] = cast(g)
    if "target" in wrt:
        grads["target"] = cast(dt)
    return cast(value), grads


# -- PyTorch CPU tensors through NumPy views ------------------------------------------


@functools.cache
def _host_kinds() -> tuple:
    """PyTorch's tensor types and dtypes that :func:`host_arrays` takes, and the
    NumPy dtypes of the same values (targets and weights may be NumPy arrays)."""
    import torch

    types = (torch.Tensor, torch.nn.Parameter), torch.strided
    inputs = (torch.float32, torch.float64)
    floats = (torch.float16, torch.float32, torch.float64)
    ints = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    np_floats = tuple(np.dtype(d) for d in ("float16", "float32", "float64"))
    np_ints = tuple(np.dtype(d) for d in ("int8", "int16", "int32", "int64", "uint8"))
    return types, inputs, floats, ints, np_floats, np_ints


def _host_view(a: Any, dtypes: tuple, np_dtypes: tuple, grad: bool) -> Any:
    """A NumPy view of ``a`` (a CPU tensor or NumPy array of one of the dtypes,
    that autograd need not see when ``grad``), or ``None``."""
    types, strided_layout = _host_kinds()[0]
    if type(a) is np.ndarray:
        return a if a.dtype in np_dtypes else None
    if (
        type(a) not in types
        or a.dtype not in dtypes
        or a.device.type != "cpu"
        or a.layout != strided_layout
        or a.is_neg()
        or (grad and a.requires_grad)
    ):
        return None
    try:
        return a.detach().numpy()
    except (RuntimeError, TypeError):  # a tensor of a torch.func transform, say
        return None


def host_arrays(input: Any, target: Any, weight: Any, ignore_index: Any) -> tuple | None:
    """``(input, target, weight)`` as NumPy views of the same memory, or ``None``.

    Only for a non-empty float32/float64 PyTorch CPU ``input`` whose call the
    kernels can take: an integer target (a class-index check then fails with
    the same message on the views), a float16/32/64 target of ``input``'s shape
    (probabilities), a float16/32/64 ``weight`` or none, none of them needing a
    gradient.  Anything else (``None``) is prepared as tensors: its errors name
    PyTorch dtypes, or autograd must see more than ``input``.
    """
    if not native.enabled() or not array_api_compat.is_torch_array(input):
        return None
    import torch

    native.use_torch_threads()  # PyTorch tensors: the kernels' threads are PyTorch's

    _types, inputs, floats, ints, np_floats, np_ints = _host_kinds()
    grad = torch.is_grad_enabled()
    if (
        not isinstance(ignore_index, (int, np.integer, type(None)))
        or not isinstance(target, (np.ndarray, torch.Tensor))
        or input.numel() == 0
    ):
        return None
    x = _host_view(input, inputs, (), False)
    if x is None:
        return None
    if tuple(target.shape) == x.shape and (
        target.dtype in floats if isinstance(target, torch.Tensor) else target.dtype in np_floats
    ):
        t = _host_view(target, floats, np_floats, grad)
    else:
        t = _host_view(target, ints, np_ints, grad)
    if t is None:
        return None
    if weight is None:
        return x, t, None
    w = _host_view(weight, floats, np_floats, grad)
    return None if w is None else (x, t, w)


def host_buffer(out: Any) -> Any:
    """A NumPy view of ``out``, a float32/float64 PyTorch CPU tensor, or ``None``."""
    return _host_view(out, _host_kinds()[1], (), False)


def _tensor(a: Any) -> Any:
    """A NumPy result as a PyTorch tensor of the same memory (else ``a``)."""
    if isinstance(a, np.ndarray):
        import torch

        return torch.from_numpy(a)
    if isinstance(a, np.generic):
        import torch

        return torch.from_numpy(np.asarray(a))
    return a


def tensors(result: tuple) -> tuple:
    """:func:`run`'s ``(value, gradient, target gradient)`` as PyTorch tensors."""
    return tuple(_tensor(a) for a in result)
