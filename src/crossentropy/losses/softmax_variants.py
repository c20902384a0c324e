r"""Variants of softmax cross-entropy: focal, poly-1 and generalized (noise-robust) cross-entropy.

Each takes logits and the same targets as :func:`~crossentropy.cross_entropy`
(class indices with ``weight`` and ``ignore_index``, or class probabilities),
a class ``axis`` and optax's ``where=`` mask, and is the sum over classes of a
function of the log-probability, :math:`\sum_c \tau_c f(\log p_c)`; the
gradient is analytic (:mod:`crossentropy._core.class_rows`).
"""

from __future__ import annotations

import math
from typing import Any

from .._core.class_rows import LogProbTerm, evaluate_log_prob_loss
from .._core.namespace import numeric_guard
from .._core.prepared import prepare_class_call
from .._core.rules import defines_grad
from .._core.where import apply_where
from ..jax_rules import jax_rule

__all__ = ["focal_cross_entropy", "generalized_cross_entropy", "poly1_cross_entropy"]


def _evaluate(
    term: LogProbTerm,
    input: Any,
    target: Any,
    weight: Any,
    ignore_index: int,
    reduction: str,
    axis: int | None,
    where: Any,
    wrt: tuple[str, ...],
    cotangent: Any = None,
) -> tuple[Any, dict]:
    rows = None
    if where is not None:
        masked = apply_where(input, target, where, axis, ignore_index)
        input, target, rows = masked.input, masked.target, masked.rows
        ignore_index = masked.ignore_index
    call = prepare_class_call(
        input, target, weight, reduction=reduction, ignore_index=ignore_index, axis=axis,
        probabilities=True,
    )  # fmt: skip
    return evaluate_log_prob_loss(call, term, wrt, rows, cotangent)


def _finite(value: float, name: str, low: float, high: float = math.inf, open_low: bool = False) -> float:
    v = float(value)
    if not (low < v if open_low else low <= v) or not v <= high or math.isnan(v):
        bound = f"({low}" if open_low else f"[{low}"
        raise ValueError(f"{name} must lie in {bound}, {high}], got {value!r}")
    return v


# -- focal --------------------------------------------------------------------------


def _focal_term(gamma: float) -> LogProbTerm:
    def value(xp: Any, lp: Any) -> Any:
        return -(xp.pow(-xp.expm1(lp), gamma)) * lp

    def slope(xp: Any, lp: Any) -> Any:
        q = -xp.expm1(lp)  # 1 - p, exact near p = 1
        qg = xp.pow(q, gamma)
        # log p / (1 - p) -> -1 as p -> 1, where 0/0 would appear
        ratio = xp.where(q > 0, lp / xp.where(q > 0, q, xp.ones_like(q)), -xp.ones_like(q))
        return gamma * qg * xp.exp(lp) * ratio - qg

    return LogProbTerm(value, slope)


def focal_cross_entropy(
    input: Any,
    target: Any,
    gamma: float = 2.0,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    where: Any = None,
) -> Any:
    r"""Multi-class focal loss on logits: cross-entropy scaled by :math:`(1-p)^\gamma`.

    Easy examples (:math:`p \to 1`) are down-weighted so that training
    focuses on the hard ones (Lin et al., 2017).

    Parameters
    ----------
    input : array_like, floating, shape (N, C), (C,) or (N, C, d1, ..., dK)
        Logits; class axis 1 (0 for ``(C,)``) unless ``axis`` is given.
    target : array_like
        Class indices (integer, ``input``'s shape without the class axis) or
        class probabilities (floating, ``input``'s shape).
    gamma : float >= 0, default 2.0
        Focusing parameter; 0 gives :func:`~crossentropy.cross_entropy`.
    weight : array_like, shape (C,), optional
        Weight of each class (the :math:`\alpha` of the paper, per class).
    ignore_index : int, default -100
        Class index that contributes nothing.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by the summed weight of the counted targets (as
        :func:`~crossentropy.cross_entropy`), or by the number of rows for
        probability targets.
    axis : int, optional, keyword-only
        The class axis.
    where : array_like of bool, optional, keyword-only
        Logits (``input``'s shape) or rows (without the class axis) that take
        part, as in :func:`~crossentropy.cross_entropy`.

    Returns
    -------
    array
        Scalar, or one value per row for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        ``gamma`` negative or NaN; the same shape, weight and reduction errors
        as :func:`~crossentropy.cross_entropy`.
    TargetIndexError
        A class index outside ``[0, C)`` that is not ``ignore_index``.

    See Also
    --------
    sigmoid_focal_loss : the binary (one-vs-rest) focal loss.

    Notes
    -----
    With :math:`p = \operatorname{softmax}(x)` and target weights
    :math:`\tau_c` (:math:`w_y` at the target class, or :math:`w_c t_c`)

    .. math:: \ell = -\sum_c \tau_c\, (1 - p_c)^\gamma \log p_c

    :math:`1 - p_c` is computed as ``-expm1(log p_c)`` and :math:`\log p` by
    ``log_softmax``, so that confident rows keep their precision.  Keras:
    ``keras.losses.categorical_focal_crossentropy(y_true, y_pred, alpha,
    gamma, from_logits=True)`` (which clips :math:`p` to
    :math:`[10^{-7}, 1 - 10^{-7}]`; see :mod:`crossentropy.compat.keras`).
    PyTorch has no built-in; kornia's ``focal_loss`` is this formula.

    Examples
    --------
    Two equal logits and target class 0: :math:`p = 0.5`, so the loss is
    :math:`0.5^2 \log 2`, a quarter of the cross-entropy:

    >>> import crossentropy as ce
    >>> round(float(ce.focal_cross_entropy([[0.0, 0.0]], [0])), 4)
    0.1733
    >>> round(float(ce.focal_cross_entropy([[0.0, 0.0]], [0], gamma=0.0)), 4)   # log 2
    0.6931
    """
    return _focal_rule(
        input, target, gamma, weight, ignore_index, reduction, axis=axis, where=where
    )[0]


@jax_rule
@defines_grad(focal_cross_entropy, "input")
@numeric_guard
def _focal_rule(
    input: Any,
    target: Any,
    gamma: float = 2.0,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    where: Any = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    term = _focal_term(_finite(gamma, "gamma", 0.0))
    return _evaluate(term, input, target, weight, ignore_index, reduction, axis, where, wrt, cotangent)


# -- poly-1 -------------------------------------------------------------------------


def _poly1_term(epsilon: float) -> LogProbTerm:
    def value(xp: Any, lp: Any) -> Any:
        return -lp - epsilon * xp.expm1(lp)

    def slope(xp: Any, lp: Any) -> Any:
        return -1 - epsilon * xp.exp(lp)

    return LogProbTerm(value, slope)


def poly1_cross_entropy(
    input: Any,
    target: Any,
    epsilon: float = 1.0,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    where: Any = None,
) -> Any:
    r"""Poly-1 loss: cross-entropy plus :math:`\varepsilon (1 - p_t)`.

    The first term of PolyLoss (Leng et al., 2022), which raises (or, for
    :math:`\varepsilon < 0`, lowers) the weight of the leading polynomial
    term of cross-entropy's Taylor series in :math:`1 - p_t`.

    Parameters
    ----------
    input : array_like, floating, shape (N, C), (C,) or (N, C, d1, ..., dK)
        Logits; class axis 1 (0 for ``(C,)``) unless ``axis`` is given.
    target : array_like
        Class indices or class probabilities, as for
        :func:`~crossentropy.cross_entropy`.
    epsilon : float >= -1, default 1.0
        Coefficient of :math:`1 - p_t`; 0 gives cross-entropy.  The paper
        uses 2 for ImageNet classification and -1 for detection.
    weight : array_like, shape (C,), optional
        Weight of each class.
    ignore_index : int, default -100
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As :func:`~crossentropy.cross_entropy`.
    axis : int, optional, keyword-only
    where : array_like of bool, optional, keyword-only
        Logits or rows that take part (optax's ``where=``).

    Returns
    -------
    array
        Scalar, or one value per row for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        ``epsilon`` below -1 or NaN; the shape, weight and reduction errors of
        :func:`~crossentropy.cross_entropy`.

    Notes
    -----
    .. math:: \ell = \sum_c \tau_c \left[-\log p_c + \varepsilon (1 - p_c)\right]

    with :math:`\tau` the (weighted) target, so that for probability targets
    the extra term is :math:`\varepsilon \sum_c t_c (1 - p_c)`.  optax:
    ``optax.losses.poly_loss_cross_entropy(logits, labels, epsilon=...)``
    (probability labels, class axis last, default :math:`\varepsilon = 2`).

    Examples
    --------
    Two equal logits, target 0: :math:`\log 2 + 1 \cdot (1 - 0.5)`:

    >>> import crossentropy as ce
    >>> round(float(ce.poly1_cross_entropy([[0.0, 0.0]], [0])), 4)
    1.1931
    """
    return _poly1_rule(
        input, target, epsilon, weight, ignore_index, reduction, axis=axis, where=where
    )[0]


@jax_rule
@defines_grad(poly1_cross_entropy, "input")
@numeric_guard
def _poly1_rule(
    input: Any,
    target: Any,
    epsilon: float = 1.0,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    where: Any = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    term = _poly1_term(_finite(epsilon, "epsilon", -1.0))
    return _evaluate(term, input, target, weight, ignore_index, reduction, axis, where, wrt, cotangent)


# -- generalized cross-entropy ------------------------------------------------------


def _gce_term(q: float) -> LogProbTerm:
    def value(xp: Any, lp: Any) -> Any:
        return -xp.expm1(q * lp) / q

    def slope(xp: Any, lp: Any) -> Any:
        return -xp.exp(q * lp)

    return LogProbTerm(value, slope)


def generalized_cross_entropy(
    input: Any,
    target: Any,
    q: float = 0.7,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    where: Any = None,
) -> Any:
    r"""Generalized cross-entropy :math:`(1 - p_t^q)/q`, robust to noisy labels.

    Zhang and Sabuncu (2018): between cross-entropy (:math:`q \to 0`) and the
    mean absolute error :math:`1 - p_t` (:math:`q = 1`), which a mislabelled
    example cannot dominate.

    Parameters
    ----------
    input : array_like, floating, shape (N, C), (C,) or (N, C, d1, ..., dK)
        Logits; class axis 1 (0 for ``(C,)``) unless ``axis`` is given.
    target : array_like
        Class indices or class probabilities, as for
        :func:`~crossentropy.cross_entropy`.
    q : float in (0, 1], default 0.7
        The paper's default 0.7.
    weight : array_like, shape (C,), optional
    ignore_index : int, default -100
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        As :func:`~crossentropy.cross_entropy`.
    axis : int, optional, keyword-only
    where : array_like of bool, optional, keyword-only

    Returns
    -------
    array
        Scalar, or one value per row for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        ``q`` outside (0, 1]; the shape, weight and reduction errors of
        :func:`~crossentropy.cross_entropy`.

    Notes
    -----
    .. math:: \ell = \sum_c \tau_c \frac{1 - p_c^q}{q}, \qquad
              p_c^q = e^{q \log p_c}

    evaluated as ``-expm1(q * log_softmax(x)) / q``, exact for small losses.
    Keras: ``keras.losses.categorical_generalized_cross_entropy(y_true,
    y_pred, q)`` (on probabilities: pass ``log(y_pred)`` as logits).

    Examples
    --------
    Two equal logits, target 0, :math:`q = 0.5`: :math:`(1 - \sqrt{0.5}) / 0.5`:

    >>> import crossentropy as ce
    >>> round(float(ce.generalized_cross_entropy([[0.0, 0.0]], [0], q=0.5)), 4)
    0.5858
    """
    return _gce_rule(input, target, q, weight, ignore_index, reduction, axis=axis, where=where)[0]


@jax_rule
@defines_grad(generalized_cross_entropy, "input")
@numeric_guard
def _gce_rule(
    input: Any,
    target: Any,
    q: float = 0.7,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    where: Any = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    term = _gce_term(_finite(q, "q", 0.0, 1.0, open_low=True))
    return _evaluate(term, input, target, weight, ignore_index, reduction, axis, where, wrt, cotangent)
