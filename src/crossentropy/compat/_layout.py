"""What the compatibility layers share: clipped logs of probabilities and axis layouts.

No loss formula lives here: only the conversions the peers apply to their
inputs before their loss (clipping, normalising, flattening class axes).
"""

from __future__ import annotations

import math
from typing import Any

from .._core.namespace import namespace

__all__ = ["clipped_log", "flatten_axes", "log_of_normalized", "mean_over"]

KERAS_EPSILON = 1e-7  # keras.backend.epsilon()


def clipped_log(xp: Any, p: Any, eps: float) -> Any:
    """``log(clip(p, eps, 1 - eps))``: TensorFlow's and Keras's guard against ``log 0``."""
    return xp.log(xp.clip(p, eps, 1 - eps))


def log_of_normalized(xp: Any, p: Any, axis: int, eps: float = KERAS_EPSILON) -> Any:
    """Keras's probabilities: ``log(clip(p / sum(p), eps, 1 - eps))`` along ``axis``."""
    return clipped_log(xp, p / xp.sum(p, axis=axis, keepdims=True), eps)


def mean_over(xp: Any, values: Any, axis: int) -> Any:
    """The mean along ``axis`` (Keras's per-example mean over the last axis)."""
    return xp.mean(values, axis=axis)


def flatten_axes(arrays: list, axis: Any, ndim: int) -> tuple[list, int]:
    """Move the class axes ``axis`` (an int or a tuple) last and flatten them into one.

    ``arrays`` of the logits' rank are transformed; others (``None``, labels
    without the class axes) pass through.  Returns the arrays and the class
    axis to use (-1 after flattening a tuple, else ``axis`` itself).
    """
    if not isinstance(axis, tuple):
        return arrays, axis
    axes = tuple(a % ndim for a in axis)
    if len(set(axes)) != len(axes) or any(not -ndim <= a < ndim for a in axis):
        raise ValueError(f"axis={axis} must name distinct axes of an array with {ndim} dimensions")
    batch = tuple(i for i in range(ndim) if i not in axes)
    out = []
    for a in arrays:
        if a is None or a.ndim != ndim:
            out.append(a)
            continue
        xp, (a,) = namespace(a)
        a = xp.permute_dims(a, batch + axes)
        out.append(xp.reshape(a, tuple(a.shape[: len(batch)]) + (math.prod(a.shape[len(batch) :]),)))
    return out, -1
