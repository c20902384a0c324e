"""Argument checks with clear messages, in one place.

Every message names the argument, shows the offending value or shape, and says
what was expected, so that a user can fix the call without reading our code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .caller import warn_at_caller
from .device import assert_on_device, on_accelerator
from .errors import DTypeError, ProbabilitiesAsLogitsWarning, TargetIndexError
from .namespace import index_dtype, is_floating, is_integer, to_bool

__all__ = [
    "check_axis",
    "check_batch",
    "check_floating",
    "check_ignore_index",
    "check_in_unit_interval",
    "check_index_target",
    "check_integer_target",
    "check_label_smoothing",
    "check_same_shape",
    "check_vector",
    "check_z_loss_softcap",
    "class_axis",
    "counted_mask",
    "looks_like_probabilities",
    "warn_if_probabilities",
    "widen_unsigned",
]


def check_floating(xp: Any, x: Any, name: str) -> None:
    """Raise :class:`DTypeError` unless ``x`` has a real floating dtype."""
    if not is_floating(xp, x):
        raise DTypeError(
            f"{name} must have a floating-point dtype (float16, bfloat16, float32 "
            f"or float64), got {x.dtype}; convert it first, e.g. x.astype('float32')"
        )


def _is_int(value: Any) -> bool:
    """True for a Python or NumPy integer (``bool`` excluded, as PyTorch does)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_ignore_index(ignore_index: Any) -> int | None:
    """``ignore_index`` as a Python int (``None``: nothing ignored), or ``TypeError``.

    As in PyTorch a float is refused, even one with an integral value: a float
    compares inexactly with large class indices (``float(2**53) == 2**53 + 1``).
    """
    if ignore_index is None:
        return None
    if not _is_int(ignore_index):
        raise TypeError(
            f"ignore_index must be an integer (or None), got {ignore_index!r} of type "
            f"{type(ignore_index).__name__}"
        )
    return int(ignore_index)


def check_axis(axis: Any, allow_tuple: bool = False, allow_none: bool = False) -> None:
    """``TypeError`` unless ``axis`` is an integer (or a tuple of them, or ``None``, where allowed)."""
    if axis is None and allow_none:
        return
    if allow_tuple and isinstance(axis, tuple) and all(_is_int(a) for a in axis):
        return
    if not _is_int(axis):
        what = "an integer" + (" or a tuple of integers" if allow_tuple else "")
        what += " or None" if allow_none else ""
        raise TypeError(f"axis must be {what}, got {axis!r} of type {type(axis).__name__}")


def class_axis(ndim: int, axis: int | None, name: str = "input") -> int:
    """The non-negative class axis: ``axis`` if given, else PyTorch's (1 for
    batched input, 0 for unbatched ``(C,)`` input)."""
    check_axis(axis, allow_none=True)
    if ndim == 0:
        raise ValueError(f"{name} must have at least 1 dimension (C,) or (N, C, ...), got a scalar")
    if axis is None:
        return 1 if ndim >= 2 else 0
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for {name} with {ndim} dimension(s)")
    return axis % ndim


def check_vector(x: Any, length: int, name: str, what: str = "the number of classes C") -> None:
    """Raise unless ``x`` is 1-D with ``length`` entries (class weights)."""
    if x.ndim != 1 or x.shape[0] != length:
        raise ValueError(
            f"{name} must be a 1-D array of length {length} ({what}), got shape {tuple(x.shape)}"
        )


def check_batch(input_shape: tuple, target_shape: tuple, axis: int) -> None:
    """Raise unless ``target_shape`` is ``input_shape`` without the class axis."""
    expected = tuple(input_shape[:axis]) + tuple(input_shape[axis + 1 :])
    if tuple(target_shape) == expected:
        return
    if len(target_shape) >= 1 and len(expected) >= 1 and target_shape[0] != expected[0]:
        raise ValueError(
            f"Expected input batch size ({expected[0]}) to match target batch size "
            f"({target_shape[0]}): input has shape {tuple(input_shape)} (class axis {axis}), "
            f"target has shape {tuple(target_shape)}"
        )
    raise ValueError(
        f"target has shape {tuple(target_shape)}, expected {expected} for class indices "
        f"(input shape {tuple(input_shape)} without its class axis {axis}), or "
        f"{tuple(input_shape)} for class probabilities"
    )


def check_same_shape(input: Any, target: Any, fn: str) -> None:
    """Raise unless ``input`` and ``target`` have the same shape."""
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(
            f"{fn}: target shape {tuple(target.shape)} must equal input shape "
            f"{tuple(input.shape)} (no broadcasting: it would silently compute a wrong loss)"
        )


def check_integer_target(xp: Any, target: Any) -> None:
    """Raise :class:`DTypeError` unless ``target`` holds integers (class indices)."""
    if not is_integer(xp, target):
        raise DTypeError(
            f"target must hold integer class indices (any integer dtype), got dtype "
            f"{target.dtype} with shape {tuple(target.shape)}; for class probabilities "
            f"target must have the same shape as input"
        )


def counted_mask(xp: Any, target: Any, ignore_index: int | None) -> Any:
    """The boolean mask ``target != ignore_index`` of an integer target."""
    # compare only with values the dtype can hold (array-api-strict rejects -100 for uint8)
    info = xp.iinfo(target.dtype)
    if ignore_index is not None and info.min <= ignore_index <= info.max:
        return target != ignore_index
    return xp.ones_like(target, dtype=xp.bool)


_TORCH_UNSIGNED = ("torch.uint16", "torch.uint32", "torch.uint64")


def widen_unsigned(xp: Any, target: Any, ignore_index: int | None) -> tuple[Any, int | None]:
    """PyTorch's uint16/uint32/uint64 class indices (tensors it cannot compare) as
    int64, and the ``ignore_index`` that marks the same entries; other targets as they are.

    uint64 values beyond int64's range wrap to negative values, and so does an
    ``ignore_index`` there (the wrap keeps equal values equal); such a value
    that is not ``ignore_index`` is out of range and raises here, with its own value.
    """
    if str(target.dtype) not in _TORCH_UNSIGNED:
        return target, ignore_index
    t = xp.astype(target, xp.int64)
    if str(target.dtype) != "torch.uint64":
        return t, ignore_index
    original = ignore_index
    if ignore_index is not None and not 0 <= ignore_index < 1 << 64:
        ignore_index = None  # no uint64 value equals it
    elif ignore_index is not None and ignore_index >= 1 << 63:
        ignore_index -= 1 << 64
    wrapped = (t < 0) & counted_mask(xp, t, ignore_index)
    if to_bool(xp.any(wrapped)):
        raise TargetIndexError(
            f"Target {int(t[wrapped][0]) + (1 << 64)} is out of bounds: class indices must "
            f"lie in [0, C - 1] or equal ignore_index={original}"
        )
    return t, ignore_index


def check_index_target(xp: Any, target: Any, n_classes: int, ignore_index: int | None) -> Any:
    """Check a class-index target and return the mask of rows that count.

    ``ignore_index`` is removed before the range check, so ``-100`` never
    counts as out of range.  Returns the boolean mask ``target != ignore_index``.
    """
    check_integer_target(xp, target)
    info = xp.iinfo(target.dtype)
    valid = counted_mask(xp, target, ignore_index)
    too_big = target >= n_classes if n_classes <= info.max else xp.zeros_like(valid)
    bad = valid & ((target < 0) | too_big)
    if on_accelerator(target):  # checked on the device: no host synchronisation
        assert_on_device(
            ~xp.any(bad),
            f"Target out of bounds: class indices must lie in [0, {n_classes - 1}] for "
            f"C={n_classes} classes"
            + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else ""),
        )
        return valid
    if to_bool(xp.any(bad)):  # None inside jax.jit: the call makes such rows NaN
        first = target[bad][0]
        count = int(xp.sum(xp.astype(bad, index_dtype(xp))))
        if n_classes == 0:
            raise TargetIndexError(
                f"Target {int(first)} is out of bounds: input has C=0 classes: every target "
                f"must equal ignore_index={ignore_index} ({count} other value"
                f"{'s' if count > 1 else ''})"
            )
        raise TargetIndexError(
            f"Target {int(first)} is out of bounds: class indices must lie in "
            f"[0, {n_classes - 1}] for C={n_classes} classes"
            + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else "")
            + f" ({count} bad value{'s' if count > 1 else ''})"
        )
    return valid


def check_in_unit_interval(xp: Any, x: Any, name: str) -> None:
    """Raise unless every entry of ``x`` lies in [0, 1] (NaN counts as outside)."""
    outside = ~((x >= 0) & (x <= 1))
    if to_bool(xp.any(outside)):
        first = x[outside][0]
        raise ValueError(
            f"all elements of {name} should be between 0 and 1, found {float(first)!r}"
        )


def check_label_smoothing(label_smoothing: float) -> float:
    """Return ``label_smoothing`` as a float, or raise unless it is in [0, 1]."""
    value = float(label_smoothing)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"label_smoothing must be in [0.0, 1.0], got {label_smoothing!r}")
    return value


def check_z_loss_softcap(z_loss: float, softcap: float | None) -> tuple[float, float | None]:
    """Return ``(z_loss, softcap)`` as floats, or raise for a negative or NaN value."""
    z = float(z_loss)
    if not z >= 0:
        raise ValueError(f"z_loss must be >= 0, got {z_loss!r}")
    if softcap is None:
        return z, None
    c = float(softcap)
    if not c > 0 or math.isinf(c):
        raise ValueError(f"softcap must be a positive finite number or None, got {softcap!r}")
    return z, c


_PROBE_ROWS = 16


def looks_like_probabilities(xp: Any, input: Any, axis: int) -> bool | None:
    """True if the first rows of ``input`` along ``axis`` lie in [0, 1] and sum to 1.

    Only up to 16 rows are inspected, so the check costs nothing on large
    inputs.  A single class (C == 1) or an empty input is never flagged;
    ``None`` when the values cannot be read (inside ``jax.jit``) or not
    without synchronising the host (an accelerator tensor).
    """
    if input.ndim == 0 or input.shape[axis] < 2 or math.prod(input.shape) == 0:
        return False
    if on_accelerator(input):  # reading the values would synchronise the host
        return None
    rows = xp.moveaxis(input, axis, -1) if axis % input.ndim != input.ndim - 1 else input
    # a few leading rows, sliced before any reshape so that nothing large is copied
    head = tuple(slice(0, min(n, _PROBE_ROWS if i == 0 else 2)) for i, n in enumerate(rows.shape[:-1]))
    rows = xp.reshape(rows[head + (slice(None),)], (-1, input.shape[axis]))
    in_unit = xp.all((rows >= 0) & (rows <= 1))
    sums = xp.sum(rows, axis=-1)
    tol = 1e-3 if rows.dtype != xp.float64 else 1e-6
    return to_bool(in_unit & xp.all(xp.abs(sums - 1) <= tol))


def warn_if_probabilities(xp: Any, input: Any, axis: int, fn: str) -> None:
    """Warn if :func:`looks_like_probabilities` says so, at the caller's line."""
    if looks_like_probabilities(xp, input, axis):
        warn_at_caller(
            f"{fn}: every inspected row of input lies in [0, 1] and sums to 1, so input "
            f"looks like probabilities; {fn} expects raw logits (it applies log_softmax "
            f"itself). Pass the scores from before softmax, or use nll_loss on log-probabilities.",
            ProbabilitiesAsLogitsWarning,
        )
