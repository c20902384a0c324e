"""Metrics of a language model straight from its hidden states and output layer.

:func:`update_from_hidden` multiplies the hidden states by the output layer a
block of tokens at a time and hands each block of logits to the accumulators,
so that perplexity, accuracy, calibration or entropy over a corpus need
neither a logits file nor the ``(tokens, vocabulary)`` logits in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import array_api_compat
import numpy as np

from .._core.errors import DTypeError
from .._core.namespace import namespace
from .accumulators import Metric
from .predictions import Predictions

__all__ = ["HIDDEN_BLOCK_ELEMENTS", "update_from_hidden"]

MetricsT = TypeVar("MetricsT", bound="Metric[Any] | Sequence[Metric[Any]]")

#: logits per block (rows x vocabulary), 16 MiB in float32: 32 tokens at V = 128000
HIDDEN_BLOCK_ELEMENTS = 1 << 22


def _floating(xp: Any, a: Any, name: str) -> None:
    if not xp.isdtype(a.dtype, "real floating"):
        raise DTypeError(f"{name} must hold real floating numbers, got dtype {a.dtype}")


def update_from_hidden(
    metrics: MetricsT,
    hidden: Any,
    head: Any,
    target: Any = None,
    *,
    bias: Any = None,
    where: Any = None,
    block_rows: int | None = None,
) -> MetricsT:
    r"""Add the predictions ``hidden @ head.T + bias`` to metrics, a block of tokens at a time.

    Parameters
    ----------
    metrics : Metric or sequence of Metric
        The accumulators (:class:`LogLoss`, :class:`Perplexity`,
        :class:`Accuracy`, ...), each updated with every block.
    hidden : array, floating, shape (N, D) or (..., D)
        Hidden states, one row of ``D`` features per token (NumPy, PyTorch,
        JAX or any Array API library; a memory-mapped ``.npy`` works).
    head : array, floating, shape (V, D)
        The output layer's weight (``lm_head.weight``).
    target : array of int, shape ``hidden.shape[:-1]``, optional
        The next token of each position, in ``[0, V)``.
    bias : array, shape (V,), optional, keyword-only
        The output layer's bias.
    where : array of bool, shape ``hidden.shape[:-1]``, optional, keyword-only
        The tokens to score (padding left out).
    block_rows : int, optional, keyword-only
        Tokens per block; default: as many as make ``2**22`` logits (32 at
        ``V = 128000``).  The results do not depend on it beyond rounding.

    Returns
    -------
    Metric or list of Metric
        ``metrics``, updated (call ``compute()`` on them).

    Raises
    ------
    ValueError
        Shapes that do not fit (the message names them), a bad ``block_rows``,
        and what :class:`Predictions` raises for a block.
    crossentropy.DTypeError, crossentropy.TargetIndexError
        Integer ``hidden`` or ``head``; as :class:`Predictions` for targets.

    See Also
    --------
    Predictions : one block of scores, prepared for any number of metrics.
    crossentropy.linear_cross_entropy_stats : the loss of a training step with
        per-token log-probabilities, entropies and argmax, from the same inputs.

    Notes
    -----
    Each block's logits :math:`y = h W^\top + b` (``block_rows`` by ``V``) are
    made by one matrix product in the inputs' library and precision, scored by
    :class:`Predictions` and dropped; the accumulators keep float64 sums, so
    the result is the metrics of the whole ``(N, V)`` logits up to rounding.
    PyTorch and Hugging Face evaluation loops instead keep the logits of a
    batch (``model(...).logits``) and compute ``F.cross_entropy`` on them.

    Examples
    --------
    Two tokens, a vocabulary of three, an identity head: the logits are the
    hidden states themselves, and the metrics those of the logits:

    >>> import numpy as np
    >>> from crossentropy import metrics
    >>> h = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
    >>> y = np.array([0, 1])
    >>> loss, acc = metrics.update_from_hidden(
    ...     [metrics.LogLoss(), metrics.Accuracy()], h, np.eye(3), y, block_rows=1)
    >>> round(loss.compute(), 4), acc.compute()         # (0.4170 + 0.2200) / 2
    (0.3185, 1.0)
    >>> round(metrics.log_loss(h, y), 4)
    0.3185
    """
    accumulators = [metrics] if isinstance(metrics, Metric) else list(metrics)
    xp, (hidden, head, bias) = namespace(hidden, head, bias)
    _floating(xp, hidden, "hidden")
    _floating(xp, head, "head")
    if head.ndim != 2 or hidden.ndim < 1 or hidden.shape[-1] != head.shape[1]:
        raise ValueError(
            f"hidden has shape {tuple(hidden.shape)} and head {tuple(head.shape)}: head must "
            f"be (V, D) with D = hidden.shape[-1]"
        )
    if bias is not None and tuple(bias.shape) != (head.shape[0],):
        raise ValueError(f"bias must have shape ({head.shape[0]},), got {tuple(bias.shape)}")
    batch = tuple(hidden.shape[:-1])
    for name, a in (("target", target), ("where", where)):
        if a is not None and tuple(getattr(a, "shape", np.shape(a))) != batch:
            raise ValueError(
                f"{name} has shape {tuple(np.shape(a))}, expected {batch} (hidden's shape "
                f"without its feature axis)"
            )
    if block_rows is not None and (isinstance(block_rows, bool) or int(block_rows) < 1):
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    rows = int(block_rows or max(1, HIDDEN_BLOCK_ELEMENTS // max(1, head.shape[0])))
    hidden = xp.reshape(hidden, (-1, head.shape[1]))
    flat = [None if a is None else _flat(a) for a in (target, where)]
    for start in range(0, hidden.shape[0], rows):
        stop = min(start + rows, hidden.shape[0])
        logits = xp.matmul(hidden[start:stop, ...], xp.permute_dims(head, (1, 0)))
        if bias is not None:
            logits = logits + bias
        t, w = (None if a is None else a[start:stop] for a in flat)
        block = Predictions(logits, t, where=w)
        for m in accumulators:
            m.add(block)
    return metrics


def _flat(a: Any) -> Any:
    """``a`` as a flat array of its own library (NumPy for lists)."""
    if not array_api_compat.is_array_api_obj(a):
        a = np.asarray(a)
    return array_api_compat.array_namespace(a).reshape(a, (-1,))
