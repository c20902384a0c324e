"""The one place where ``reduction='none' | 'mean' | 'sum'`` happens.

A loss computes its unreduced per-element values, then calls :func:`reduce`
for the forward value and :func:`grad_scale` for the backward: the factor by which
each element's local gradient is multiplied so that the result is the gradient
of the reduced loss (of the sum for ``'none'``).

``denominator`` is what ``'mean'`` divides by: the number of elements by
default, the sum of the class weights of the counted targets for weighted
losses (PyTorch's weighted mean), the batch size for ``'batchmean'``.  A zero
denominator (empty batch, every target ignored) gives a NaN mean and a zero
gradient, as in PyTorch.

``normalizer`` (:func:`check_normalizer`) is a denominator the caller gives
for ``'mean'`` in place of the default one: the count of tokens of a whole
optimisation step, so that the losses of its micro-batches add up to the
step's mean.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import array_api_compat
import numpy as np

from .namespace import device

__all__ = [
    "REDUCTIONS",
    "KLReduction",
    "Reduction",
    "check_normalizer",
    "check_reduction",
    "grad_scale",
    "reduce",
]

Reduction = Literal["none", "mean", "sum"]
"""The ``reduction=`` of every loss, for type checkers (``REDUCTIONS`` at run time)."""

KLReduction = Literal["none", "mean", "batchmean", "sum"]
"""``kl_div``'s and ``generalized_kl_div``'s, which also divide by the batch size."""

REDUCTIONS: tuple[str, ...] = get_args(Reduction)


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    """Return ``reduction`` or raise ``ValueError`` naming the valid options."""
    if reduction not in allowed:
        options = ", ".join(repr(r) for r in allowed)
        raise ValueError(f"reduction must be one of {options}, got {reduction!r}")
    return reduction


def check_normalizer(normalizer: Any, reduction: str) -> Any:
    """``normalizer`` as a positive float (``None`` stays ``None``), or ``ValueError``.

    It applies to ``reduction='mean'`` only.  A 0-d array whose value cannot be
    read (traced inside ``jax.jit``) is returned as it is, unchecked.
    """
    if normalizer is None:
        return None
    if reduction != "mean":
        raise ValueError(
            f"normalizer={normalizer!r} needs reduction='mean' (it replaces what the mean "
            f"divides by), got reduction={reduction!r}"
        )
    value = None
    shape = getattr(normalizer, "shape", ())
    if not isinstance(normalizer, (bool, str)) and tuple(shape) == ():
        try:
            value = float(normalizer)
        except (TypeError, ValueError):
            if array_api_compat.is_jax_array(normalizer):  # traced: its value is not known yet
                return normalizer
    if value is None or not 0 < value < float("inf"):
        raise ValueError(
            f"normalizer must be a positive finite number (the count, or summed weight, of "
            f"the tokens the mean is over), got {normalizer!r}"
        )
    return value


def _denominator(xp: Any, loss: Any, denominator: Any) -> Any:
    if denominator is None:
        size = 1
        for s in loss.shape:
            size *= s
        return xp.asarray(float(size), dtype=loss.dtype, device=device(loss))
    if isinstance(denominator, (int, float)):
        return xp.asarray(float(denominator), dtype=loss.dtype, device=device(loss))
    return xp.astype(denominator, loss.dtype)


def reduce(xp: Any, loss: Any, reduction: str, denominator: Any = None) -> Any:
    """Reduce the per-element ``loss``.

    ``'none'`` returns ``loss``; ``'sum'`` its sum; ``'mean'`` its sum divided
    by ``denominator`` (default: the number of elements), NaN when that is 0.
    """
    if reduction == "none":
        return loss
    total = xp.sum(loss)
    if isinstance(total, np.generic):  # NumPy's sum: a 0-d array, as every other result
        total = np.asarray(total)
    if reduction == "sum":
        return total
    denom = _denominator(xp, loss, denominator)
    zero = denom == 0
    safe = xp.where(zero, xp.ones_like(denom), denom)
    return xp.where(zero, xp.full_like(total, float("nan")), total / safe)


def grad_scale(xp: Any, loss: Any, reduction: str, denominator: Any = None) -> Any:
    """d(reduced loss)/d(loss element): 1 for ``'sum'`` and ``'none'``,
    ``1/denominator`` for ``'mean'`` (0 when the denominator is 0)."""
    one = xp.asarray(1.0, dtype=loss.dtype, device=device(loss))
    if reduction != "mean":
        return one
    denom = _denominator(xp, loss, denominator)
    zero = denom == 0
    safe = xp.where(zero, xp.ones_like(denom), denom)
    return xp.where(zero, xp.zeros_like(denom), one / safe)
