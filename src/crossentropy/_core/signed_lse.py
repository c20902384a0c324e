r"""``log |sum(b * exp(a))|`` and its sign, for real and complex ``a``: SciPy's ``logsumexp(b=, return_sign=)``.

The entries at the maximum (largest real part) are summed apart from the rest,
so that :math:`\log(\text{top} + \text{rest}) = \log|\text{top}| +
\operatorname{log1p}(\text{rest}/\text{top})` keeps the precision of a tiny
``rest``; an infinite or NaN maximum, and sums that cancel, are computed
directly.  A zero weight removes its entry even where ``a`` is infinite or NaN.
"""

from __future__ import annotations

from typing import Any

from .mathops import normalize_axes
from .namespace import device

__all__ = ["as_inexact", "signed_logsumexp"]


def as_inexact(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """``a`` and ``b`` in one floating (or complex) dtype, broadcast together:
    integers become the library's default floating dtype, as in SciPy and
    ``torch.logsumexp``; a floating and an integer array promote as the
    library does (NumPy: float32 with int64 gives float64, as SciPy)."""
    inexact = ("real floating", "complex floating")
    dtype = a.dtype
    if b is not None:
        try:
            dtype = xp.result_type(a.dtype, b.dtype)
        except Exception:  # libraries that refuse to mix integers and floats
            dtype = a.dtype if xp.isdtype(a.dtype, inexact) else b.dtype
    if not xp.isdtype(dtype, inexact):
        dtype = xp.asarray(0.0, device=device(a)).dtype
    a = xp.astype(a, dtype)
    if b is not None:
        a, b = xp.broadcast_arrays(a, xp.astype(b, dtype))
    return a, b


def _sum(xp: Any, v: Any, axes: tuple) -> Any:
    return xp.sum(v, axis=axes, keepdims=True)


def signed_logsumexp(xp: Any, a: Any, b: Any, axis: Any) -> tuple[Any, Any, Any]:
    """``(out, sign, weights)`` along ``axis`` (kept): ``out = log|S|`` for real
    ``a`` (the complex ``log S`` for complex ``a``), ``sign`` of ``S`` (a unit
    complex number for complex ``a``), and ``weights = b e^a / S`` (the
    gradient of ``out``; NaN where ``S = 0``), with ``S = sum(b * exp(a))``."""
    axes = normalize_axes(axis, a.ndim)
    complex_ = xp.isdtype(a.dtype, "complex floating")
    if b is not None:
        a = xp.where(b == 0, xp.full_like(a, -float("inf")), a)
    re = xp.real(a) if complex_ else a
    if any(a.shape[i] == 0 for i in axes):
        shape = tuple(1 if i in axes else n for i, n in enumerate(a.shape))
        out = xp.full(shape, -float("inf"), dtype=a.dtype, device=device(a))
        return out, xp.zeros_like(out), xp.zeros_like(a)
    m = xp.max(re, axis=axes, keepdims=True)
    finite = xp.isfinite(m)
    m = xp.where(finite, m, xp.zeros_like(m))
    e = xp.exp(a - xp.astype(m, a.dtype))
    if b is not None:
        e = b * e
    if complex_:
        s = _sum(xp, e, axes)
        size = xp.abs(s)
        unit = s / xp.astype(xp.where(size > 0, size, xp.ones_like(size)), s.dtype)
        return xp.log(s) + xp.astype(m, s.dtype), unit, e / s
    at_max = (re == m) & finite
    zero = xp.zeros_like(e)
    top = _sum(xp, xp.where(at_max, e, zero), axes)
    rest = _sum(xp, xp.where(at_max, zero, e), axes)
    s = top + rest
    r = rest / xp.where(top != 0, top, xp.ones_like(top))
    split = (top != 0) & (r > -1)
    safe_r = xp.where(split, r, xp.zeros_like(r))
    out = xp.where(split, xp.log(xp.abs(top)) + xp.log1p(safe_r), xp.log(xp.abs(s))) + m
    return out, xp.sign(s), e / s
