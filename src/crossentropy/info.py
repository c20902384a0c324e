r"""Information theory on probability vectors: entropy, cross-entropy, KL and JS divergence.

Every function works along ``axis`` (default -1; ``dim=``, PyTorch's name, is
accepted too) of arrays holding probability vectors, returns one value per
vector, and measures in nats unless ``base`` is given (``base=2`` for bits).  Zero-probability terms follow the convention
:math:`0 \log 0 = 0`.

Note that :func:`crossentropy.info.cross_entropy` here is :math:`H(p, q)`
between two *distributions*, while :func:`crossentropy.cross_entropy` is the
PyTorch loss on *logits*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._core.aliases import axis_or_dim
from ._core.namespace import namespace, numeric_guard, restore, to_bool, upcast
from ._core.rules import defines_grad
from ._core.validate import check_axis, check_floating
from .jax_rules import jax_rule

__all__ = ["cross_entropy", "entropy", "information", "js_divergence", "kl_divergence"]


def _probabilities(xp: Any, p: Any, name: str, axis: int | None) -> Any:
    """Check that ``p`` holds probabilities (entries in [0, 1]) and ``axis`` is valid.

    Vectors are used as given, not renormalised: the formulas are applied to
    exactly the numbers passed, as a user computing them by hand would.
    """
    check_floating(xp, p, name)
    if axis is not None:
        check_axis(axis)
    if axis is not None and (p.ndim == 0 or not -p.ndim <= axis < p.ndim):
        raise ValueError(f"axis={axis} is out of range for {name} with shape {tuple(p.shape)}")
    bad = ~((p >= 0) & (p <= 1))
    if to_bool(xp.any(bad)):
        raise ValueError(f"{name} must hold probabilities in [0, 1], found {float(p[bad][0])!r}")
    return p


@dataclass
class _Vectors:
    """Checked probability arrays, broadcast together, in their compute dtype."""

    xp: Any
    arrays: list
    dtype: Any  # the result's dtype
    shapes: dict  # each argument's own shape, by name
    scale: float  # 1 / log(base)
    axis: int | None  # the vectors' axis (None: element by element)

    def finish(self, value: Any, grads: dict, cotangent: Any) -> tuple[Any, dict]:
        """The value and the gradients in the result's dtype, times the scale of
        the base and the cotangent (one per vector, or per element), each summed
        back to its argument's shape."""
        xp, out = self.xp, {}
        for name, g in grads.items():
            g = g * self.scale
            if cotangent is not None:
                ct = cotangent if self.axis is None else xp.expand_dims(cotangent, axis=self.axis)
                g = g * ct
            out[name] = restore(xp, _unbroadcast(xp, g, self.shapes[name]), self.dtype)
        return restore(xp, value * self.scale, self.dtype), out


def _prepare(names: tuple[str, ...], arrays: tuple, axis: int | None, base: Any) -> _Vectors:
    """The arrays checked, broadcast together and in their common compute dtype.
    Two arrays must have the same length along ``axis`` (the number of outcomes):
    only the other axes broadcast."""
    scale = _scale(base)
    xp, arrays = namespace(*arrays, names=names, required=len(names))
    shapes = {n: tuple(a.shape) for n, a in zip(names, arrays)}
    arrays = [_probabilities(xp, upcast(xp, a), n, axis) for n, a in zip(names, arrays)]
    if len(arrays) == 2 and axis is not None:
        a, b = (arr.shape[axis] for arr in arrays)
        if a != b:
            raise ValueError(
                f"{names[0]} and {names[1]} must have the same length along axis={axis} (the "
                f"number of outcomes), got {a} and {b} (shapes {tuple(arrays[0].shape)} and "
                f"{tuple(arrays[1].shape)})"
            )
    if len(arrays) == 2:
        try:
            arrays = list(xp.broadcast_arrays(*arrays))
        except Exception:
            raise ValueError(
                f"{names[0]} of shape {tuple(arrays[0].shape)} and {names[1]} of shape "
                f"{tuple(arrays[1].shape)} cannot be broadcast together"
            ) from None
    dtype = xp.result_type(*arrays)
    arrays = [xp.astype(a, dtype) for a in arrays]
    return _Vectors(xp, arrays, dtype, shapes, scale, axis)


def _unbroadcast(xp: Any, g: Any, shape: tuple) -> Any:
    """``g`` summed over the axes along which an argument of ``shape`` was broadcast."""
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.reshape(g, shape)


def _log(xp: Any, p: Any) -> tuple[Any, Any]:
    """``(log p, positive mask)`` with ``log 0`` replaced by 0 (masked out by callers)."""
    positive = p > 0
    return xp.log(xp.where(positive, p, xp.ones_like(p))), positive


def _scale(base: float | None) -> float:
    if base is None:
        return 1.0
    if not base > 0 or base == 1:
        raise ValueError(f"base must be positive and not 1, got {base!r}")
    return 1.0 / math.log(base)


def information(p: Any, *, base: float | None = None) -> Any:
    r"""Self-information (surprisal) :math:`I(p) = -\log p` of events of probability ``p``.

    Parameters
    ----------
    p : array_like, floating
        Probabilities in [0, 1], any shape.
    base : float, optional, keyword-only
        Logarithm base; nats by default, 2 for bits.

    Returns
    -------
    array
        Same shape and dtype as ``p``; ``inf`` where ``p == 0``.

    Notes
    -----
    A certain event (:math:`p = 1`) carries no information.  PyTorch:
    ``-torch.log(p)`` (``-torch.log2(p)`` for bits).

    Examples
    --------
    >>> from crossentropy import info
    >>> info.information([1.0, 0.5, 0.25], base=2)
    array([-0.,  1.,  2.])
    """
    return _information_rule(p, base=base)[0]


@defines_grad(information, "p")
@numeric_guard
def _information_rule(
    p: Any, *, base: float | None = None, wrt: tuple[str, ...] = (), cotangent: Any = None
) -> tuple[Any, dict]:
    v = _prepare(("p",), (p,), None, base)
    (x,) = v.arrays
    grads = {"p": -1 / x} if "p" in wrt else {}  # -inf at p = 0
    return v.finish(-v.xp.log(x), grads, cotangent)


def entropy(
    p: Any, *, axis: int | None = None, base: float | None = None, dim: int | None = None
) -> Any:
    r"""Shannon entropy :math:`H(p) = -\sum_i p_i \log p_i` of probability vectors.

    Parameters
    ----------
    p : array_like, floating
        Probability vectors along ``axis`` (non-negative, summing to 1).
    axis : int, default -1, keyword-only
    base : float, optional, keyword-only
        2 for bits; nats by default.
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

    Returns
    -------
    array
        ``p``'s shape without ``axis``; ``p``'s dtype.

    Raises
    ------
    ValueError
        Entries outside [0, 1].

    Notes
    -----
    ``p`` is used as given, not renormalised (SciPy's ``entropy`` divides by
    the sum first): ``[0.001, 0.001, 0.001, 0.999]`` sums to 1.002, and its
    0.0313 bits below is the formula applied to those exact numbers.
    The expected self-information; maximal (:math:`\log C`) for the uniform
    distribution, 0 for a one-hot vector.  PyTorch:
    ``torch.distributions.Categorical(probs=p).entropy()``.

    Examples
    --------
    Four outcomes, in bits: equally likely (2 bits), one more likely than the
    others, and one almost certain:

    >>> import crossentropy as ce
    >>> float(ce.entropy([0.25, 0.25, 0.25, 0.25], base=2))
    2.0
    >>> round(float(ce.entropy([0.1, 0.1, 0.1, 0.7], base=2)), 4)
    1.3568
    >>> round(float(ce.entropy([0.001, 0.001, 0.001, 0.999], base=2)), 4)
    0.0313
    """
    return _entropy_rule(p, axis=axis, base=base, dim=dim)[0]


@jax_rule(last_axis=True)
@defines_grad(entropy, "p")
@numeric_guard
def _entropy_rule(
    p: Any,
    *,
    axis: int | None = None,
    base: float | None = None,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    v = _prepare(("p",), (p,), axis, base)
    xp, (x,) = v.xp, v.arrays
    log_p, pos = _log(xp, x)
    value = -xp.sum(xp.where(pos, x * log_p, xp.zeros_like(x)), axis=axis)
    grads = {}
    if "p" in wrt:  # dH/dp_i = -(log p_i + 1): infinite at p_i = 0
        grads["p"] = -(xp.where(pos, log_p, xp.full_like(x, -math.inf)) + 1)
    return v.finish(value, grads, cotangent)


def cross_entropy(
    p: Any, q: Any, *, axis: int | None = None, base: float | None = None, dim: int | None = None
) -> Any:
    r"""Cross-entropy :math:`H(p, q) = -\sum_i p_i \log q_i` between two distributions.

    Parameters
    ----------
    p : array_like, floating
        Reference ("true") probability vectors along ``axis``.
    q : array_like, floating
        Model probability vectors, of ``p``'s length along ``axis`` and
        broadcastable with ``p`` along the other axes.
    axis : int, default -1, keyword-only
    base : float, optional, keyword-only
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

    Returns
    -------
    array
        One value per vector; ``inf`` where ``q_i = 0 < p_i``.

    Raises
    ------
    ValueError
        Entries outside [0, 1], shapes that do not broadcast.

    See Also
    --------
    crossentropy.cross_entropy : the loss on logits and class indices.

    Notes
    -----
    :math:`H(p, q) = H(p) + D_{KL}(p \| q) \ge H(p)`, with equality iff
    :math:`p = q`; for a one-hot :math:`p`, :math:`H(p) = 0` and
    :math:`H(p, q) = D_{KL}(p\|q) = -\log q_y`.  PyTorch:
    ``-(p * q.log()).sum(-1)`` (which gives NaN where ``p = q = 0``; here 0).

    Examples
    --------
    A one-hot truth against a model's prediction before and after training
    (:math:`-\log 0.4` and :math:`-\log 0.98`), and a picture of a horse
    predicted cat/dog/horse with probabilities 0.1/0.1/0.8 (:math:`-\log 0.8`):

    >>> from crossentropy import info
    >>> round(float(info.cross_entropy([1, 0, 0, 0, 0.], [0.4, 0.3, 0.05, 0.05, 0.2])), 3)
    0.916
    >>> round(float(info.cross_entropy([1, 0, 0, 0, 0.], [0.98, 0.01, 0, 0, 0.01])), 2)
    0.02
    >>> round(float(info.cross_entropy([0, 0, 1.], [0.1, 0.1, 0.8])), 4)
    0.2231
    """
    return _cross_entropy_rule(p, q, axis=axis, base=base, dim=dim)[0]


@jax_rule(last_axis=True)
@defines_grad(cross_entropy, "p", "q")
@numeric_guard
def _cross_entropy_rule(
    p: Any,
    q: Any,
    *,
    axis: int | None = None,
    base: float | None = None,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    v = _prepare(("p", "q"), (p, q), axis, base)
    xp, (x, y) = v.xp, v.arrays
    log_q, _ = _log(xp, y)
    log_q = xp.where(y > 0, log_q, xp.full_like(y, -math.inf))
    value = -xp.sum(xp.where(x > 0, x * log_q, xp.zeros_like(x)), axis=axis)
    grads = {}
    if "p" in wrt:
        grads["p"] = -log_q
    if "q" in wrt:
        grads["q"] = -x / y
    return v.finish(value, grads, cotangent)


def kl_divergence(
    p: Any, q: Any, *, axis: int | None = None, base: float | None = None, dim: int | None = None
) -> Any:
    r"""Kullback-Leibler divergence :math:`D_{KL}(p\|q) = \sum_i p_i \log(p_i / q_i)`.

    Parameters
    ----------
    p, q : array_like, floating
        Probability vectors along ``axis``, of the same length there and
        broadcastable together along the other axes.
    axis : int, default -1, keyword-only
    base : float, optional, keyword-only
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

    Returns
    -------
    array
        One value per vector, :math:`\ge 0`; ``inf`` where ``q_i = 0 < p_i``.

    See Also
    --------
    crossentropy.kl_div : PyTorch's loss form, on log-probabilities.

    Notes
    -----
    Not symmetric.  :math:`D_{KL}(p\|q) = H(p, q) - H(p)`, computed termwise
    as :math:`p_i(\log p_i - \log q_i)` so that it is exactly 0 for :math:`p = q`.
    PyTorch: ``F.kl_div(q.log(), p, reduction='sum')`` per vector.

    Examples
    --------
    >>> from crossentropy import info
    >>> round(float(info.kl_divergence([0.5, 0.5], [0.9, 0.1])), 4)
    0.5108
    >>> float(info.kl_divergence([0.2, 0.8], [0.2, 0.8]))
    0.0
    """
    return _kl_divergence_rule(p, q, axis=axis, base=base, dim=dim)[0]


@jax_rule(last_axis=True)
@defines_grad(kl_divergence, "p", "q")
@numeric_guard
def _kl_divergence_rule(
    p: Any,
    q: Any,
    *,
    axis: int | None = None,
    base: float | None = None,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    v = _prepare(("p", "q"), (p, q), axis, base)
    value, grads = _kl(v.xp, *v.arrays, axis, wrt)
    return v.finish(value, grads, cotangent)


def _kl(xp: Any, x: Any, y: Any, axis: int, wrt: tuple[str, ...] = ()) -> tuple[Any, dict]:
    log_p, pos = _log(xp, x)
    log_q, _ = _log(xp, y)
    log_q = xp.where(y > 0, log_q, xp.full_like(y, -math.inf))
    value = xp.sum(xp.where(pos, x * (log_p - log_q), xp.zeros_like(x)), axis=axis)
    grads = {}
    if "p" in wrt:
        grads["p"] = xp.where(pos, log_p, xp.full_like(x, -math.inf)) + 1 - log_q
    if "q" in wrt:
        grads["q"] = -x / y
    return value, grads


def js_divergence(
    p: Any, q: Any, *, axis: int | None = None, base: float | None = None, dim: int | None = None
) -> Any:
    r"""Jensen-Shannon divergence, the symmetric and bounded cousin of KL.

    Parameters
    ----------
    p, q : array_like, floating
        Probability vectors along ``axis``, of the same length there and
        broadcastable together along the other axes.
    axis : int, default -1, keyword-only
    base : float, optional, keyword-only
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

    Returns
    -------
    array
        One value per vector in :math:`[0, \log 2]` (:math:`[0, 1]` bits).

    Notes
    -----
    .. math:: JS(p, q) = \tfrac12 D_{KL}(p\|m) + \tfrac12 D_{KL}(q\|m), \quad m = \tfrac12 (p + q)

    Finite even where the supports differ.  PyTorch has no function for it:
    ``0.5 * (F.kl_div(m.log(), p, reduction='none') + F.kl_div(m.log(), q,
    reduction='none')).sum(-1)``.

    Examples
    --------
    >>> from crossentropy import info
    >>> float(info.js_divergence([1.0, 0.0], [0.0, 1.0], base=2))   # disjoint supports
    1.0
    """
    return _js_divergence_rule(p, q, axis=axis, base=base, dim=dim)[0]


@defines_grad(js_divergence, "p", "q")
@numeric_guard
def _js_divergence_rule(
    p: Any,
    q: Any,
    *,
    axis: int | None = None,
    base: float | None = None,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    v = _prepare(("p", "q"), (p, q), axis, base)
    xp, (x, y) = v.xp, v.arrays
    m = (x + y) / 2
    value = (_kl(xp, x, m, axis)[0] + _kl(xp, y, m, axis)[0]) / 2
    # dJS/dp_i = log(p_i / m_i) / 2: -inf at p_i = 0 < q_i, log(2) / 2 where both are 0
    log_m, _ = _log(xp, m)
    grads = {}
    for name, a in (("p", x), ("q", y)):
        if name in wrt:
            log_a, pos = _log(xp, a)
            half_log2 = xp.full_like(a, math.log(2) / 2)
            zero = xp.where(m > 0, xp.full_like(a, -math.inf), half_log2)
            grads[name] = xp.where(pos, (log_a - log_m) / 2, zero)
    return v.finish(value, grads, cotangent)
