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
from typing import Any

from ._core.aliases import axis_or_dim
from ._core.namespace import namespace, numeric_guard, restore, to_bool, upcast
from ._core.rules import defines_grad
from ._core.validate import check_floating
from .jax_rules import jax_rule

__all__ = ["cross_entropy", "entropy", "information", "js_divergence", "kl_divergence"]


def _probabilities(xp: Any, p: Any, name: str, axis: int | None) -> Any:
    """Check that ``p`` holds probabilities (entries in [0, 1]) and ``axis`` is valid.

    Vectors are used as given, not renormalised: the formulas are applied to
    exactly the numbers passed, as a user computing them by hand would.
    """
    check_floating(xp, p, name)
    if axis is not None and (p.ndim == 0 or not -p.ndim <= axis < p.ndim):
        raise ValueError(f"axis={axis} is out of range for {name} with shape {tuple(p.shape)}")
    bad = ~((p >= 0) & (p <= 1))
    if to_bool(xp.any(bad)):
        raise ValueError(f"{name} must hold probabilities in [0, 1], found {float(p[bad][0])!r}")
    return p


def _prepare(names: tuple[str, ...], arrays: tuple, axis: int | None) -> tuple[Any, list, Any]:
    xp, arrays = namespace(*arrays)
    arrays = [_probabilities(xp, upcast(xp, a), n, axis) for n, a in zip(names, arrays)]
    if len(arrays) == 2:
        try:
            arrays = list(xp.broadcast_arrays(*arrays))
        except Exception:
            raise ValueError(
                f"{names[0]} of shape {tuple(arrays[0].shape)} and {names[1]} of shape "
                f"{tuple(arrays[1].shape)} cannot be broadcast together"
            ) from None
    dtype = xp.result_type(*arrays)
    return xp, [xp.astype(a, dtype) for a in arrays], dtype


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


@numeric_guard
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
    scale = _scale(base)
    xp, (p,) = namespace(p)
    x = _probabilities(xp, upcast(xp, p), "p", None)
    return restore(xp, -xp.log(x) * scale, p.dtype)


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
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    scale = _scale(base)
    xp, (x,), dtype = _prepare(("p",), (p,), axis)
    log_p, pos = _log(xp, x)
    value = -xp.sum(xp.where(pos, x * log_p, xp.zeros_like(x)), axis=axis) * scale
    grads = {}
    if "p" in wrt:
        # dH/dp_i = -(log p_i + 1): infinite at p_i = 0
        grads["p"] = restore(
            xp, -(xp.where(pos, log_p, xp.full_like(x, -math.inf)) + 1) * scale, dtype
        )
    return restore(xp, value, dtype), grads


def cross_entropy(
    p: Any, q: Any, *, axis: int | None = None, base: float | None = None, dim: int | None = None
) -> Any:
    r"""Cross-entropy :math:`H(p, q) = -\sum_i p_i \log q_i` between two distributions.

    Parameters
    ----------
    p : array_like, floating
        Reference ("true") probability vectors along ``axis``.
    q : array_like, floating
        Model probability vectors, broadcastable with ``p``.
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
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    scale = _scale(base)
    xp, (x, y), dtype = _prepare(("p", "q"), (p, q), axis)
    log_q, _ = _log(xp, y)
    log_q = xp.where(y > 0, log_q, xp.full_like(y, -math.inf))
    terms = xp.where(x > 0, x * log_q, xp.zeros_like(x))
    value = -xp.sum(terms, axis=axis) * scale
    grads = {}
    if "p" in wrt:
        grads["p"] = restore(xp, -log_q * scale, dtype)
    if "q" in wrt:
        grads["q"] = restore(xp, -x / y * scale, dtype)
    return restore(xp, value, dtype), grads


def kl_divergence(
    p: Any, q: Any, *, axis: int | None = None, base: float | None = None, dim: int | None = None
) -> Any:
    r"""Kullback-Leibler divergence :math:`D_{KL}(p\|q) = \sum_i p_i \log(p_i / q_i)`.

    Parameters
    ----------
    p, q : array_like, floating
        Probability vectors along ``axis``, broadcastable together.
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
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    scale = _scale(base)
    xp, (x, y), dtype = _prepare(("p", "q"), (p, q), axis)
    value, grads = _kl(xp, x, y, axis, wrt)
    grads = {k: restore(xp, g * scale, dtype) for k, g in grads.items()}
    return restore(xp, value * scale, dtype), grads


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


@numeric_guard
def js_divergence(
    p: Any, q: Any, *, axis: int | None = None, base: float | None = None, dim: int | None = None
) -> Any:
    r"""Jensen-Shannon divergence, the symmetric and bounded cousin of KL.

    Parameters
    ----------
    p, q : array_like, floating
        Probability vectors along ``axis``, broadcastable together.
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
    axis = axis_or_dim(axis, dim, -1)
    scale = _scale(base)
    xp, (x, y), dtype = _prepare(("p", "q"), (p, q), axis)
    m = (x + y) / 2
    value = (_kl(xp, x, m, axis)[0] + _kl(xp, y, m, axis)[0]) / 2
    return restore(xp, value * scale, dtype)
