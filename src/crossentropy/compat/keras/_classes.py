r"""``keras.losses`` classes: a loss function plus Keras's ``sample_weight`` and ``reduction``.

``loss = keras.CategoricalCrossentropy(from_logits=True); loss(y_true, y_pred,
sample_weight=w)`` as in Keras: the function's per-example values, times the
sample weights, reduced by ``reduction``:

* ``'sum_over_batch_size'`` (default) and ``'mean'``: the sum over the number of values;
* ``'mean_with_sample_weight'``: the sum over the sum of the sample weights;
* ``'sum'``; ``None`` or ``'none'``: the weighted values themselves.

A zero divisor gives 0, as Keras's ``divide_no_nan``.  The inputs keep their
dtype unless ``dtype`` is given (Keras casts to ``float32`` by default).
"""

from __future__ import annotations

import math
from typing import Any

from ..._core.namespace import namespace
from . import _functions as F

__all__ = [
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "CategoricalGeneralizedCrossEntropy",
    "CategoricalHinge",
    "Hinge",
    "KLDivergence",
    "Loss",
    "SparseCategoricalCrossentropy",
    "SquaredHinge",
]

_REDUCTIONS = ("sum_over_batch_size", "sum", None, "none", "mean", "mean_with_sample_weight")


def _same_rank(xp: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """Keras's ``squeeze_or_expand_to_same_rank``: reconcile a trailing axis of size 1."""
    if a.ndim == b.ndim + 1 and a.shape[-1] == 1:
        a = xp.squeeze(a, axis=-1) if b.ndim != 1 else a
        b = xp.expand_dims(b, axis=-1) if b.ndim == 1 and a.ndim == 2 else b
    elif b.ndim == a.ndim + 1 and b.shape[-1] == 1:
        b = xp.squeeze(b, axis=-1) if a.ndim != 1 else b
        a = xp.expand_dims(a, axis=-1) if a.ndim == 1 and b.ndim == 2 else a
    return a, b


class Loss:
    r"""Base of the Keras-style loss objects.

    Parameters
    ----------
    reduction : {'sum_over_batch_size', 'mean', 'mean_with_sample_weight', 'sum', 'none', None}
        Default ``'sum_over_batch_size'``.
    name : str, optional
    dtype : str or dtype, optional
        Cast ``y_pred`` (and ``y_true``) to it first.

    Notes
    -----
    Keras: ``keras.losses.Loss``.  Subclasses set :attr:`fn`, the per-example
    function, and pass its options as keyword arguments.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> float(keras.Hinge(reduction="sum")([[1, 1]], [[0.5, 2.0]]))      # mean(0.5, 0) summed
    0.25
    """

    fn: Any = None

    def __init__(
        self, reduction: str | None = "sum_over_batch_size", name: str | None = None,
        dtype: Any = None, **options: Any,
    ) -> None:  # fmt: skip
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction, self.name, self.dtype, self.options = reduction, name, dtype, options

    def _values(self, xp: Any, y_true: Any, y_pred: Any) -> tuple[Any, Any]:
        """The per-example values and a mask of those that count (or ``None``)."""
        return type(self).fn(y_true, y_pred, **self.options), None

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        xp, (y_true, y_pred, sample_weight) = namespace(y_true, y_pred, sample_weight)
        if self.dtype is not None:
            y_pred = xp.astype(y_pred, getattr(xp, str(self.dtype), self.dtype))
        y_true, y_pred = _same_rank(xp, y_true, y_pred)
        values, mask = self._values(xp, y_true, y_pred)
        return self._reduce(xp, values, sample_weight, mask)

    def _reduce(self, xp: Any, values: Any, sample_weight: Any, mask: Any) -> Any:
        """Keras's ``reduce_weighted_values``."""
        r = self.reduction
        if mask is not None:
            m = xp.astype(mask, values.dtype)
            if r in ("mean", "sum_over_batch_size"):  # divide by the counted values
                valid = float(xp.sum(m))
                m = m * (math.prod(mask.shape) / valid if valid else 0.0)
            sample_weight = m if sample_weight is None else xp.astype(sample_weight, values.dtype) * m
        if sample_weight is not None:
            sample_weight = xp.astype(sample_weight, values.dtype)
            values, sample_weight = _same_rank(xp, values, sample_weight)
            while sample_weight.ndim < values.ndim:
                sample_weight = xp.expand_dims(sample_weight, axis=-1)
            values = values * sample_weight
        if r is None or r == "none" or values.ndim == 0 or tuple(values.shape) == (0,):
            return values
        total = xp.sum(values)
        if r == "sum":
            return total
        if r == "mean_with_sample_weight" and sample_weight is not None:
            divisor = xp.sum(sample_weight)
        else:
            divisor = xp.asarray(float(math.prod(values.shape)), dtype=values.dtype)
        return xp.where(divisor == 0, xp.zeros_like(total), total / xp.where(divisor == 0, 1, divisor))


class CategoricalCrossentropy(Loss):
    r"""Cross-entropy with one-hot labels as a loss object.

    Parameters
    ----------
    from_logits : bool, default False
    label_smoothing : float, default 0.0
    axis : int, default -1
    reduction, name, dtype
        As :class:`Loss`.

    Notes
    -----
    :func:`categorical_crossentropy` reduced.  Keras:
    ``keras.losses.CategoricalCrossentropy``.

    Examples
    --------
    Keras's own example (``1.177``, and ``0.814`` with sample weights):

    >>> import numpy as np
    >>> from crossentropy.compat import keras
    >>> cce = keras.CategoricalCrossentropy()
    >>> y_true, y_pred = [[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]
    >>> round(float(cce(y_true, y_pred)), 3), round(float(cce(y_true, y_pred, np.array([0.3, 0.7]))), 3)
    (1.177, 0.814)
    """

    fn = staticmethod(F.categorical_crossentropy)

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_crossentropy", dtype=None):  # fmt: skip
        super().__init__(reduction, name, dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)  # fmt: skip


class SparseCategoricalCrossentropy(Loss):
    r"""Cross-entropy with integer labels as a loss object; ``ignore_class`` is not counted.

    Parameters
    ----------
    from_logits : bool, default False
    ignore_class : int, optional
        Labels equal to it give 0 and are left out of the mean.
    reduction, axis, name, dtype
        As :class:`Loss` and :func:`sparse_categorical_crossentropy`.

    Notes
    -----
    Keras: ``keras.losses.SparseCategoricalCrossentropy``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> round(float(keras.SparseCategoricalCrossentropy()([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])), 3)
    1.177
    """

    fn = staticmethod(F.sparse_categorical_crossentropy)

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 axis=-1, name="sparse_categorical_crossentropy", dtype=None):  # fmt: skip
        super().__init__(reduction, name, dtype, from_logits=from_logits,
                         ignore_class=ignore_class, axis=axis)  # fmt: skip

    def _values(self, xp: Any, y_true: Any, y_pred: Any) -> tuple[Any, Any]:
        values, _ = super()._values(xp, y_true, y_pred)
        ignore = self.options["ignore_class"]
        if ignore is None:
            return values, None
        return values, xp.reshape(y_true, values.shape) != ignore


class BinaryCrossentropy(Loss):
    r"""Binary cross-entropy as a loss object.

    Parameters
    ----------
    from_logits : bool, default False
    label_smoothing : float, default 0.0
    axis : int, default -1
    reduction, name, dtype
        As :class:`Loss`.

    Notes
    -----
    :func:`binary_crossentropy` reduced.  Keras: ``keras.losses.BinaryCrossentropy``.

    Examples
    --------
    Keras's own example:

    >>> from crossentropy.compat import keras
    >>> bce = keras.BinaryCrossentropy(from_logits=True)
    >>> round(float(bce([0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8])), 3)     # Keras shows 0.8654
    0.865
    """

    fn = staticmethod(F.binary_crossentropy)

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="binary_crossentropy", dtype=None):  # fmt: skip
        super().__init__(reduction, name, dtype, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)  # fmt: skip


class BinaryFocalCrossentropy(Loss):
    r"""Binary focal cross-entropy as a loss object.

    Parameters
    ----------
    apply_class_balancing : bool, default False
    alpha : float, default 0.25
    gamma : float, default 2.0
    from_logits : bool, default False
    label_smoothing : float, default 0.0
    axis : int, default -1
    reduction, name, dtype
        As :class:`Loss`.

    Notes
    -----
    :func:`binary_focal_crossentropy` reduced.  Keras:
    ``keras.losses.BinaryFocalCrossentropy``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> loss = keras.BinaryFocalCrossentropy(gamma=2.0)
    >>> round(float(loss([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])), 3)   # mean(0.330, 0.206)
    0.268
    """

    fn = staticmethod(F.binary_focal_crossentropy)

    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                 label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_focal_crossentropy", dtype=None):  # fmt: skip
        super().__init__(reduction, name, dtype, apply_class_balancing=apply_class_balancing,
                         alpha=alpha, gamma=gamma, from_logits=from_logits,
                         label_smoothing=label_smoothing, axis=axis)  # fmt: skip


class CategoricalFocalCrossentropy(Loss):
    r"""Softmax focal cross-entropy as a loss object.

    Parameters
    ----------
    alpha : float or array_like of shape (C,), default 0.25
    gamma : float, default 2.0
    from_logits : bool, default False
    label_smoothing : float, default 0.0
    axis : int, default -1
    reduction, name, dtype
        As :class:`Loss`.

    Notes
    -----
    :func:`categorical_focal_crossentropy` reduced.  Keras:
    ``keras.losses.CategoricalFocalCrossentropy``.

    Examples
    --------
    Keras's own example:

    >>> from crossentropy.compat import keras
    >>> cfce = keras.CategoricalFocalCrossentropy()
    >>> round(float(cfce([[0., 1., 0.], [0., 0., 1.]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])), 5)
    0.23315
    """

    fn = staticmethod(F.categorical_focal_crossentropy)

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_focal_crossentropy",
                 dtype=None):  # fmt: skip
        super().__init__(reduction, name, dtype, alpha=alpha, gamma=gamma,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)  # fmt: skip


class CategoricalGeneralizedCrossEntropy(Loss):
    r"""Generalized cross-entropy :math:`(1 - p_y^q)/q` as a loss object.

    Parameters
    ----------
    q : float in (0, 1), default 0.5
    reduction, name, dtype
        As :class:`Loss`.

    Raises
    ------
    ValueError
        ``q`` outside (0, 1).

    Notes
    -----
    :func:`categorical_generalized_cross_entropy` reduced.  Keras:
    ``keras.losses.CategoricalGeneralizedCrossEntropy``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    >>> round(float(keras.CategoricalGeneralizedCrossEntropy(q=0.5)([0], [[0.25, 0.75]])), 4)
    1.0
    """

    fn = staticmethod(F.categorical_generalized_cross_entropy)

    def __init__(self, q=0.5, reduction="sum_over_batch_size",
                 name="categorical_generalized_cross_entropy", dtype=None):  # fmt: skip
        if not 0 < q < 1:
            raise ValueError(f"q must be in the interval (0, 1), got {q!r}")
        super().__init__(reduction, name, dtype, q=q)


def _plain(fn: Any, name: str, keras_name: str, example: str) -> type:
    """A loss class with no options beyond :class:`Loss`'s."""
    doc = f"""``{fn.__name__}`` as a loss object.

    Parameters
    ----------
    reduction, name, dtype
        As :class:`Loss`.

    Notes
    -----
    :func:`{fn.__name__}` reduced.  Keras: ``keras.losses.{keras_name}``.

    Examples
    --------
    >>> from crossentropy.compat import keras
    {example}
    """

    def __init__(self, reduction="sum_over_batch_size", name=name, dtype=None):
        Loss.__init__(self, reduction, name, dtype)

    return type(keras_name, (Loss,), {
        "fn": staticmethod(fn), "__init__": __init__, "__doc__": doc, "__module__": __name__,
    })  # fmt: skip


Hinge = _plain(F.hinge, "hinge", "Hinge",
               ">>> float(keras.Hinge()([[0, 1]], [[-0.5, 0.5]]))\n    0.5")  # fmt: skip
SquaredHinge = _plain(F.squared_hinge, "squared_hinge", "SquaredHinge",
                      ">>> float(keras.SquaredHinge()([[0, 1]], [[-0.5, 0.5]]))\n    0.25")  # fmt: skip
CategoricalHinge = _plain(
    F.categorical_hinge, "categorical_hinge", "CategoricalHinge",
    ">>> round(float(keras.CategoricalHinge()([[0, 1, 0]], [[0.3, 0.8, 0.5]])), 4)\n    0.7",
)  # fmt: skip
KLDivergence = _plain(
    F.kl_divergence, "kl_divergence", "KLDivergence",
    ">>> round(float(keras.KLDivergence()([[0.5, 0.5]], [[0.9, 0.1]])), 4)\n    0.5108",
)  # fmt: skip
