"""The accumulators: each keeps sums over rows and turns them into one metric."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .predictions import Predictions

__all__ = [
    "Accuracy",
    "BrierScore",
    "ExpectedCalibrationError",
    "LogLoss",
    "MeanEntropy",
    "Metric",
    "PerClass",
    "Perplexity",
    "Reliability",
    "TopKAccuracy",
]


M = TypeVar("M", bound="Metric")


class Metric:
    """The accumulator interface: :meth:`update`, :meth:`add`, :meth:`merge`, :meth:`compute`.

    ``update`` and ``merge`` return the accumulator itself, so that calls chain.
    Accumulators are plain Python objects: pickle one to send it to another
    process (``torch.distributed.all_gather_object``, ``multiprocessing``)
    and merge it there.
    """

    needs_target = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every row."""
        self.rows = 0

    def options(self) -> tuple:
        """The settings that two accumulators must share to be merged."""
        return ()

    def update(
        self: M,
        input: Any,
        target: Any = None,
        *,
        from_: str = "logits",
        axis: int = -1,
        where: Any = None,
    ) -> M:
        """Add the rows of ``input`` (see :class:`Predictions` for the arguments)."""
        return self.add(Predictions(input, target, from_=from_, axis=axis, where=where))

    def add(self: M, batch: Predictions) -> M:
        """Add the rows of a prepared block."""
        if self.needs_target:
            batch.require_target()
        self._add(batch)
        self.rows += batch.rows
        return self

    def merge(self: M, other: M) -> M:
        """Add the rows that ``other`` (the same metric, the same options) has seen."""
        if type(other) is not type(self) or other.options() != self.options():
            raise ValueError(
                f"cannot merge {other!r} into {self!r}: both must be the same metric with the "
                f"same options"
            )
        self._merge(other)
        self.rows += other.rows
        return self

    def compute(self) -> Any:
        """The metric over every row added."""
        if self.rows == 0:
            raise ValueError(f"{type(self).__name__}.compute(): no rows were added")
        return self._compute()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in zip(self._option_names, self.options()))
        return f"{type(self).__name__}({opts})"

    _option_names: tuple[str, ...] = ()

    def _add(self, batch: Predictions) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _merge(self, other: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compute(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class _MeanOverRows(Metric):
    """A float64 sum of one value per row, divided by the row count."""

    def reset(self) -> None:
        super().reset()
        self.total = 0.0

    def _values(self, batch: Predictions) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _add(self, batch: Predictions) -> None:
        self.total += float(np.sum(self._values(batch), dtype=np.float64))

    def _merge(self, other: Any) -> None:
        self.total += other.total

    def _compute(self) -> float:
        return self.total / self.rows


class LogLoss(_MeanOverRows):
    r"""Log loss (cross-entropy) in nats: :math:`\frac1N \sum_n -\log p_{n, y_n}`.

    Equals ``crossentropy.cross_entropy`` of the logits and scikit-learn's
    ``log_loss(y, p, labels=range(C))`` of the probabilities.  Unlike
    scikit-learn, probabilities are not clipped: a target given probability
    0 makes the loss ``inf``.  Divide by ``log(2)`` for bits.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    >>> m = metrics.LogLoss().update(p, np.array([0, 2]), from_="probs")
    >>> round(m.compute(), 4)                 # (-log 0.7 - log 0.8) / 2
    0.2899
    """

    def _values(self, batch: Predictions) -> np.ndarray:
        return batch.nll


class Perplexity(LogLoss):
    r"""Perplexity: :math:`e^{\text{log loss}}`, the exponential of the mean log loss.

    The effective number of equally likely classes the model hesitates between
    (C for uniform predictions, 1 for certain and right ones).  ``inf`` when
    the log loss exceeds about 709.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> uniform = np.zeros((3, 4))                # every class equally likely
    >>> metrics.Perplexity().update(uniform, np.array([0, 1, 3])).compute()
    4.0
    """

    def _compute(self) -> float:
        mean = super()._compute()
        return math.exp(mean) if mean < 709.78 else math.inf


class Accuracy(Metric):
    """The fraction of rows whose highest score is the target's (the first class on ties).

    Equals scikit-learn's ``accuracy_score(y, input.argmax(axis))``.  The count of
    right rows is :attr:`correct`.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [1.0, 1.0, 3.0]])
    >>> metrics.Accuracy().update(logits, np.array([0, 1, 0])).compute()    # 2 of 3
    0.6666666666666666
    """

    def reset(self) -> None:
        super().reset()
        self.correct = 0

    def _add(self, batch: Predictions) -> None:
        self.correct += int(np.count_nonzero(batch.correct))

    def _merge(self, other: Any) -> None:
        self.correct += other.correct

    def _compute(self) -> float:
        return self.correct / self.rows


class TopKAccuracy(Metric):
    """The fraction of rows whose target is among the ``k`` highest scores.

    A row counts when fewer than ``k`` classes score strictly higher than its
    target, so ties count in the target's favour.  Without ties it equals
    scikit-learn's ``top_k_accuracy_score(y, input, k=k, labels=range(C))``
    (which breaks ties by class order).

    Parameters
    ----------
    k : int, default 5
        At least 1, and at most the number of classes C (checked on each block:
        a ``ValueError`` names k and C).

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [1.0, 2.0, 3.0]])
    >>> metrics.TopKAccuracy(k=2).update(logits, np.array([0, 2, 0])).compute()
    0.3333333333333333
    """

    _option_names = ("k",)

    def __init__(self, k: int = 5) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self.k = int(k)
        super().__init__()

    def options(self) -> tuple:
        return (self.k,)

    def reset(self) -> None:
        super().reset()
        self.correct = 0

    def _add(self, batch: Predictions) -> None:
        if self.k > batch.n_classes:
            raise ValueError(
                f"k={self.k} is larger than the number of classes C={batch.n_classes}: "
                f"top-k accuracy needs k <= C"
            )
        self.correct += int(np.count_nonzero(batch.rank < self.k))

    def _merge(self, other: Any) -> None:
        self.correct += other.correct

    def _compute(self) -> float:
        return self.correct / self.rows


class BrierScore(_MeanOverRows):
    r"""Multiclass Brier score: :math:`\frac1N \sum_n \sum_c (p_{n,c} - [y_n = c])^2`, in [0, 2].

    The definition of scikit-learn's ``brier_score_loss(y, p, labels=range(C),
    scale_by_half=False)``, which is also its default for three or more
    classes; scikit-learn halves it for two classes (``scale_by_half="auto"``),
    this metric never does.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    >>> m = metrics.BrierScore().update(p, np.array([0, 2]), from_="probs")
    >>> round(m.compute(), 4)     # (0.3**2 + 0.2**2 + 0.1**2 + 0.1**2 + 0.1**2 + 0.2**2) / 2
    0.1
    """

    def _values(self, batch: Predictions) -> np.ndarray:
        return batch.brier


class MeanEntropy(_MeanOverRows):
    r"""Mean predictive entropy in nats: :math:`\frac1N \sum_n H(p_n)`; needs no target.

    How unsure the model is on average, whatever the right answer: 0 for
    one-hot predictions, :math:`\log C` for uniform ones.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.5, 0.5], [1.0, 0.0]])
    >>> round(metrics.MeanEntropy().update(p, from_="probs").compute(), 4)   # (log 2 + 0) / 2
    0.3466
    """

    needs_target = False

    def _values(self, batch: Predictions) -> np.ndarray:
        return batch.entropy


@dataclass(frozen=True)
class Reliability:
    """The data of a reliability diagram: per confidence bin, rows, confidence, accuracy.

    Attributes
    ----------
    edges : ndarray, shape (B + 1,)
        Bin ``b`` holds the rows whose confidence lies in ``(edges[b], edges[b+1]]``
        (the first bin also holds confidence 0).
    count : ndarray of int64, shape (B,)
        Rows per bin.
    confidence : ndarray, shape (B,)
        Mean confidence (highest probability) of each bin; NaN for an empty bin.
    accuracy : ndarray, shape (B,)
        Fraction of right rows of each bin; NaN for an empty bin.
    ece : float
        The expected calibration error, ``sum_b count_b / N * |accuracy_b - confidence_b|``.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    ece: float


class ExpectedCalibrationError(Metric):
    r"""Expected calibration error over ``bins`` equal-width confidence bins (Guo et al., 2017).

    A row's confidence is its highest probability and it is right when that
    class is its target (as :class:`Accuracy`).  With :math:`n_b` rows in bin
    :math:`(\frac{b}{B}, \frac{b+1}{B}]`, of mean confidence
    :math:`\text{conf}_b` and accuracy :math:`\text{acc}_b`:

    .. math:: \text{ECE} = \sum_b \frac{n_b}{N} |\text{acc}_b - \text{conf}_b|

    :meth:`reliability` gives the per-bin data behind it.

    Parameters
    ----------
    bins : int, default 15

    Examples
    --------
    Two rows of confidence 0.9 (bin (0.8, 1]), one right: accuracy 0.5; one row
    of confidence 0.6, right:

    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    >>> m = metrics.ExpectedCalibrationError(bins=5).update(p, np.array([0, 0, 0]), from_="probs")
    >>> round(m.compute(), 4)            # 2/3 * |0.5 - 0.9| + 1/3 * |1 - 0.6|
    0.4
    >>> m.reliability().count
    array([0, 0, 1, 0, 2])
    """

    _option_names = ("bins",)

    def __init__(self, bins: int = 15) -> None:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
        self.bins = int(bins)
        super().__init__()

    def options(self) -> tuple:
        return (self.bins,)

    def reset(self) -> None:
        super().reset()
        self.count = np.zeros(self.bins, dtype=np.int64)
        self.confidence_sum = np.zeros(self.bins)
        self.correct = np.zeros(self.bins, dtype=np.int64)

    def _add(self, batch: Predictions) -> None:
        conf, hit = batch.confidence, batch.correct
        b = np.clip(np.ceil(conf * self.bins).astype(np.int64) - 1, 0, self.bins - 1)
        self.count += np.bincount(b, minlength=self.bins)
        self.confidence_sum += np.bincount(b, weights=conf, minlength=self.bins)
        self.correct += np.bincount(b[hit], minlength=self.bins)

    def _merge(self, other: Any) -> None:
        self.count += other.count
        self.confidence_sum += other.confidence_sum
        self.correct += other.correct

    def _compute(self) -> float:
        return float(np.abs(self.correct - self.confidence_sum).sum() / self.rows)

    def reliability(self) -> Reliability:
        """The reliability-diagram data of the rows added (see :class:`Reliability`)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = self.confidence_sum / self.count
            accuracy = self.correct / self.count
        return Reliability(
            np.linspace(0.0, 1.0, self.bins + 1),
            self.count.copy(),
            confidence,
            accuracy,
            self.compute(),
        )


class PerClass(Metric):
    """Per true class: the row count, the mean log loss and the accuracy.

    :meth:`compute` returns ``{"count": (C,) int64, "log_loss": (C,), "accuracy": (C,)}``
    with NaN for classes that no row has as target.  Blocks must agree on C.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> p = np.array([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    >>> r = metrics.PerClass().update(p, np.array([0, 0, 1]), from_="probs").compute()
    >>> r["count"], r["accuracy"]
    (array([2, 1]), array([0.5, 1. ]))
    """

    def reset(self) -> None:
        super().reset()
        self.n_classes: int | None = None
        self.count = self.loss_sum = self.correct = np.zeros(0)

    def _start(self, n_classes: int) -> None:
        if self.n_classes is None:
            self.n_classes = n_classes
            self.count = np.zeros(n_classes, dtype=np.int64)
            self.loss_sum = np.zeros(n_classes)
            self.correct = np.zeros(n_classes, dtype=np.int64)
        elif n_classes != self.n_classes:
            raise ValueError(f"PerClass: a block of {n_classes} classes after {self.n_classes}")

    def _add(self, batch: Predictions) -> None:
        self._start(batch.n_classes)
        y, C = batch.labels[batch.keep], batch.n_classes
        self.count += np.bincount(y, minlength=C)
        self.loss_sum += np.bincount(y, weights=batch.nll, minlength=C)
        self.correct += np.bincount(y[batch.correct], minlength=C)

    def _merge(self, other: Any) -> None:
        if other.n_classes is not None:
            self._start(other.n_classes)
            self.count += other.count
            self.loss_sum += other.loss_sum
            self.correct += other.correct

    def _compute(self) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "count": self.count.copy(),
                "log_loss": self.loss_sum / self.count,
                "accuracy": self.correct / self.count,
            }
