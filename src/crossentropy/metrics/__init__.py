r"""Classification metrics that stream: log loss, accuracy, calibration, Brier score.

Every metric is an accumulator with three methods:

* ``update(input, target)`` adds a block of rows;
* ``merge(other)`` adds the rows another accumulator of the same kind has seen
  (another block, another process);
* ``compute()`` returns the metric over every row added so far.

An accumulator keeps sums over rows, not means: counts as integers, the other
sums in float64 on the host.  So blocks and processes combine as if every row
had been seen at once (the counts exactly, the float sums up to the rounding of
their float64 additions), and a dataset larger than memory is evaluated one
block at a time.

``input`` holds scores with a class axis ``axis`` (default last): ``(N, C)``, or
``(N, d1, ..., C)`` for a K-dimensional target, on any array library (NumPy,
PyTorch, JAX, array-api-strict; nothing is imported for them).  ``from_`` says
what the scores are:

* ``"logits"`` (default): raw scores; probabilities are their softmax;
* ``"probs"``: probabilities, each row in [0, 1] and summing to 1 (within
  ``sum_tolerance``);
* ``"log_probs"``: log-probabilities, such as the output of ``log_softmax``.

``target`` holds integer class indices in ``[0, C)``, one per row.  ``where``
(a boolean array shaped like ``target``) leaves out the rows where it is False,
such as padding.  The per-row values are computed with the input's array
library and in its precision; only one value per row moves to the host.  Rows
that cannot be scored (NaN, a ``+inf`` logit, probabilities that do not sum to
1) raise ``ValueError`` naming the first of them.

Examples
--------
Two blocks accumulated, then merged with a third seen elsewhere:

>>> import numpy as np
>>> from crossentropy import metrics
>>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [1.0, 1.0, 3.0]])
>>> y = np.array([0, 1, 0])
>>> a = metrics.LogLoss().update(logits[:1], y[:1]).update(logits[1:2], y[1:2])
>>> b = metrics.LogLoss().update(logits[2:], y[2:])
>>> round(a.merge(b).compute(), 4)      # (0.4170 + 0.2200 + 2.2395) / 3
0.9589
>>> round(metrics.log_loss(logits, y), 4)
0.9589
"""

from __future__ import annotations

from typing import Any

from .._core.types import Array, ArrayLike
from .accumulators import (
    Accuracy,
    BrierScore,
    ExpectedCalibrationError,
    LogLoss,
    MeanEntropy,
    Metric,
    PerClass,
    Perplexity,
    Reliability,
    TopKAccuracy,
)
from .hidden import update_from_hidden
from .predictions import FROM, PredictionKind, Predictions

__all__ = [
    "FROM",
    "Accuracy",
    "BrierScore",
    "ExpectedCalibrationError",
    "LogLoss",
    "MeanEntropy",
    "Metric",
    "PerClass",
    "Perplexity",
    "PredictionKind",
    "Predictions",
    "Reliability",
    "TopKAccuracy",
    "accuracy",
    "brier_score",
    "expected_calibration_error",
    "log_loss",
    "mean_entropy",
    "perplexity",
    "reliability_diagram",
    "top_k_accuracy",
    "update_from_hidden",
]

_ONE_SHOT_PARAMETERS = """
    Parameters
    ----------
    input : array, shape (N, C) or (N, C, d1, ...) with ``axis=1``, floating
        Scores: logits, probabilities or log-probabilities (``from_``).
    target : array of int, the shape of ``input`` without its class axis
        Class indices in ``[0, C)``.
    from_ : {"logits", "probs", "log_probs"}, default "logits"
        What ``input`` holds.
    axis : int, default -1
        The class axis.
    where : array of bool, the shape of ``target``, optional
        The rows to score (padding left out).
"""


def _one_shot(
    metric: Metric[Any], input: Any, target: Any, from_: PredictionKind, axis: int, where: Any
) -> Any:
    return metric.update(input, target, from_=from_, axis=axis, where=where).compute()


def log_loss(
    input: Array | ArrayLike,
    target: Array | ArrayLike,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> float:
    r"""The mean log loss in nats of one batch: :class:`LogLoss` in one call.
    {parameters}
    Returns
    -------
    float
        :math:`\frac1N \sum_n -\log p_{n, y_n}`; ``inf`` if a target has probability 0.

    Raises
    ------
    ValueError, crossentropy.DTypeError, crossentropy.TargetIndexError
        As :class:`Predictions`.

    See Also
    --------
    crossentropy.cross_entropy : the same number from logits, with a gradient.
    sklearn.metrics.log_loss : from probabilities, clipped away from 0.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> round(metrics.log_loss(np.array([[2.0, 1.0, 0.1]]), np.array([0])), 4)   # -log 0.6590
    0.417
    >>> p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    >>> round(metrics.log_loss(p, np.array([0, 2]), from_="probs"), 4)   # -(log 0.7 + log 0.8) / 2
    0.2899
    """
    return _one_shot(LogLoss(), input, target, from_, axis, where)


def perplexity(
    input: Array | ArrayLike,
    target: Array | ArrayLike,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> float:
    """The perplexity ``exp(log loss)`` of one batch: :class:`Perplexity` in one call.
    {parameters}
    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> metrics.perplexity(np.zeros((2, 10)), np.array([3, 7]))    # uniform over 10 classes
    10.0
    """
    return _one_shot(Perplexity(), input, target, from_, axis, where)


def accuracy(
    input: Array | ArrayLike,
    target: Array | ArrayLike,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> float:
    """The fraction of rows whose top class is the target: :class:`Accuracy` in one call.
    {parameters}
    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> metrics.accuracy(np.array([[2.0, 1.0], [0.5, 2.5], [3.0, 0.0]]), np.array([0, 1, 1]))
    0.6666666666666666
    """
    return _one_shot(Accuracy(), input, target, from_, axis, where)


def top_k_accuracy(
    input: Array | ArrayLike,
    target: Array | ArrayLike,
    k: int = 5,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> float:
    """The fraction of rows whose target is among the ``k`` top classes (:class:`TopKAccuracy`).
    {parameters}
    k : int, default 5
        From 1 to C; a larger ``k`` raises ``ValueError`` naming k and C.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> x = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    >>> metrics.top_k_accuracy(x, np.array([1, 2]), k=2)    # class 1 is second, class 2 third
    0.5
    """
    return _one_shot(TopKAccuracy(k), input, target, from_, axis, where)


def expected_calibration_error(
    input: Array | ArrayLike,
    target: Array | ArrayLike,
    bins: int = 15,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> float:
    """The expected calibration error of one batch: :class:`ExpectedCalibrationError`.
    {parameters}
    bins : int, default 15
        Equal-width confidence bins.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.8, 0.2], [0.8, 0.2]])       # confident at 0.8, right half the time
    >>> round(metrics.expected_calibration_error(p, np.array([0, 1]), from_="probs"), 4)
    0.3
    """
    return _one_shot(ExpectedCalibrationError(bins), input, target, from_, axis, where)


def reliability_diagram(
    input: Array | ArrayLike,
    target: Array | ArrayLike,
    bins: int = 15,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> Reliability:
    """The data of a reliability diagram of one batch (see :class:`Reliability`).
    {parameters}
    bins : int, default 15
        Equal-width confidence bins.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6]])
    >>> r = metrics.reliability_diagram(p, np.array([0, 1, 1]), bins=5, from_="probs")
    >>> r.count, r.accuracy       # bins (0.4, 0.6] and (0.6, 0.8] hold rows
    (array([0, 0, 1, 2, 0]), array([nan, nan, 1. , 0.5, nan]))
    """
    metric = ExpectedCalibrationError(bins)
    return metric.update(input, target, from_=from_, axis=axis, where=where).reliability()


def brier_score(
    input: Array | ArrayLike,
    target: Array | ArrayLike,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> float:
    """The multiclass Brier score of one batch: :class:`BrierScore` in one call.
    {parameters}
    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.7, 0.2, 0.1]])
    >>> round(metrics.brier_score(p, np.array([0]), from_="probs"), 4)   # 0.3**2 + 0.2**2 + 0.1**2
    0.14
    """
    return _one_shot(BrierScore(), input, target, from_, axis, where)


def mean_entropy(
    input: Array | ArrayLike,
    *,
    from_: PredictionKind = "logits",
    axis: int = -1,
    where: Array | ArrayLike | None = None,
) -> float:
    """The mean predictive entropy in nats of one batch (no target): :class:`MeanEntropy`.

    Parameters
    ----------
    input, from_, axis, where
        As in :func:`log_loss`.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> round(metrics.mean_entropy(np.zeros((3, 4))), 4)     # log 4: uniform over 4 classes
    1.3863
    """
    return _one_shot(MeanEntropy(), input, None, from_, axis, where)


for _fn in (log_loss, perplexity, accuracy, top_k_accuracy, expected_calibration_error,
            reliability_diagram, brier_score):  # fmt: skip
    _fn.__doc__ = (_fn.__doc__ or "").replace("{parameters}", _ONE_SHOT_PARAMETERS)
