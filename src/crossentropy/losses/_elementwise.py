"""Shared preparation for losses computed element by element (BCE, KL, MSE, hinge)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._namespace import namespace, restore, upcast
from .._reduction import REDUCTIONS, check_reduction, reduce, seed
from .._validate import check_floating, check_same_shape

__all__ = ["Pair", "broadcast_to_input", "finish", "prepare_pair"]


@dataclass
class Pair:
    """A validated ``(input, target)`` call in compute dtype."""

    xp: Any
    x: Any
    t: Any
    dtype: Any  # caller's input dtype
    reduction: str
    extras: list  # further optional arrays, upcast (None where absent)


def prepare_pair(
    fn: str,
    input: Any,
    target: Any,
    reduction: str,
    *extras: Any,
    allowed: tuple[str, ...] = REDUCTIONS,
    float_target: bool = True,
) -> Pair:
    """Validate ``input``/``target`` (same shape, floating) and optional arrays."""
    xp, (input, target, *extras) = namespace(input, target, *extras)
    check_floating(xp, input, "input")
    if float_target:
        check_floating(xp, target, "target")
    check_same_shape(input, target, fn)
    reduction = check_reduction(reduction, allowed)
    x = upcast(xp, input)
    t = xp.astype(target, x.dtype)
    ex = [None if e is None else xp.astype(e, x.dtype) for e in extras]
    return Pair(xp, x, t, input.dtype, reduction, ex)


def broadcast_to_input(xp: Any, w: Any, shape: tuple, name: str) -> Any:
    """``w`` broadcast to ``shape``, or a ``ValueError`` naming both shapes."""
    try:
        return xp.broadcast_to(w, shape)
    except Exception:
        raise ValueError(
            f"{name} of shape {tuple(w.shape)} cannot be broadcast to input shape {tuple(shape)}"
        ) from None


def finish(
    p: Pair, loss: Any, wrt: tuple[str, ...], local: dict, denominator: Any = None
) -> tuple[Any, dict]:
    """Reduce ``loss`` and scale each local gradient in ``local`` (name -> thunk)."""
    xp = p.xp
    value = restore(xp, reduce(xp, loss, p.reduction, denominator), p.dtype)
    if not wrt:
        return value, {}
    s = seed(xp, loss, p.reduction, denominator)
    return value, {name: restore(xp, s * local[name](), p.dtype) for name in wrt}
