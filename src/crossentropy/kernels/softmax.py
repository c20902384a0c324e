"""The fast path of ``logsumexp``, ``softmax`` and ``log_softmax`` on large inputs.

One read of each row for its max and sum of exponentials (chunked, online),
then one pass that writes the result.  Only the last axis of a NumPy array or
of a PyTorch CPU tensor that needs no gradient, in float32 or float64, when the
rows are contiguous; every other call returns ``None`` and the caller falls
through to the portable code.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from . import native
from .native import rows_geometry, strided, strided_array

__all__ = ["logsumexp_rows", "softmax_rows"]

#: smaller inputs stay on the portable path (the kernels pay off above this)
MIN_SIZE = 1 << 14

_MODES = {"logsumexp": 0, "softmax": 1, "log_softmax": 2}


def _empty(like: Any, shape: tuple) -> Any:
    """A new array of ``like``'s library and (float32/float64) dtype; tensors are
    NumPy memory seen through ``torch.from_numpy`` (huge pages: cheaper faults)."""
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=like.dtype)
    import torch

    return torch.from_numpy(np.empty(shape, dtype=str(like.dtype).removeprefix("torch.")))


def _applies(x: Any, axis: Any) -> Any:
    """``x`` as a :class:`~.native.Strided` if the kernel applies, else None."""
    if not native.enabled() or not isinstance(axis, int) or x.ndim == 0:
        return None
    if axis % x.ndim != x.ndim - 1:
        return None
    if array_api_compat.is_torch_array(x):
        import torch

        if x.requires_grad and torch.is_grad_enabled():
            return None
    elif not isinstance(x, np.ndarray):
        return None
    s = strided(x)
    if s is None or s.code > 1 or s.strides[-1] != 1:
        return None
    size = 1
    for n in s.shape:
        size *= n
    return s if size >= MIN_SIZE and s.shape[-1] > 0 else None


def _call(s: Any, kind: str) -> tuple[Any, Any] | None:
    geo = rows_geometry(s.shape[:-1], s.strides[:-1], True)
    if geo is None:
        return None
    outer, inner, s0, s1 = geo
    lse = _empty(s.array, tuple(s.shape[:-1]))
    out = o = None
    os_ = (0, 0, 0)
    if kind != "logsumexp":
        out = _empty(s.array, tuple(s.shape))
        o = strided_array(out)
        go = rows_geometry(o.shape[:-1], o.strides[:-1], True)
        if go is None or go[:2] != (outer, inner):
            return None
        os_ = (go[2], go[3], 1)
    native.extension.softmax(
        s.code, outer, inner, s.shape[-1], s.ptr, s0, s1, 1, 0 if o is None else o.ptr, *os_,
        strided_array(lse).ptr, _MODES[kind], native.get_num_threads(),
    )  # fmt: skip
    return lse, out


def softmax_rows(kind: str, x: Any, axis: int) -> Any:
    """``softmax(x, axis)`` or ``log_softmax(x, axis)`` by the kernel, or ``None``."""
    s = _applies(x, axis)
    if s is None:
        return None
    result = _call(s, kind)
    return None if result is None else result[1]


def logsumexp_rows(x: Any, axis: Any, keepdims: bool, grad: bool) -> tuple[Any, dict] | None:
    """``_logsumexp_rule``'s ``(value, {"x": softmax})`` by the kernel, or ``None``."""
    s = _applies(x, axis)
    if s is None:
        return None
    result = _call(s, "softmax" if grad else "logsumexp")
    if result is None:
        return None
    lse, p = result
    if keepdims:
        lse = lse[..., None]
    return lse, ({"x": p} if grad else {})
