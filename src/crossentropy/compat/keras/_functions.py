r"""``keras.losses`` functions: one loss per example, Keras's clipping of probabilities.

With ``from_logits=False`` Keras normalises each probability row, clips it to
:math:`[10^{-7}, 1 - 10^{-7}]` and takes the log; these functions do the same
so that the numbers are Keras's.  With ``from_logits=True`` they call the
fused functions on the logits directly (exact where Keras's focal losses,
which clip after the softmax, are not).
"""

from __future__ import annotations

from typing import Any

from ..._core.namespace import device, index_dtype, namespace, numeric_guard
from ...info import cross_entropy as distribution_cross_entropy
from ...losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    focal_cross_entropy,
    generalized_cross_entropy,
    hinge_loss,
    kl_div,
    multiclass_hinge_loss,
    nll_loss,
    sigmoid_focal_loss,
    squared_hinge_loss,
)
from .._layout import KERAS_EPSILON, clipped_log, log_of_normalized

__all__ = [
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "categorical_generalized_cross_entropy",
    "categorical_hinge",
    "hinge",
    "kl_divergence",
    "sparse_categorical_crossentropy",
    "squared_hinge",
]


def _pair(y_true: Any, y_pred: Any) -> tuple[Any, Any, Any]:
    """``(xp, y_true, y_pred)`` with ``y_true`` cast to ``y_pred``'s dtype, as Keras."""
    xp, (y_true, y_pred) = namespace(y_true, y_pred)
    return xp, xp.astype(y_true, y_pred.dtype), y_pred


def _smoothed(xp: Any, y: Any, label_smoothing: float, n: Any) -> Any:
    return y if not label_smoothing else y * (1.0 - label_smoothing) + label_smoothing / n


def categorical_crossentropy(
    y_true: Any, y_pred: Any, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> Any:
    r"""Cross-entropy with one-hot (or soft) labels, one value per example.

    Parameters
    ----------
    y_true : array_like, ``y_pred``'s shape
        One-hot or probability labels.
    y_pred : array_like, floating
        Probabilities (each row is normalised, then clipped to
        :math:`[10^{-7}, 1 - 10^{-7}]`), or logits with ``from_logits``.
    from_logits : bool, default False
    label_smoothing : float in [0, 1], default 0.0
        ``y_true * (1 - ls) + ls / C``.
    axis : int, default -1
        The class axis.

    Returns
    -------
    array
        ``y_pred``'s shape without ``axis``.

    Notes
    -----
    Logits: :func:`crossentropy.cross_entropy` (``label_smoothing`` is the
    same mixing).  Probabilities: :math:`-\sum_c y_c \log \operatorname{clip}
    (p_c)` by :func:`crossentropy.info.cross_entropy`.  Keras:
    ``keras.losses.categorical_crossentropy``.

    Examples
    --------
    Keras's own example:

    >>> from crossentropy.compat import keras
    >>> keras.categorical_crossentropy([[0, 1, 0], [0, 0, 1]],
    ...                                [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]).round(4)
    array([0.0513, 2.3026])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    if from_logits:
        return cross_entropy(
            y_pred, y_true, reduction="none", axis=axis, label_smoothing=label_smoothing
        )
    t = _smoothed(xp, y_true, label_smoothing, y_true.shape[axis])
    q = xp.exp(log_of_normalized(xp, y_pred, axis))
    return distribution_cross_entropy(t, q, axis=axis)


def sparse_categorical_crossentropy(
    y_true: Any, y_pred: Any, from_logits: bool = False, ignore_class: int | None = None, axis: int = -1
) -> Any:
    r"""Cross-entropy with integer labels, one value per example.

    Parameters
    ----------
    y_true : array_like
        Class indices, ``y_pred``'s shape without ``axis`` (a trailing axis
        of size 1 is dropped); any integer or integral float dtype.
    y_pred : array_like, floating
        Probabilities (normalised and clipped as Keras does) or logits.
    from_logits : bool, default False
    ignore_class : int, optional
        A label that contributes 0.
    axis : int, default -1

    Returns
    -------
    array
        ``y_true``'s shape.

    Notes
    -----
    :func:`crossentropy.cross_entropy` on logits, :func:`crossentropy.nll_loss`
    on the clipped log-probabilities.  Keras:
    ``keras.losses.sparse_categorical_crossentropy``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> keras.sparse_categorical_crossentropy([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]).round(4)
    array([0.0513, 2.3026])
    """
    xp, (y_true, y_pred) = namespace(y_true, y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[axis] == 1:
        y_true = xp.squeeze(y_true, axis=axis)
    y_true = xp.astype(y_true, index_dtype(xp))
    if from_logits:
        return cross_entropy(y_pred, y_true, reduction="none", axis=axis, ignore_index=ignore_class)
    logp = log_of_normalized(xp, y_pred, axis)
    return nll_loss(logp, y_true, reduction="none", axis=axis, ignore_index=ignore_class)


def binary_crossentropy(
    y_true: Any, y_pred: Any, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> Any:
    r"""Binary cross-entropy averaged over ``axis``, one value per example.

    Parameters
    ----------
    y_true : array_like, ``y_pred``'s shape
        Labels in [0, 1].
    y_pred : array_like, floating
        Probabilities (clipped to :math:`[10^{-7}, 1 - 10^{-7}]`) or logits.
    from_logits : bool, default False
    label_smoothing : float, default 0.0
        ``y_true * (1 - ls) + 0.5 * ls``.
    axis : int, default -1
        The axis averaged over.

    Returns
    -------
    array
        ``y_pred``'s shape without ``axis``.

    Notes
    -----
    :func:`crossentropy.binary_cross_entropy_with_logits` on logits,
    :func:`crossentropy.binary_cross_entropy` on the clipped probabilities.
    Keras: ``keras.losses.binary_crossentropy``.

    Examples
    --------
    Keras's own example:

    >>> from crossentropy.compat import keras
    >>> keras.binary_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]).round(3)
    array([0.916, 0.714])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    t = _smoothed(xp, y_true, label_smoothing, 2.0)
    if from_logits:
        return xp.mean(binary_cross_entropy_with_logits(y_pred, t, reduction="none"), axis=axis)
    p = xp.clip(y_pred, KERAS_EPSILON, 1 - KERAS_EPSILON)
    return xp.mean(binary_cross_entropy(p, t, reduction="none"), axis=axis)


def binary_focal_crossentropy(
    y_true: Any,
    y_pred: Any,
    apply_class_balancing: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
) -> Any:
    r"""Binary focal cross-entropy averaged over ``axis``, one value per example.

    Parameters
    ----------
    y_true : array_like, ``y_pred``'s shape
        Labels in [0, 1].
    y_pred : array_like, floating
        Probabilities (clipped as Keras does) or logits.
    apply_class_balancing : bool, default False
        Weigh positives by ``alpha`` and negatives by ``1 - alpha``.
    alpha : float, default 0.25
    gamma : float, default 2.0
    from_logits : bool, default False
    label_smoothing : float, default 0.0
    axis : int, default -1

    Returns
    -------
    array
        ``y_pred``'s shape without ``axis``.

    Notes
    -----
    :func:`crossentropy.sigmoid_focal_loss` on the logits (probabilities are
    turned into logits :math:`\log p - \log(1 - p)` after clipping).  Keras:
    ``keras.losses.binary_focal_crossentropy``.

    Examples
    --------
    Keras's own example:

    >>> from crossentropy.compat import keras
    >>> keras.binary_focal_crossentropy([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]).round(3)
    array([0.33 , 0.206])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    t = _smoothed(xp, y_true, label_smoothing, 2.0)
    if not from_logits:
        y_pred = clipped_log(xp, y_pred, KERAS_EPSILON) - clipped_log(xp, 1 - y_pred, KERAS_EPSILON)
    focal = sigmoid_focal_loss(y_pred, t, alpha if apply_class_balancing else -1.0, gamma)
    return xp.mean(focal, axis=axis)


def categorical_focal_crossentropy(
    y_true: Any,
    y_pred: Any,
    alpha: Any = 0.25,
    gamma: float = 2.0,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
) -> Any:
    r"""Softmax focal cross-entropy with one-hot labels, one value per example.

    Parameters
    ----------
    y_true : array_like, ``y_pred``'s shape
        One-hot or probability labels.
    y_pred : array_like, floating
        Probabilities (normalised and clipped as Keras does) or logits.
    alpha : float or array_like of shape (C,), default 0.25
        Weight of every class, or of each class.
    gamma : float, default 2.0
    from_logits : bool, default False
    label_smoothing : float, default 0.0
    axis : int, default -1

    Returns
    -------
    array
        ``y_pred``'s shape without ``axis``.

    Notes
    -----
    :func:`crossentropy.focal_cross_entropy` with ``weight=alpha``, on the
    logits or on the log of the clipped probabilities.  Keras clips the
    softmax too when ``from_logits=True``; this does not, so the two differ
    where a probability is within :math:`10^{-7}` of 0 or 1.  Keras:
    ``keras.losses.categorical_focal_crossentropy``.

    Examples
    --------
    Keras's own example:

    >>> from crossentropy.compat import keras
    >>> keras.categorical_focal_crossentropy([[0, 1, 0], [0, 0, 1]],
    ...                                      [[0.05, 0.9, 0.05], [0.1, 0.85, 0.05]]).round(6)
    array([2.63e-04, 6.75912e-01])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    n = y_pred.shape[axis]
    t = _smoothed(xp, y_true, label_smoothing, n)
    logits = y_pred if from_logits else log_of_normalized(xp, y_pred, axis)
    alpha = xp.asarray(alpha, dtype=y_pred.dtype, device=device(y_pred))
    weight = xp.broadcast_to(alpha, (n,))
    return focal_cross_entropy(logits, t, gamma, weight, reduction="none", axis=axis)


@numeric_guard  # log 0 = -inf is the right logit of a zero probability
def categorical_generalized_cross_entropy(y_true: Any, y_pred: Any, q: float) -> Any:
    r"""Generalized cross-entropy :math:`(1 - p_y^q)/q` of probabilities and integer labels.

    Parameters
    ----------
    y_true : array_like, shape (N,)
        Class indices.
    y_pred : array_like, floating, shape (N, C)
        Class probabilities.
    q : float in (0, 1)

    Returns
    -------
    array
        Shape (N,).

    Notes
    -----
    :func:`crossentropy.generalized_cross_entropy` on ``log(y_pred)`` as logits.
    Keras: ``keras.losses.categorical_generalized_cross_entropy``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> keras.categorical_generalized_cross_entropy([0], [[0.25, 0.75]], q=0.5).round(4)
    array([1.])
    """
    xp, (y_true, y_pred) = namespace(y_true, y_pred)
    labels = xp.astype(y_true, index_dtype(xp))
    return generalized_cross_entropy(xp.log(y_pred), labels, q, reduction="none", axis=-1)


def _signed(xp: Any, y: Any) -> Any:
    """Keras's ``convert_binary_labels_to_hinge``: 0/1 labels become -1/+1."""
    binary = bool(xp.all((y == 0) | (y == 1)))
    return 2.0 * y - 1.0 if binary else y


def hinge(y_true: Any, y_pred: Any) -> Any:
    r"""Binary hinge loss averaged over the last axis; 0/1 labels become -1/+1.

    Parameters
    ----------
    y_true : array_like, ``y_pred``'s shape
        Labels -1/+1, or 0/1.
    y_pred : array_like, floating

    Returns
    -------
    array
        ``y_pred``'s shape without the last axis.

    Notes
    -----
    :func:`crossentropy.hinge_loss`.  Keras: ``keras.losses.hinge``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> keras.hinge([[0, 1]], [[-0.5, 0.5]])               # max(0, 1 - 0.5) both
    array([0.5])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    return xp.mean(hinge_loss(y_pred, _signed(xp, y_true), reduction="none"), axis=-1)


def squared_hinge(y_true: Any, y_pred: Any) -> Any:
    r"""Squared hinge loss averaged over the last axis; 0/1 labels become -1/+1.

    Parameters
    ----------
    y_true : array_like, ``y_pred``'s shape
    y_pred : array_like, floating

    Returns
    -------
    array
        ``y_pred``'s shape without the last axis.

    Notes
    -----
    :func:`crossentropy.squared_hinge_loss`.  Keras: ``keras.losses.squared_hinge``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> keras.squared_hinge([[0, 1]], [[-0.5, 0.5]])       # 0.5 ** 2 both
    array([0.25])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    return xp.mean(squared_hinge_loss(y_pred, _signed(xp, y_true), reduction="none"), axis=-1)


def categorical_hinge(y_true: Any, y_pred: Any) -> Any:
    r"""Keras's categorical hinge :math:`\max(0, 1 + \max(\max_{j \ne y} x_j, 0) - x_y)`.

    Parameters
    ----------
    y_true : array_like, ``y_pred``'s shape
        One-hot rows (classes last); an all-zero row has no target class
        (its loss is :math:`\max(0, 1 + \max_j x_j)`, as in Keras).
    y_pred : array_like, floating, shape (..., C)

    Returns
    -------
    array
        ``y_pred``'s shape without the last axis.

    Raises
    ------
    ValueError
        ``y_true`` rows with values other than 0 and 1, or more than one 1.

    Notes
    -----
    :func:`crossentropy.multiclass_hinge_loss` (Crammer-Singer) with a score
    of 0 appended as a further class: Keras's ``neg = max((1 - y) * pred)``
    includes the 0 that the target position contributes, and a row without
    target takes the appended 0 as its target score.  Keras:
    ``keras.losses.categorical_hinge``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> keras.categorical_hinge([[0, 1, 0]], [[0.3, 0.8, 0.5]])    # 1 + 0.5 - 0.8
    array([0.7])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    count = xp.sum(y_true, axis=-1)
    if not bool(xp.all((y_true == 0) | (y_true == 1))) or not bool(xp.all(count <= 1)):
        raise ValueError(
            "categorical_hinge: y_true must hold one-hot rows (one 1, the rest 0) or all-zero rows"
        )
    n = y_pred.shape[-1]
    index = xp.where(count == 1, xp.argmax(y_true, axis=-1), xp.full_like(count, n, dtype=index_dtype(xp)))
    padded = xp.concat([y_pred, xp.zeros_like(y_pred[..., :1])], axis=-1)
    return multiclass_hinge_loss(padded, index, reduction="none", axis=-1)


def kl_divergence(y_true: Any, y_pred: Any) -> Any:
    r"""KL divergence :math:`\sum y \log(y / p)` over the last axis, both clipped to :math:`[10^{-7}, 1]`.

    Parameters
    ----------
    y_true : array_like, floating
    y_pred : array_like, floating, same shape

    Returns
    -------
    array
        The shape without the last axis.

    Notes
    -----
    :func:`crossentropy.kl_div` on ``log(clip(y_pred))``.  Keras:
    ``keras.losses.kl_divergence``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> keras.kl_divergence([[0.5, 0.5]], [[0.9, 0.1]]).round(4)
    array([0.5108])
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    t = xp.clip(y_true, KERAS_EPSILON, 1.0)
    logq = xp.log(xp.clip(y_pred, KERAS_EPSILON, 1.0))
    return xp.sum(kl_div(logq, t, reduction="none"), axis=-1)
