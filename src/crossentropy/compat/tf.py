r"""TensorFlow's ``tf.nn`` cross-entropy names: ``labels=``, ``logits=``, one loss per example.

``from crossentropy.compat import tf`` and TensorFlow code such as
``tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=z)`` runs unchanged
on NumPy, PyTorch, JAX or any Array API array.  Each function returns the
unreduced loss (``tf.reduce_mean`` it yourself, or use the reductions of
:mod:`crossentropy`).  ``name=`` is accepted and ignored.

TensorFlow tutorials also teach the *clip-by-value* form
``-tf.reduce_sum(y * tf.math.log(tf.clip_by_value(p, 1e-10, 1.0)))``; prefer
these fused functions on logits: the clipped form loses every logit gap beyond
:math:`\log 10^{10} \approx 23` and has zero gradient where it clips
(docs/compat.md shows the numbers).
"""

from __future__ import annotations

from typing import Any

from .._core.namespace import namespace
from ..losses import binary_cross_entropy_with_logits, cross_entropy
from ..special import logsumexp

__all__ = [
    "reduce_logsumexp",
    "sigmoid_cross_entropy_with_logits",
    "softmax_cross_entropy_with_logits",
    "sparse_softmax_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits",
]


def softmax_cross_entropy_with_logits(
    labels: Any, logits: Any, axis: int = -1, name: str | None = None
) -> Any:
    r"""Softmax cross-entropy between logits and class-probability labels, per example.

    Parameters
    ----------
    labels : array_like, floating, ``logits``'s shape
        A probability distribution per example (one-hot or soft).
    logits : array_like, floating
        Unnormalised scores; the class axis is ``axis``.
    axis : int, default -1
        The class axis.
    name : str, optional
        Ignored (TensorFlow's op name).

    Returns
    -------
    array
        ``logits``'s shape without ``axis``; ``logits``'s dtype.

    Notes
    -----
    :math:`-\sum_c y_c \log\operatorname{softmax}(x)_c`, computed as
    :func:`crossentropy.cross_entropy` with ``reduction='none'``.
    TensorFlow: ``tf.nn.softmax_cross_entropy_with_logits(labels, logits, axis)``.

    Examples
    --------
    Equal logits over 4 classes: :math:`\log 4` whatever the label:

    >>> from crossentropy.compat import tf
    >>> tf.softmax_cross_entropy_with_logits(labels=[[0.0, 1.0, 0.0, 0.0]],
    ...                                      logits=[[2.0, 2.0, 2.0, 2.0]]).round(4)
    array([1.3863])
    """
    return cross_entropy(logits, labels, reduction="none", axis=axis, ignore_index=None)


def sparse_softmax_cross_entropy_with_logits(
    labels: Any, logits: Any, name: str | None = None
) -> Any:
    r"""Softmax cross-entropy between logits and integer class labels, per example.

    Parameters
    ----------
    labels : array_like, integer, ``logits``'s shape without the last axis
        Class indices in ``[0, C)``; any other value raises (TensorFlow raises
        on CPU and returns NaN on GPU).
    logits : array_like, floating, shape (..., C)
        Unnormalised scores, classes last.
    name : str, optional
        Ignored.

    Returns
    -------
    array
        ``labels``'s shape; ``logits``'s dtype.

    Raises
    ------
    TargetIndexError
        A label outside ``[0, C)``.

    Notes
    -----
    :math:`\operatorname{lse}(x) - x_y`, by :func:`crossentropy.cross_entropy`.
    TensorFlow: ``tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)``.

    Examples
    --------
    >>> from crossentropy.compat import tf
    >>> tf.sparse_softmax_cross_entropy_with_logits(labels=[0], logits=[[0.0, 0.0]]).round(4)
    array([0.6931])
    """
    return cross_entropy(logits, labels, reduction="none", axis=-1, ignore_index=None)


def sigmoid_cross_entropy_with_logits(
    labels: Any = None, logits: Any = None, name: str | None = None
) -> Any:
    r"""Element-wise logistic loss on logits: independent binary labels.

    Parameters
    ----------
    labels : array_like, ``logits``'s shape
        Labels in [0, 1] (integers 0/1 accepted).
    logits : array_like, floating
    name : str, optional
        Ignored.

    Returns
    -------
    array
        ``logits``'s shape and dtype.

    Raises
    ------
    ValueError
        Missing ``labels`` or ``logits``, or shapes that differ.

    Notes
    -----
    :math:`\max(x, 0) - x y + \log(1 + e^{-|x|})`, by
    :func:`crossentropy.binary_cross_entropy_with_logits`.  TensorFlow:
    ``tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)``.

    Examples
    --------
    >>> from crossentropy.compat import tf
    >>> tf.sigmoid_cross_entropy_with_logits(labels=[1.0, 0.0], logits=[0.0, 100.0]).round(4)
    array([  0.6931, 100.    ])
    """
    if labels is None or logits is None:
        raise ValueError("sigmoid_cross_entropy_with_logits needs both labels= and logits=")
    return binary_cross_entropy_with_logits(logits, labels, reduction="none")


def weighted_cross_entropy_with_logits(
    labels: Any, logits: Any, pos_weight: Any, name: str | None = None
) -> Any:
    r"""Element-wise logistic loss with the positive term weighted by ``pos_weight``.

    Parameters
    ----------
    labels : array_like, ``logits``'s shape
        Labels in [0, 1].
    logits : array_like, floating
    pos_weight : float or array_like
        Weight of the positive term, broadcastable to ``logits``; above 1 it
        raises recall.
    name : str, optional
        Ignored.

    Returns
    -------
    array
        ``logits``'s shape and dtype.

    Notes
    -----
    :math:`-[p_w\, y \log\sigma(x) + (1-y)\log(1-\sigma(x))]`, by
    :func:`crossentropy.binary_cross_entropy_with_logits` with
    ``pos_weight``.  TensorFlow:
    ``tf.nn.weighted_cross_entropy_with_logits(labels, logits, pos_weight)``.

    Examples
    --------
    A positive label at logit 0 weighted 3: :math:`3 \log 2`:

    >>> from crossentropy.compat import tf
    >>> tf.weighted_cross_entropy_with_logits([1.0], [0.0], pos_weight=3.0).round(4)
    array([2.0794])
    """
    return binary_cross_entropy_with_logits(logits, labels, reduction="none", pos_weight=pos_weight)


def reduce_logsumexp(
    input_tensor: Any, axis: Any = None, keepdims: bool = False, name: str | None = None
) -> Any:
    r"""``log(sum(exp(x)))`` over ``axis`` (every axis by default), without overflow.

    Parameters
    ----------
    input_tensor : array_like
        Floating, complex or integer.
    axis : int or tuple of int, optional
        Axes to reduce; all of them by default, as TensorFlow.
    keepdims : bool, default False
    name : str, optional
        Ignored.

    Returns
    -------
    array
        The reduced log-sum-exp.

    Notes
    -----
    :func:`crossentropy.logsumexp`.  TensorFlow:
    ``tf.math.reduce_logsumexp(input_tensor, axis, keepdims)``.

    Examples
    --------
    >>> from crossentropy.compat import tf
    >>> round(float(tf.reduce_logsumexp([[0.0, 0.0], [0.0, 0.0]])), 4)   # log 4
    1.3863
    """
    _, (x,) = namespace(input_tensor)
    if axis is None:
        axis = tuple(range(x.ndim))
    return logsumexp(x, axis=axis, keepdims=keepdims)
