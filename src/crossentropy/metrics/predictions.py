"""A block of predictions and targets, checked and prepared once for the metrics.

:class:`Predictions` reads the scores of any array library, checks the targets
and the rows, and computes each per-row quantity a metric asks for (the log
loss of the target, whether the top class is right, the target's rank, the
confidence, the Brier term, the entropy) once, with the input's library; only
one value per row moves to the host, as float64 NumPy.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import array_api_compat
import numpy as np

# The metrics sit above the public functions: they use those and the public error types.
from .._core.errors import DTypeError, TargetIndexError
from ..special import log_softmax, logsumexp

__all__ = ["FROM", "Predictions", "to_host"]

FROM = ("logits", "probs", "log_probs")
# a log-probability above this is a positive log-probability (a probability above 1)
_POSITIVE_LOG_PROB = 1e-6


def to_host(a: Any) -> np.ndarray:
    """A NumPy copy of ``a`` (floating values as float64), from any array library."""
    if array_api_compat.is_torch_array(a):
        a = a.detach().cpu()
        return (a.double() if a.is_floating_point() else a).numpy()
    if array_api_compat.is_numpy_array(a) or array_api_compat.is_jax_array(a):
        a = np.asarray(a)
    else:  # array-api-strict and other CPU libraries speak DLPack
        try:
            a = np.from_dlpack(a)
        except (TypeError, ValueError, RuntimeError, BufferError):
            a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a


def _like(xp: Any, ref: Any, a: Any) -> Any:
    """``a`` as an array of ``ref``'s library and device (unchanged if it already is)."""
    if array_api_compat.is_array_api_obj(a) and array_api_compat.array_namespace(a) is xp:
        return a
    host = to_host(a) if array_api_compat.is_array_api_obj(a) else np.asarray(a)
    return xp.asarray(host, device=array_api_compat.device(ref))


def _rows_of(input: Any, axis: int) -> tuple[Any, Any, tuple[int, ...]]:
    """``(xp, (N, C) floating rows, the shape of one target)`` of ``input``."""
    if not array_api_compat.is_array_api_obj(input):
        input = np.asarray(input)
    xp = array_api_compat.array_namespace(input)
    if array_api_compat.is_torch_array(input):
        input = input.detach()
    if xp.isdtype(input.dtype, "integral"):
        info = xp.__array_namespace_info__()
        real = info.default_dtypes(device=array_api_compat.device(input))["real floating"]
        input = xp.astype(input, real)
    elif not xp.isdtype(input.dtype, "real floating"):
        raise DTypeError(f"input must hold real numbers, got dtype {input.dtype}")
    if input.ndim == 0:
        raise ValueError("input must have a class axis, got a scalar")
    if not -input.ndim <= axis < input.ndim:
        raise ValueError(f"axis={axis} is out of range for input of shape {tuple(input.shape)}")
    x = xp.moveaxis(input, axis, -1)
    C = x.shape[-1]
    if C < 1:
        raise ValueError(f"input has no classes along axis {axis} (shape {tuple(input.shape)})")
    return xp, xp.reshape(x, (-1, C)), tuple(x.shape[:-1])


def _check_labels(xp: Any, t: Any, keep: np.ndarray, C: int) -> np.ndarray:
    """``t`` (flat class indices in ``xp``) checked against ``[0, C)``; returned as int64."""
    if not xp.isdtype(t.dtype, "integral"):
        raise DTypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    bad = to_host((t < 0) | (t >= C)) & keep
    labels = to_host(t)
    if bad.any():
        i = int(np.argmax(bad))
        raise TargetIndexError(
            f"target: {int(bad.sum())} label(s) out of range for C = {C} classes (valid: "
            f"0..{C - 1}); first: {labels[i]} at row {i}"
        )
    return labels.astype(np.int64)


def _invalid_rows(xp: Any, x: Any, from_: str, tol: float) -> dict[str, Any]:
    """Rows that cannot be scored, by reason, as boolean ``(N,)`` arrays of ``xp``."""
    nan = xp.any(xp.isnan(x), axis=-1)
    ok = ~nan
    if from_ == "logits":
        pinf = xp.any(x == math.inf, axis=-1) & ok
        ninf = xp.all(x == -math.inf, axis=-1) & ok
        return {"NaN": nan, "+inf": pinf, "only -inf": ninf}
    if from_ == "probs":
        outside = xp.any((x < 0) | (x > 1), axis=-1) & ok
        off = (xp.abs(xp.sum(x, axis=-1) - 1) > tol) & ok & ~outside
        return {
            "NaN": nan,
            "entries outside [0, 1]": outside,
            "probabilities not summing to 1": off,
        }
    positive = xp.any(x > _POSITIVE_LOG_PROB, axis=-1) & ok
    usable = ok & ~positive
    lse = logsumexp(xp.where(usable[:, None], x, xp.zeros_like(x)), axis=-1)
    off = (xp.abs(lse) > tol) & usable
    return {"NaN": nan, "positive log-probabilities": positive,
            "log-probabilities not summing to 1": off}  # fmt: skip


class Predictions:
    r"""A block of predictions and targets, prepared once for any number of metrics.

    :meth:`Metric.update` builds one for each call; build it yourself to feed
    several metrics from one computation of the log-probabilities
    (``metric.add(batch)``).

    Parameters
    ----------
    input : array, shape (..., C, ...), floating
        Scores with a class axis; integer input is read as the library's
        default floating dtype.
    target : array of int, shape of ``input`` without the class axis, optional
        Class indices in ``[0, C)``.  Only :class:`MeanEntropy` works without.
    from_ : {"logits", "probs", "log_probs"}, default "logits"
        What ``input`` holds.
    axis : int, default -1
        The class axis of ``input``.
    where : array of bool, shape of ``target``, optional
        Rows to score; the others are left out (and not checked).
    sum_tolerance : float, default 1e-3
        How far from 1 a row of probabilities may sum (for log-probabilities,
        how far from 0 their logsumexp may lie).
    invalid : {"raise", "skip"}, default "raise"
        What rows that cannot be scored do: raise ``ValueError``, or be left
        out and listed in :attr:`invalid`.

    Attributes
    ----------
    n_classes : int
        C.
    rows : int
        The rows scored (those kept by ``where`` and valid).
    invalid : dict of str to ndarray of bool
        For each reason a row cannot be scored (``"NaN"``, ``"+inf"``, ``"only
        -inf"`` for logits; ``"entries outside [0, 1]"``, ``"probabilities not
        summing to 1"``; ``"positive log-probabilities"``, ``"log-probabilities
        not summing to 1"``), the mask of such rows among all ``N`` (flattened).
    keep : ndarray of bool, shape (N,)
        The rows scored; the per-row properties (:attr:`nll`, :attr:`correct`,
        ...) hold these rows only.
    labels : ndarray of int64, shape (N,), or None
        The targets, flattened, on the host.

    Examples
    --------
    One computation of the log-probabilities for two metrics, a NaN row left out:

    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> x = np.array([[2.0, 1.0, 0.1], [np.nan, 0.0, 0.0], [0.5, 2.5, 0.3]])
    >>> batch = metrics.Predictions(x, np.array([0, 1, 1]), invalid="skip")
    >>> batch.rows, batch.describe_invalid()
    (2, '1 row(s) with NaN (first: row 1)')
    >>> batch.nll.round(4)                      # -log softmax(x)[y] of rows 0 and 2
    array([0.417, 0.22 ])
    >>> metrics.Accuracy().add(batch).compute(), metrics.TopKAccuracy(1).add(batch).compute()
    (1.0, 1.0)

    Raises
    ------
    ValueError
        A bad ``from_``, ``axis`` or ``where`` shape; a row that cannot be scored
        (with ``invalid="raise"``), named with its reason and index.
    crossentropy.DTypeError
        Complex or boolean input, or a non-integer target.
    crossentropy.TargetIndexError
        A target outside ``[0, C)``.
    """

    def __init__(
        self,
        input: Any,
        target: Any = None,
        *,
        from_: str = "logits",
        axis: int = -1,
        where: Any = None,
        sum_tolerance: float = 1e-3,
        invalid: str = "raise",
    ) -> None:
        if from_ not in FROM:
            raise ValueError(f"from_ must be one of {FROM}, got {from_!r}")
        if invalid not in ("raise", "skip"):
            raise ValueError(f"invalid must be 'raise' or 'skip', got {invalid!r}")
        with np.errstate(all="ignore"):
            xp, x, shape = _rows_of(input, axis)
            self.xp, self.from_, self.n_classes = xp, from_, x.shape[1]
            keep = self._where(x, where, shape)
            self.target, self.labels = None, None
            if target is not None:
                t = _like(xp, x, target)
                if tuple(t.shape) != shape:
                    raise ValueError(
                        f"target has shape {tuple(t.shape)}, expected {shape}: the shape of "
                        f"input without its class axis (axis={axis})"
                    )
                self.target = xp.reshape(t, (-1,))
                self.labels = _check_labels(xp, self.target, keep, self.n_classes)
            self.invalid = {
                reason: to_host(mask) & keep
                for reason, mask in _invalid_rows(xp, x, from_, sum_tolerance).items()
            }
            bad = np.logical_or.reduce(list(self.invalid.values()))
            if invalid == "raise" and bad.any():
                raise ValueError(f"input ({from_}) has {self.describe_invalid()}")
            self.keep = keep & ~bad
            self.rows = int(self.keep.sum())
            if not self.keep.all():  # scores of 0 in place of rows left out keep the math finite
                x = xp.where(_like(xp, x, self.keep)[:, None], x, xp.zeros_like(x))
            self._x = x

    def _where(self, x: Any, where: Any, shape: tuple[int, ...]) -> np.ndarray:
        if where is None:
            return np.ones(x.shape[0], dtype=bool)
        w = to_host(where) if array_api_compat.is_array_api_obj(where) else np.asarray(where)
        if w.dtype != np.bool_ or w.shape != shape:
            raise ValueError(
                f"where must be a boolean array of shape {shape}, got {w.dtype} of shape {w.shape}"
            )
        return w.reshape(-1)

    def describe_invalid(self) -> str:
        """The rows that cannot be scored, e.g. ``"3 row(s) with NaN (first: row 6)"``."""
        return "; ".join(
            f"{int(mask.sum())} row(s) with {reason} (first: row {int(np.argmax(mask))})"
            for reason, mask in self.invalid.items()
            if mask.any()
        )

    def _kept(self, a: Any) -> np.ndarray:
        """The per-row values ``a`` (an array of ``xp``) of the rows scored, on the host."""
        h = to_host(a)
        return h if self.rows == h.shape[0] else h[self.keep]

    def require_target(self) -> Any:
        """The flat targets (an array of ``xp``); ``ValueError`` if none were given."""
        if self.target is None:
            raise ValueError("this metric needs a target: pass the class index of each row")
        return self.target

    # the per-row quantities, each computed once (in the input's library) when first asked

    @cached_property
    def log_probs(self) -> Any:
        """The ``(N, C)`` log-probabilities (rows left out hold those of zero scores)."""
        xp = self.xp
        with np.errstate(all="ignore"):
            if self.from_ == "logits":
                return log_softmax(self._x, axis=-1)
            return xp.log(self._x) if self.from_ == "probs" else self._x

    @cached_property
    def probs(self) -> Any:
        """The ``(N, C)`` probabilities."""
        return self._x if self.from_ == "probs" else self.xp.exp(self.log_probs)

    @cached_property
    def _onehot(self) -> Any:
        xp, t = self.xp, self.require_target()
        classes = xp.arange(self.n_classes, device=array_api_compat.device(self._x))
        return t[:, None] == classes[None, :]

    def _at_target(self, a: Any) -> Any:
        return self.xp.sum(self.xp.where(self._onehot, a, self.xp.zeros_like(a)), axis=-1)

    @cached_property
    def nll(self) -> np.ndarray:
        """``-log p[target]`` of each row scored."""
        return -self._kept(self._at_target(self.log_probs))

    @cached_property
    def correct(self) -> np.ndarray:
        """Whether each row's highest score (the first, on ties) is its target's."""
        return self._kept(self.xp.argmax(self._x, axis=-1) == self.require_target())

    @cached_property
    def rank(self) -> np.ndarray:
        """How many classes score strictly higher than the target (0 for a top-1 hit)."""
        above = self._x > self._at_target(self._x)[:, None]
        return self._kept(self.xp.sum(_as_int(self.xp, above), axis=-1))

    @cached_property
    def confidence(self) -> np.ndarray:
        """The highest probability of each row scored."""
        return self._kept(self.xp.max(self.probs, axis=-1))

    @cached_property
    def brier(self) -> np.ndarray:
        """``sum_c (p_c - onehot_c)^2`` of each row scored."""
        xp, p = self.xp, self.probs
        with np.errstate(all="ignore"):
            return self._kept(xp.sum((p - xp.astype(self._onehot, p.dtype)) ** 2, axis=-1))

    @cached_property
    def entropy(self) -> np.ndarray:
        """``H(p) = -sum_c p_c log p_c`` in nats of each row scored (``0 log 0 = 0``)."""
        xp, p, lp = self.xp, self.probs, self.log_probs
        with np.errstate(all="ignore"):
            plogp = xp.where(p > 0, p * lp, xp.zeros_like(p))
            return -self._kept(xp.sum(plogp, axis=-1))


def _as_int(xp: Any, mask: Any) -> Any:
    """A boolean array as int64 (for counting along an axis)."""
    return xp.astype(mask, xp.int64)
