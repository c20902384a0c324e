"""Numerically stable building blocks: logsumexp, softmax, log_softmax, sigmoid.

Each public function accepts any Array API array (NumPy by default, PyTorch,
JAX, ...) and returns one of the same library, device and dtype.  float16 and
bfloat16 are computed in float32 and rounded once at the end.
"""

from __future__ import annotations

from typing import Any

from ._core import mathops
from ._core.aliases import axis_or_dim
from ._core.namespace import is_floating, namespace, numeric_guard, restore, upcast
from ._core.prepared import prepare_scores
from ._core.rules import defines_grad
from ._core.signed_lse import as_inexact as weighted_inputs
from ._core.signed_lse import signed_logsumexp
from ._core.validate import check_floating
from ._core.validate import looks_like_probabilities as probabilities_probe
from .jax_rules import jax_rule
from .kernels.custom_ops import compiled_softmax
from .kernels.softmax import logsumexp_rows, softmax_rows

__all__ = [
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "looks_like_probabilities",
    "sigmoid",
    "softmax",
]


# -- public functions ---------------------------------------------------------------


def logsumexp(
    x: Any,
    axis: int | tuple[int, ...] | None = None,
    keepdims: bool = False,
    *,
    b: Any = None,
    return_sign: bool = False,
    dim: int | tuple[int, ...] | None = None,
) -> Any:
    r"""Log of the sum of exponentials along ``axis``, without overflow.

    Parameters
    ----------
    x : array_like
        Input of any shape (a 0-d ``x``, axis 0 or -1, is its own
        logsumexp): floating, complex, or integer (computed in the library's
        default floating dtype, as SciPy and ``torch.logsumexp`` do).
    axis : int or tuple of int, default -1
        Axis or axes to reduce.
    keepdims : bool, default False
        Keep the reduced axes with size 1.
    b : array_like, optional, keyword-only
        Weights of the exponentials, broadcastable to ``x``; negative values
        subtract, and a zero weight removes its entry (even an infinite one).
    return_sign : bool, default False, keyword-only
        Return ``(log|S|, sign(S))``; otherwise a negative sum gives NaN.
    dim : int or tuple of int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

    Returns
    -------
    array or (array, array)
        ``x``'s shape without ``axis`` (or with size-1 axes if ``keepdims``),
        ``x``'s (promoted) dtype; with ``return_sign`` also the sign of the
        sum: -1, 0 or +1, or a unit complex number for complex ``x``.

    Raises
    ------
    ValueError
        If ``axis`` is out of range or ``b`` does not broadcast to ``x``.
    TypeError
        If both ``axis`` and ``dim`` are given.

    See Also
    --------
    log_softmax : ``x - logsumexp(x, keepdims=True)``.

    Notes
    -----
    .. math:: \operatorname{lse}(x) = m + \log \sum_i e^{x_i - m}, \quad m = \max_i x_i

    Subtracting the max keeps every exponent :math:`\le 0`. Rows of only
    ``-inf`` give ``-inf`` and rows containing ``+inf`` give ``+inf``; an
    empty axis gives ``-inf``.  Its gradient is :func:`softmax`.  PyTorch:
    ``torch.logsumexp(x, dim, keepdim)``.

    With weights, :math:`\log|\sum_i b_i e^{x_i}|`: the terms at the maximum
    are summed apart and the rest added with ``log1p``, so a small remainder
    keeps its precision; the gradient is :math:`b_i e^{x_i} / S`.  For complex
    ``x`` the result is the principal :math:`\log S` (imaginary part in
    :math:`(-\pi, \pi]`).  SciPy: ``scipy.special.logsumexp(a, axis, b,
    keepdims, return_sign)`` (whose ``axis`` defaults to every axis).

    Examples
    --------
    >>> import crossentropy as ce
    >>> round(float(ce.logsumexp([0.0, 0.0])), 6)          # log 2
    0.693147
    >>> round(float(ce.logsumexp([1e4, 1e4])), 6)          # naive exp overflows
    10000.693147
    >>> r, s = ce.logsumexp([1.0, 2.0], b=[1, -1], return_sign=True)
    >>> round(float(r), 4), float(s)                       # log(e^2 - e), negative
    (1.5413, -1.0)
    """
    if b is None and not return_sign:
        compiled = compiled_softmax("logsumexp", x, axis_or_dim(axis, dim, -1), keepdims)
        if compiled is not None:  # inside torch.compile
            return compiled
    return _logsumexp_rule(x, axis, keepdims, b=b, return_sign=return_sign, dim=dim)[0]


def _scores(x: Any, axis: Any) -> tuple[Any, Any, Any, bool]:
    """``(xp, x, axis, scalar)``: a 0-d ``x`` as shape ``(1,)`` (its one axis is
    0 or -1, as PyTorch allows), its axis checked; ``scalar`` says to reshape back."""
    xp, x = prepare_scores(x)
    scalar = x.ndim == 0
    if scalar:
        x = xp.reshape(x, (1,))
    mathops.normalize_axes(axis, x.ndim)
    return xp, x, axis, scalar


def _expand(xp: Any, ct: Any, axis: Any, ndim: int) -> Any:
    """A cotangent of a reduction over ``axis`` (axes dropped) with those axes back as 1."""
    for a in sorted(mathops.normalize_axes(axis, ndim)):
        ct = xp.expand_dims(ct, axis=a)
    return ct


@jax_rule(last_axis=True)
@defines_grad(logsumexp, "x")
@numeric_guard
def _logsumexp_rule(
    x: Any,
    axis: Any = None,
    keepdims: bool = False,
    *,
    b: Any = None,
    return_sign: bool = False,
    dim: Any = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim, -1)
    xp, (x, b) = namespace(x, b, names=("x", "b"), required=1)
    if not is_floating(xp, x):
        try:
            boolean = xp.isdtype(x.dtype, "bool")
        except TypeError:  # a NumPy extension dtype (ml_dtypes' float8)
            boolean = True
        if boolean:
            check_floating(xp, x, "x")  # raises: not numbers to exponentiate
        x, b = weighted_inputs(xp, x, b)
    elif b is not None:
        x, b = weighted_inputs(xp, x, b)
    if b is not None or return_sign or not is_floating(xp, x):
        return _signed_logsumexp(xp, x, b, axis, keepdims, return_sign, wrt, cotangent)
    xp, x, axis, scalar = _scores(x, axis)
    dtype = x.dtype
    fast = logsumexp_rows(x, axis, True, "x" in wrt)  # fused CPU kernel, if it applies
    if fast is not None:
        lse, grads = fast
        p = grads.get("x")
    else:
        xc = upcast(xp, x)
        lse = mathops.logsumexp(xp, xc, axis, True)
        p = xp.exp(xc - lse) if "x" in wrt else None
    value = xp.reshape(lse, ()) if scalar else lse if keepdims else xp.squeeze(lse, axis=axis)
    grads = {}
    if "x" in wrt:
        if cotangent is not None:
            ct = xp.reshape(cotangent, (1,)) if scalar else cotangent
            p = p * (ct if keepdims else _expand(xp, ct, axis, x.ndim))
        grads["x"] = restore(xp, xp.reshape(p, ()) if scalar else p, dtype)
    return restore(xp, value, dtype), grads


def _signed_logsumexp(
    xp: Any,
    x: Any,
    b: Any,
    axis: Any,
    keepdims: bool,
    return_sign: bool,
    wrt: tuple,
    cotangent: Any,
) -> tuple[Any, dict]:
    """``logsumexp`` with weights, a sign, or complex input (SciPy's semantics)."""
    scalar = x.ndim == 0
    if scalar:  # one term, along axis 0 or -1
        mathops.normalize_axes(axis, 1)
        x = xp.reshape(x, (1,))
        b = None if b is None else xp.reshape(b, (1,))
    mathops.normalize_axes(axis, x.ndim)
    xc = upcast(xp, x)
    bc = None if b is None else xp.astype(b, xc.dtype)
    out, sign, weights = signed_logsumexp(xp, xc, bc, axis)
    real = is_floating(xp, out)
    if real and not return_sign:
        out = xp.where(sign < 0, xp.full_like(out, float("nan")), out)
    elif not real and return_sign:
        out = xp.real(out)
    if scalar:
        out, sign = xp.reshape(out, ()), xp.reshape(sign, ())
    elif not keepdims:
        out, sign = xp.squeeze(out, axis=axis), xp.squeeze(sign, axis=axis)
    if real:
        out, sign = restore(xp, out, x.dtype), restore(xp, sign, x.dtype)
    grads = {}
    if "x" in wrt:
        if cotangent is not None:
            ct = xp.reshape(cotangent, (1,)) if scalar else cotangent
            weights = weights * (ct if keepdims else _expand(xp, ct, axis, x.ndim))
        grads["x"] = restore(xp, xp.reshape(weights, ()) if scalar else weights, x.dtype)
    return ((out, sign) if return_sign else out), grads


def log_softmax(x: Any, axis: int | None = None, *, dim: int | None = None) -> Any:
    r"""Logarithm of :func:`softmax`, computed as ``x - logsumexp(x)``.

    Parameters
    ----------
    x : array_like, floating
        Logits of any shape (a 0-d ``x`` is one class along axis 0 or -1).
    axis : int, default -1
        The class axis.
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

    Returns
    -------
    array
        Log-probabilities, same shape and dtype as ``x``.

    Notes
    -----
    .. math:: \log \operatorname{softmax}(x)_i = x_i - \operatorname{lse}(x)

    Never takes the log of a rounded-to-zero probability, so it stays exact
    where ``log(softmax(x))`` gives ``-inf``.  PyTorch:
    ``torch.nn.functional.log_softmax(x, dim=axis)``, whose ``dim`` is accepted too.

    Examples
    --------
    >>> import crossentropy as ce
    >>> ce.log_softmax([2.0, 1.0, 0.1]).round(4)
    array([-0.417, -1.417, -2.317])
    >>> ce.log_softmax([0.0, -1000.0]).round(4)   # log(softmax) would give -inf
    array([    0., -1000.])
    """
    axis = axis_or_dim(axis, dim, -1)
    compiled = compiled_softmax("log_softmax", x, axis)  # inside torch.compile
    if compiled is not None:
        return compiled
    return _log_softmax_rule(x, axis)[0]


def _softmax_family(kind: str, x: Any, axis: Any, wrt: tuple, cotangent: Any) -> tuple[Any, dict]:
    """``softmax`` (kind ``"softmax"``) or ``log_softmax`` and its vector-Jacobian
    product with ``cotangent`` (ones by default: the gradient of the sum)."""
    xp, x, axis, scalar = _scores(x, axis)
    y = softmax_rows(kind, x, axis)  # fused CPU kernel, if it applies
    if y is None:
        y = getattr(mathops, kind)(xp, upcast(xp, x), axis)
    grads = {}
    if "x" in wrt:
        ct = xp.ones_like(y) if cotangent is None else xp.reshape(cotangent, y.shape)
        if kind == "softmax":  # s * (ct - <ct, s>)
            g = y * (ct - xp.sum(ct * y, axis=axis, keepdims=True))
        else:  # ct - softmax * sum(ct)
            g = ct - xp.exp(y) * xp.sum(ct, axis=axis, keepdims=True)
        grads["x"] = restore(xp, xp.reshape(g, ()) if scalar else g, x.dtype)
    return restore(xp, xp.reshape(y, ()) if scalar else y, x.dtype), grads


@defines_grad(log_softmax, "x")
@numeric_guard
def _log_softmax_rule(
    x: Any,
    axis: int | None = None,
    *,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    return _softmax_family("log_softmax", x, axis_or_dim(axis, dim, -1), wrt, cotangent)


def softmax(x: Any, axis: int | None = None, *, dim: int | None = None) -> Any:
    r"""Normalised exponentials along ``axis``: a probability vector per row.

    Parameters
    ----------
    x : array_like, floating
        Logits of any shape (a 0-d ``x`` is one class along axis 0 or -1).
    axis : int, default -1
        The class axis.
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

    Returns
    -------
    array
        Probabilities in [0, 1] summing to 1 along ``axis``; ``x``'s shape and dtype.

    Notes
    -----
    .. math:: \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}},
              \quad m = \max_j x_j

    Invariant to adding a constant to every logit.  PyTorch:
    ``torch.softmax(x, dim=axis)``, whose ``dim`` is accepted too.

    Examples
    --------
    >>> import crossentropy as ce
    >>> ce.softmax([2.0, 1.0, 0.1]).round(4)
    array([0.659 , 0.2424, 0.0986])
    >>> ce.softmax([1e4, 0.0]).round(4)           # no overflow
    array([1., 0.])
    >>> ce.softmax([[0.0, 0.0], [0.0, 0.0]], dim=0)   # PyTorch's dim=: each column sums to 1
    array([[0.5, 0.5],
           [0.5, 0.5]])
    """
    axis = axis_or_dim(axis, dim, -1)
    compiled = compiled_softmax("softmax", x, axis)  # inside torch.compile
    if compiled is not None:
        return compiled
    return _softmax_rule(x, axis)[0]


@defines_grad(softmax, "x")
@numeric_guard
def _softmax_rule(
    x: Any,
    axis: int | None = None,
    *,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    return _softmax_family("softmax", x, axis_or_dim(axis, dim, -1), wrt, cotangent)


@numeric_guard
def sigmoid(x: Any) -> Any:
    r"""Logistic function :math:`1 / (1 + e^{-x})`, elementwise, without overflow.

    Parameters
    ----------
    x : array_like, floating

    Returns
    -------
    array
        Values in [0, 1], same shape and dtype as ``x``.

    Notes
    -----
    Evaluated as :math:`1/(1+e^{-|x|})` for :math:`x \ge 0` and
    :math:`e^{-|x|}/(1+e^{-|x|})` otherwise, so no exponent is positive.
    PyTorch: ``torch.sigmoid(x)``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> ce.sigmoid([0.0, 2.0, -1e4]).round(4)
    array([0.5   , 0.8808, 0.    ])
    """
    return _sigmoid_rule(x)[0]


def _elementwise(x: Any, value: Any, slope: Any, wrt: tuple, cotangent: Any) -> tuple[Any, dict]:
    """``value(xp, x)`` elementwise and its gradient ``cotangent * slope(xp, x)``."""
    xp, (x,) = namespace(x, names=("x",), required=1)
    check_floating(xp, x, "x")
    xc = upcast(xp, x)
    grads = {}
    if "x" in wrt:
        g = slope(xp, xc)
        if cotangent is not None:
            g = g * cotangent
        grads["x"] = restore(xp, g, x.dtype)
    return restore(xp, value(xp, xc), x.dtype), grads


@defines_grad(sigmoid, "x")
@numeric_guard
def _sigmoid_rule(x: Any, *, wrt: tuple[str, ...] = (), cotangent: Any = None) -> tuple[Any, dict]:
    # sigma'(x) = sigma(x) sigma(-x), without the cancellation of 1 - sigma(x)
    def slope(xp: Any, v: Any) -> Any:
        return mathops.sigmoid(xp, v) * mathops.sigmoid(xp, -v)

    return _elementwise(x, mathops.sigmoid, slope, wrt, cotangent)


@numeric_guard
def log_sigmoid(x: Any) -> Any:
    r"""Logarithm of :func:`sigmoid`, elementwise, exact for large ``|x|``.

    Parameters
    ----------
    x : array_like, floating

    Returns
    -------
    array
        Values :math:`\le 0`, same shape and dtype as ``x``.

    Notes
    -----
    .. math:: \log \sigma(x) = \min(x, 0) - \log(1 + e^{-|x|})

    PyTorch: ``torch.nn.functional.logsigmoid(x)``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> ce.log_sigmoid([0.0, -1e4]).round(4)    # log(sigmoid(-1e4)) would be -inf
    array([-6.9310e-01, -1.0000e+04])
    """
    return _log_sigmoid_rule(x)[0]


@defines_grad(log_sigmoid, "x")
@numeric_guard
def _log_sigmoid_rule(
    x: Any, *, wrt: tuple[str, ...] = (), cotangent: Any = None
) -> tuple[Any, dict]:
    # (log sigma)'(x) = sigma(-x)
    def slope(xp: Any, v: Any) -> Any:
        return mathops.sigmoid(xp, -v)

    return _elementwise(x, mathops.log_sigmoid, slope, wrt, cotangent)


def looks_like_probabilities(x: Any, axis: int = -1) -> bool:
    r"""True if the rows of ``x`` along ``axis`` already look like probabilities.

    The check :func:`crossentropy.cross_entropy` runs before it warns with
    :class:`~crossentropy.ProbabilitiesAsLogitsWarning`: every entry of the
    first (at most 16) rows lies in [0, 1] and each of those rows sums to 1
    (within 1e-3, or 1e-6 in float64).  Logits that pass it were probably
    already put through ``softmax``.

    Parameters
    ----------
    x : array_like, floating
        Scores with a class axis.
    axis : int, default -1
        The class axis.

    Returns
    -------
    bool
        ``False`` for a single class, an empty array, or values that cannot
        be read (inside ``jax.jit``).

    Examples
    --------
    >>> import crossentropy as ce
    >>> ce.looks_like_probabilities([[0.7, 0.2, 0.1]])
    True
    >>> ce.looks_like_probabilities([[2.0, 1.0, 0.1]])
    False
    """
    xp, x = prepare_scores(x)
    (ax,) = mathops.normalize_axes(axis, max(x.ndim, 1))
    return x.ndim > 0 and bool(probabilities_probe(xp, x, ax))
