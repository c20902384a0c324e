"""Numerically stable helpers on validated, upcast arrays; ``xp`` is passed explicitly.

These are the bodies of the public functions' portable paths and the pieces the
losses share: the max shift, logsumexp, softmax and log-softmax, the sigmoid and
its log, picking each row's target entry, and one-hot rows.  No argument is
checked here (the public layer validates once).
"""

from __future__ import annotations

import math
from typing import Any

from .namespace import device
from .validate import check_axis

__all__ = [
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "neg_abs",
    "normalize_axes",
    "one_hot",
    "pick",
    "shifted",
    "sigmoid",
    "size",
    "softmax",
    "xlogy0",
]


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (an int or a tuple) as non-negative axes, or ``TypeError`` /
    ``ValueError`` if it is not an integer or out of range."""
    check_axis(axis, allow_tuple=True)
    axes = axis if isinstance(axis, tuple) else (axis,)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis={axis} is out of range for an array with {ndim} dimension(s)")
    return tuple(a % ndim for a in axes)


def size(shape: tuple) -> int:
    """The number of elements of ``shape``."""
    return math.prod(shape)


def shifted(xp: Any, x: Any, axis: Any) -> tuple[Any, Any]:
    """``(x - m, m)`` with ``m`` the max along ``axis`` (kept), or 0 where it is ±inf
    or the axis is empty.

    Replacing an infinite max by 0 keeps ``-inf - (-inf)`` and ``inf - inf``
    (NaN) out of rows that are all ``-inf`` or contain ``+inf``.
    """
    axes = normalize_axes(axis, x.ndim)
    if any(x.shape[a] == 0 for a in axes):
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        return x, xp.zeros(shape, dtype=x.dtype, device=device(x))
    m = xp.max(x, axis=axis)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    # the guard on the reduced shape, then the kept axes restored: a compiler
    # (XLA) then fuses the guard into its consumers instead of a pass of its own
    m = xp.reshape(m, tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
    return x - m, m


def logsumexp(xp: Any, x: Any, axis: Any, keepdims: bool = True) -> Any:
    """``log(sum(exp(x)))`` along ``axis`` on the max-shifted ``x``; ``-inf`` over an empty axis.

    The terms equal to the max contribute exactly ``k`` (their number) to the
    shifted sum; the others' sum ``r`` is added through ``log1p(k - 1 + r)``,
    so that ``logsumexp([0, -40])`` is ``4.25e-18``, not ``log(1.0) = 0``
    (SciPy's gh-18295).
    """
    axes = normalize_axes(axis, x.ndim)
    if any(x.shape[a] == 0 for a in axes):
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
        out = xp.full(shape, -float("inf"), dtype=x.dtype, device=device(x))
    else:
        z, m = shifted(xp, x, axis)
        ez = xp.exp(z)
        top = z == 0  # the max itself (exp(0) = 1 exactly)
        rest = xp.sum(xp.where(top, xp.zeros_like(ez), ez), axis=axis, keepdims=True)
        k = xp.sum(xp.astype(top, x.dtype), axis=axis, keepdims=True)
        out = xp.log1p((k - 1) + rest) + m
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_softmax(xp: Any, x: Any, axis: int) -> Any:
    """``(x - m) - log(sum(exp(x - m)))`` along ``axis``."""
    if x.shape[axis] == 0:
        return x
    # subtracting the full logsumexp from x would cancel catastrophically for
    # large |x| (-1e30 - (-1e30 + log 3) == 0)
    z, _ = shifted(xp, x, axis)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def softmax(xp: Any, x: Any, axis: int) -> Any:
    """``exp(x - m) / sum(exp(x - m))`` along ``axis``."""
    z, _ = shifted(xp, x, axis)
    e = xp.exp(z)
    return e / xp.sum(e, axis=axis, keepdims=True)


def neg_abs(xp: Any, x: Any) -> Any:
    """``-|x|`` written as two branches, so that autograd (PyTorch, JAX) takes the
    slope of the ``x >= 0`` branch at 0 (``-1``), not ``abs``'s 0 at its kink:
    the functions built on it then have their true derivative at ``x = 0``."""
    return xp.where(x >= 0, -x, x)


def sigmoid(xp: Any, x: Any) -> Any:
    """The logistic function with no positive exponent."""
    e = xp.exp(neg_abs(xp, x))  # in (0, 1]: never overflows
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_sigmoid(xp: Any, x: Any) -> Any:
    """``min(x, 0) - log1p(exp(-|x|))``, each term with its one-sided slope at 0."""
    return xp.where(x >= 0, xp.zeros_like(x), x) - xp.log1p(xp.exp(neg_abs(xp, x)))


def pick(xp: Any, x: Any, t: Any) -> Any:
    """``x[..., t]`` row by row (the target entry), without a one-hot matrix."""
    return xp.take_along_axis(x, t[..., None], axis=-1)[..., 0]


def one_hot(xp: Any, t: Any, n: int, dtype: Any) -> Any:
    """``(..., n)`` rows of ``dtype``, 1 at each row's class ``t``."""
    classes = xp.arange(n, device=device(t))
    return xp.astype(t[..., None] == classes, dtype)


def xlogy0(xp: Any, t: Any, logp: Any) -> Any:
    """``t * logp`` with ``0 * -inf = 0`` (a class with zero target mass)."""
    return xp.where(t == 0, xp.zeros_like(logp), t * logp)
