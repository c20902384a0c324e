r"""scikit-learn's ``sklearn.metrics`` losses: ``log_loss`` and ``hinge_loss``, with its label handling.

``from crossentropy.compat import sklearn`` and
``sklearn.log_loss(y_true, y_pred, labels=..., sample_weight=...)`` gives
scikit-learn's number: labels of any sortable type (strings too) are encoded in
sorted order, probabilities are clipped to :math:`[\epsilon, 1 - \epsilon]`
(:math:`\epsilon` the dtype's machine epsilon), rows that do not sum to one
warn, and the result is a Python float.  The losses themselves are
:func:`crossentropy.nll_loss`, :func:`crossentropy.hinge_loss` and
:func:`crossentropy.multiclass_hinge_loss`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..info import cross_entropy as distribution_cross_entropy
from ..losses import hinge_loss as _binary_hinge
from ..losses import multiclass_hinge_loss, nll_loss
from ._layout import clipped_log

__all__ = ["hinge_loss", "log_loss"]


def _average(losses: np.ndarray, sample_weight: Any, normalize: bool = True) -> float:
    """scikit-learn's ``_average``: the (weighted) mean, or the (weighted) sum."""
    if sample_weight is None:
        return float(np.mean(losses) if normalize else np.sum(losses))
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != losses.shape:
        raise ValueError(
            f"sample_weight has shape {w.shape}, expected one weight per sample {losses.shape}"
        )
    return float(np.average(losses, weights=w) if normalize else np.sum(losses * w))


def _classes(y_true: np.ndarray, labels: Any) -> np.ndarray:
    """The sorted classes (from ``labels`` if given), with scikit-learn's checks."""
    if labels is None:
        classes = np.unique(y_true)
        if classes.size == 1:
            raise ValueError(
                f"y_true contains only one label ({classes[0]}). Please provide the list of "
                f"all expected class labels explicitly through the labels argument."
            )
        return classes
    given = np.asarray(labels)
    classes = np.unique(given)
    if classes.size < 2:
        raise ValueError(f"The labels array needs to contain at least two labels, got {classes}.")
    if given.shape != classes.shape or np.any(given != classes):
        warnings.warn(
            f"Labels passed were {given}. But this function assumes labels are ordered "
            f"lexicographically. Pass the ordered labels={classes.tolist()} and ensure that "
            f"the columns of y_prob correspond to this ordering.",
            UserWarning,
            stacklevel=3,
        )
    unknown = set(np.unique(y_true).tolist()) - set(classes.tolist())
    if unknown:
        raise ValueError(f"y_true contains values {unknown} not belonging to the passed labels {given}.")
    return classes


def _probabilities(y_pred: Any, n_classes: int) -> np.ndarray:
    """``y_pred`` as an (n, C) float array in [0, 1], warning if rows do not sum to 1."""
    p = np.asarray(y_pred)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    if p.size and (p.max() > 1 or p.min() < 0):
        bad = p.max() if p.max() > 1 else p.min()
        raise ValueError(f"y_pred contains values {'greater than 1' if bad > 1 else 'lower than 0'}: {bad}")
    if p.ndim == 1:
        p = p[:, None]
    if p.shape[1] == 1:
        p = np.concatenate([1 - p, p], axis=1)
    if p.shape[1] != n_classes:
        raise ValueError(
            f"y_true and y_pred contain different number of classes: {n_classes} vs "
            f"{p.shape[1]}. Please provide the true labels explicitly through the labels argument."
        )
    eps = np.finfo(p.dtype).eps
    if not np.allclose(p.sum(axis=1), 1, rtol=math.sqrt(eps), atol=0):
        warnings.warn(
            "The y_prob values do not sum to one. Make sure to pass probabilities.",
            UserWarning,
            stacklevel=3,
        )
    return p


def log_loss(
    y_true: Any,
    y_pred: Any,
    *,
    normalize: bool = True,
    sample_weight: Any = None,
    labels: Any = None,
) -> float:
    r"""Log loss (cross-entropy) of predicted probabilities, as scikit-learn computes it.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,) or (n_samples, n_classes)
        Labels of any sortable type (numbers, strings), or a 0/1 indicator
        matrix.
    y_pred : array_like of float, shape (n_samples, n_classes) or (n_samples,)
        Predicted probabilities, columns in the sorted order of the labels; a
        1-D array is the probability of the greater label.
    normalize : bool, default True, keyword-only
        The mean per sample; the sum if False.
    sample_weight : array_like, shape (n_samples,), optional, keyword-only
    labels : array_like, optional, keyword-only
        Every class (when ``y_true`` lacks some).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Probabilities outside [0, 1], fewer than two classes, a label not in
        ``labels``, a column count that is not the class count.

    Warns
    -----
    UserWarning
        Rows of ``y_pred`` that do not sum to 1 (relative tolerance
        :math:`\sqrt{\epsilon}`), or ``labels`` not in sorted order.

    Notes
    -----
    :math:`-\frac{1}{n}\sum_i \log \operatorname{clip}(p_{i, y_i}, \epsilon,
    1 - \epsilon)`, by :func:`crossentropy.nll_loss` on the clipped
    log-probabilities.  The clip turns a zero probability for the true class
    into :math:`-\log \epsilon \approx 36.04` (float64) instead of infinity.
    scikit-learn: ``sklearn.metrics.log_loss(y_true, y_pred, normalize,
    sample_weight, labels)``.

    Examples
    --------
    scikit-learn's own example (classes sorted: ``ham``, ``spam``):

    >>> from crossentropy.compat import sklearn
    >>> round(sklearn.log_loss(["spam", "ham", "ham", "spam"],
    ...                        [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 5)
    0.21616
    """
    y = np.asarray(y_true)
    if y.ndim == 2 and np.asarray(y_pred).ndim == 2 and labels is None:  # indicator matrix
        p = _probabilities(y_pred, y.shape[1])
        logp = clipped_log(np, p, np.finfo(p.dtype).eps)
        losses = distribution_cross_entropy(y.astype(p.dtype), np.exp(logp), axis=-1)
        return _average(np.asarray(losses, dtype=np.float64), sample_weight, normalize)
    classes = _classes(y.ravel(), labels)
    p = _probabilities(y_pred, classes.size)
    if p.shape[0] != y.size:
        raise ValueError(f"y_true has {y.size} samples but y_pred has {p.shape[0]}")
    index = np.searchsorted(classes, y.ravel())
    logp = clipped_log(np, p, np.finfo(p.dtype).eps)
    losses = nll_loss(logp, index, reduction="none", ignore_index=None)
    return _average(np.asarray(losses, dtype=np.float64), sample_weight, normalize)


def hinge_loss(
    y_true: Any, pred_decision: Any, *, labels: Any = None, sample_weight: Any = None
) -> float:
    r"""Average hinge loss: binary, or Crammer-Singer's multi-class, as scikit-learn.

    Parameters
    ----------
    y_true : array_like, shape (n_samples,)
        Labels of any sortable type.  Binary: the greater label is the
        positive one.  Multi-class: every class present, or given in ``labels``.
    pred_decision : array_like of float, shape (n_samples,) or (n_samples, n_classes)
        Decision values (``decision_function``), columns in sorted label order.
    labels : array_like, optional, keyword-only
        Every class, for the multi-class loss.
    sample_weight : array_like, shape (n_samples,), optional, keyword-only

    Returns
    -------
    float

    Raises
    ------
    ValueError
        A 1-D ``pred_decision`` with more than two classes, or a column count
        that is not the class count.

    Notes
    -----
    Binary: :math:`\max(0, 1 - y h)` with :math:`y = \pm 1`
    (:func:`crossentropy.hinge_loss`).  Multi-class:
    :math:`\max(0, 1 + \max_{j \ne y} h_j - h_y)`
    (:func:`crossentropy.multiclass_hinge_loss`; not
    :func:`crossentropy.multi_margin_loss`, which sums over every wrong class).
    scikit-learn: ``sklearn.metrics.hinge_loss(y_true, pred_decision, labels,
    sample_weight)``.

    Examples
    --------
    >>> from crossentropy.compat import sklearn
    >>> round(sklearn.hinge_loss([-1, 1, 1], [-2.18, 2.36, 0.09]), 2)   # scikit-learn's example
    0.3
    >>> scores = [[2.0, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]]
    >>> sklearn.hinge_loss([0, 1, 2], scores)       # (0 + (1 + 1 - 0.5) + (1 + 1 - 0.5)) / 3
    1.0
    """
    y = np.asarray(y_true).ravel()
    h = np.asarray(pred_decision, dtype=np.float64)
    classes = np.unique(np.asarray(labels) if labels is not None else y)
    if classes.size > 2:
        if h.ndim <= 1:
            raise ValueError(
                f"The shape of pred_decision cannot be 1d array with a multiclass target. "
                f"pred_decision shape must be (n_samples, n_classes), that is "
                f"({y.shape[0]}, {classes.size}). Got: {h.shape}"
            )
        if h.shape[1] != classes.size:
            raise ValueError(
                f"The shape of pred_decision is not consistent with the number of classes: "
                f"expected ({y.shape[0]}, {classes.size}), got {h.shape}"
                + ("" if labels is not None else "; include all labels in y_true or pass labels")
            )
        index = np.searchsorted(classes, y)
        losses = multiclass_hinge_loss(h, index, reduction="none", axis=-1)
    else:
        signs = np.where(y == classes[-1], 1.0, -1.0) if classes.size == 2 else -np.ones(y.size)
        losses = _binary_hinge(h.ravel(), signs, reduction="none")
    return _average(np.asarray(losses), sample_weight)
