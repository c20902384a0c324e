r"""optax's ``optax.losses`` names and signatures: classes on a last (or any) axis, ``where=``.

``from crossentropy.compat import optax`` and ``optax.softmax_cross_entropy(logits,
labels)`` runs on NumPy, PyTorch, JAX or any Array API array, with this
library's analytic gradients behind it.  Like optax, every function returns
one loss per example (nothing is averaged); ``axis`` may be a tuple of class
axes, flattened in order (a label is then a flat index into them), and
``where`` marks the entries (or rows) that take part.
"""

from __future__ import annotations

from typing import Any

from .._core.namespace import namespace
from ..losses import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    generalized_kl_div,
    kl_div,
    poly1_cross_entropy,
)
from ..losses import hinge_loss as _binary_hinge
from ..losses import multiclass_hinge_loss as _crammer_singer
from ..losses import sigmoid_focal_loss as _sigmoid_focal
from ._layout import flatten_axes

__all__ = [
    "convex_kl_divergence",
    "generalized_kl_divergence",
    "hinge_loss",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "multiclass_hinge_loss",
    "poly_loss_cross_entropy",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
]


def _class_layout(logits: Any, labels: Any, axis: Any, where: Any) -> tuple:
    """``(logits, labels, where, axis)`` with a tuple of class axes flattened into one."""
    _, (logits, labels, where) = namespace(logits, labels, where)
    (logits, labels, where), axis = flatten_axes([logits, labels, where], axis, logits.ndim)
    return logits, labels, where, axis


def softmax_cross_entropy(
    logits: Any, labels: Any, axis: int | tuple[int, ...] = -1, where: Any = None
) -> Any:
    r"""Softmax cross-entropy with class-probability labels, one value per example.

    Parameters
    ----------
    logits : array_like, floating
        Unnormalised log-probabilities; the classes along ``axis``.
    labels : array_like, floating, ``logits``'s shape
        A distribution per example (one-hot or soft).
    axis : int or tuple of int, default -1
        Class axis or axes.
    where : array_like of bool, optional
        ``logits``'s shape, or one flag per example: excluded logits leave the
        softmax, and an example with nothing included gives 0.

    Returns
    -------
    array
        ``logits``'s shape without the class axes.

    Notes
    -----
    :func:`crossentropy.cross_entropy` with ``reduction='none'``.  optax:
    ``optax.losses.softmax_cross_entropy(logits, labels, axis, where)``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.compat import optax
    >>> logits = np.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> optax.softmax_cross_entropy(logits, labels).round(4)     # optax's own example
    array([0.2761, 2.9518])
    """
    logits, labels, where, axis = _class_layout(logits, labels, axis, where)
    return cross_entropy(logits, labels, reduction="none", axis=axis, where=where)


def safe_softmax_cross_entropy(logits: Any, labels: Any) -> Any:
    r"""Softmax cross-entropy where a ``-inf`` logit with label 0 contributes 0.

    Parameters
    ----------
    logits : array_like, floating, shape (..., C)
    labels : array_like, floating, shape (..., C)

    Returns
    -------
    array
        Shape (...).

    Notes
    -----
    :func:`crossentropy.cross_entropy` always follows :math:`0 \log 0 = 0`,
    so this is :func:`softmax_cross_entropy`.  optax:
    ``optax.losses.safe_softmax_cross_entropy(logits, labels)``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.compat import optax
    >>> optax.safe_softmax_cross_entropy(np.array([[-np.inf, 0.0, 0.0]]),
    ...                                  np.array([[0.0, 0.5, 0.5]])).round(4)   # log 2
    array([0.6931])
    """
    return cross_entropy(logits, labels, reduction="none", axis=-1)


def softmax_cross_entropy_with_integer_labels(
    logits: Any, labels: Any, axis: int | tuple[int, ...] = -1, where: Any = None
) -> Any:
    r"""Softmax cross-entropy with integer labels, one value per example.

    Parameters
    ----------
    logits : array_like, floating
        Unnormalised log-probabilities; the classes along ``axis``.
    labels : array_like, integer, ``logits``'s shape without the class axes
        Class indices in ``[0, C)`` (flat indices when ``axis`` is a tuple).
    axis : int or tuple of int, default -1
    where : array_like of bool, optional
        As :func:`softmax_cross_entropy`.

    Returns
    -------
    array
        ``labels``'s shape.

    Raises
    ------
    TargetIndexError
        A label outside ``[0, C)`` (optax returns an unspecified value).

    Notes
    -----
    :math:`\operatorname{lse}(x) - x_y` by :func:`crossentropy.cross_entropy`.
    optax: ``optax.losses.softmax_cross_entropy_with_integer_labels``.  A
    label on an excluded class gives ``inf`` here (its probability is 0);
    optax subtracts the excluded logit from the included classes' logsumexp.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.compat import optax
    >>> logits = np.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> optax.softmax_cross_entropy_with_integer_labels(logits, np.array([0, 1])).round(4)
    array([0.2761, 2.9518])
    """
    logits, labels, where, axis = _class_layout(logits, labels, axis, where)
    return cross_entropy(
        logits, labels, reduction="none", axis=axis, where=where, ignore_index=None
    )


def poly_loss_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    epsilon: float = 2.0,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
) -> Any:
    r"""Poly-1 loss: cross-entropy plus :math:`\varepsilon \sum_c y_c (1 - p_c)`, per example.

    Parameters
    ----------
    logits : array_like, floating
    labels : array_like, floating, ``logits``'s shape
    epsilon : float, default 2.0, keyword-only
        optax's default (ImageNet classification).
    axis : int or tuple of int, default -1, keyword-only
    where : array_like of bool, optional, keyword-only

    Returns
    -------
    array
        ``logits``'s shape without the class axes.

    Notes
    -----
    :func:`crossentropy.poly1_cross_entropy`.  optax:
    ``optax.losses.poly_loss_cross_entropy(logits, labels, epsilon=...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.compat import optax
    >>> optax.poly_loss_cross_entropy(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])).round(4)
    array([1.6931])
    """
    logits, labels, where, axis = _class_layout(logits, labels, axis, where)
    return poly1_cross_entropy(logits, labels, epsilon, reduction="none", axis=axis, where=where)


def sigmoid_binary_cross_entropy(logits: Any, labels: Any) -> Any:
    r"""Element-wise sigmoid cross-entropy on logits (labels broadcast to ``logits``).

    Parameters
    ----------
    logits : array_like, floating
    labels : array_like
        Labels in [0, 1], broadcastable to ``logits``.

    Returns
    -------
    array
        ``logits``'s shape.

    Notes
    -----
    :func:`crossentropy.binary_cross_entropy_with_logits`.  optax:
    ``optax.losses.sigmoid_binary_cross_entropy(logits, labels)``.

    Examples
    --------
    >>> from crossentropy.compat import optax
    >>> optax.sigmoid_binary_cross_entropy([0.0, 0.0], [1.0, 0.0]).round(4)
    array([0.6931, 0.6931])
    """
    xp, (logits, labels) = namespace(logits, labels)
    labels = xp.broadcast_to(xp.astype(labels, logits.dtype), logits.shape)
    return binary_cross_entropy_with_logits(logits, labels, reduction="none")


def sigmoid_focal_loss(
    logits: Any, labels: Any, *, alpha: float | None = None, gamma: float = 2.0
) -> Any:
    r"""Sigmoid focal loss, element-wise; ``alpha`` off unless given.

    Parameters
    ----------
    logits : array_like, floating
    labels : array_like
        Labels in [0, 1] (0/1 or soft), broadcastable to ``logits``.
    alpha : float in [0, 1], optional, keyword-only
        Weight of the positives (``1 - alpha`` of the negatives).
    gamma : float, default 2.0, keyword-only

    Returns
    -------
    array
        ``logits``'s shape.

    Notes
    -----
    :func:`crossentropy.sigmoid_focal_loss` (torchvision's, whose ``alpha``
    defaults to 0.25).  optax: ``optax.losses.sigmoid_focal_loss``.

    Examples
    --------
    >>> from crossentropy.compat import optax
    >>> optax.sigmoid_focal_loss([0.0], [1.0]).round(4)          # 0.5**2 * log 2
    array([0.1733])
    """
    xp, (logits, labels) = namespace(logits, labels)
    labels = xp.broadcast_to(xp.astype(labels, logits.dtype), logits.shape)
    return _sigmoid_focal(logits, labels, -1.0 if alpha is None else alpha, gamma, "none")


def _summed(xp: Any, loss: Any, axis: Any, where: Any) -> Any:
    if where is not None:
        loss = xp.where(xp.astype(where, xp.bool), loss, xp.zeros_like(loss))
    return xp.sum(loss, axis=axis)


def kl_divergence(
    log_predictions: Any, targets: Any, axis: Any = -1, where: Any = None
) -> Any:
    r"""KL divergence :math:`\sum p (\log p - \log q)` from log-predictions, per example.

    Parameters
    ----------
    log_predictions : array_like, floating
        :math:`\log q`.
    targets : array_like, floating, same shape
        :math:`p`.
    axis : int, tuple of int or None, default -1
        The axes summed over.
    where : array_like of bool, optional
        The entries that count.

    Returns
    -------
    array
        The shape without ``axis``.

    Notes
    -----
    :func:`crossentropy.kl_div` element by element, summed.  optax:
    ``optax.losses.kl_divergence(log_predictions, targets, axis, where)``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.compat import optax
    >>> round(float(optax.kl_divergence(np.log([0.9, 0.1]), np.array([0.5, 0.5]))), 4)
    0.5108
    """
    xp, (log_predictions, targets, where) = namespace(log_predictions, targets, where)
    return _summed(xp, kl_div(log_predictions, targets, reduction="none"), axis, where)


def kl_divergence_with_log_targets(
    log_predictions: Any, log_targets: Any, axis: Any = -1, where: Any = None
) -> Any:
    r"""KL divergence with the targets given as log-probabilities, per example.

    Parameters
    ----------
    log_predictions : array_like, floating
    log_targets : array_like, floating, same shape
    axis : int, tuple of int or None, default -1
    where : array_like of bool, optional

    Returns
    -------
    array
        The shape without ``axis``.

    Notes
    -----
    :func:`crossentropy.kl_div` with ``log_target=True``.  optax:
    ``optax.losses.kl_divergence_with_log_targets``.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.compat import optax
    >>> round(float(optax.kl_divergence_with_log_targets(np.log([0.9, 0.1]), np.log([0.5, 0.5]))), 4)
    0.5108
    """
    xp, (log_predictions, log_targets, where) = namespace(log_predictions, log_targets, where)
    loss = kl_div(log_predictions, log_targets, reduction="none", log_target=True)
    return _summed(xp, loss, axis, where)


def generalized_kl_divergence(
    log_predictions: Any, targets: Any, axis: Any = -1, where: Any = None
) -> Any:
    r"""Generalized (convex) KL divergence for unnormalised measures, per example.

    Parameters
    ----------
    log_predictions : array_like, floating
    targets : array_like, floating, same shape
        Non-negative, not necessarily summing to 1.
    axis : int, tuple of int or None, default -1
    where : array_like of bool, optional

    Returns
    -------
    array
        The shape without ``axis``.

    Notes
    -----
    :func:`crossentropy.generalized_kl_div`, summed.  optax:
    ``optax.losses.generalized_kl_divergence`` (formerly
    ``convex_kl_divergence``).

    Examples
    --------
    >>> from crossentropy.compat import optax
    >>> round(float(optax.generalized_kl_divergence([0.0], [2.0])), 4)   # 2 log 2 - 2 + 1
    0.3863
    """
    xp, (log_predictions, targets, where) = namespace(log_predictions, targets, where)
    return _summed(xp, generalized_kl_div(log_predictions, targets, reduction="none"), axis, where)


convex_kl_divergence = generalized_kl_divergence


def hinge_loss(predictor_outputs: Any, targets: Any) -> Any:
    r"""Binary hinge loss :math:`\max(0, 1 - y h)`, element-wise, :math:`y \in \{-1, +1\}`.

    Parameters
    ----------
    predictor_outputs : array_like, floating
    targets : array_like, same shape
        Each -1 or +1.

    Returns
    -------
    array
        The input's shape.

    Notes
    -----
    :func:`crossentropy.hinge_loss`.  optax: ``optax.losses.hinge_loss``.

    Examples
    --------
    >>> from crossentropy.compat import optax
    >>> optax.hinge_loss([2.0, 0.5], [1, 1])
    array([0. , 0.5])
    """
    return _binary_hinge(predictor_outputs, targets, reduction="none")


def multiclass_hinge_loss(scores: Any, labels: Any) -> Any:
    r"""Crammer-Singer multi-class hinge loss, one value per example, classes last.

    Parameters
    ----------
    scores : array_like, floating, shape (..., C)
    labels : array_like, integer, shape (...)

    Returns
    -------
    array
        ``labels``'s shape.

    Notes
    -----
    :math:`\max_j (x_j + 1 - [j = y]) - x_y`, i.e.
    :func:`crossentropy.multiclass_hinge_loss`.  optax:
    ``optax.losses.multiclass_hinge_loss(scores, labels)``.

    Examples
    --------
    >>> from crossentropy.compat import optax
    >>> optax.multiclass_hinge_loss([[10.0, 3.0]], [1])          # 10 + 1 - 3
    array([8.])
    """
    return _crammer_singer(scores, labels, reduction="none", axis=-1)
