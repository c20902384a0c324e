"""``where=`` masks of the softmax cross-entropy family: classes left out of the softmax.

A mask has ``input``'s shape (one flag per logit) or ``input``'s shape without
the class axis (one flag per row).  An excluded logit takes no part in the
softmax (it becomes ``-inf``: probability 0, gradient 0) and an excluded
probability-target entry is dropped; a row with no included class contributes
no loss, no gradient and no count to ``'mean'``.  This is optax's ``where=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .namespace import index_dtype, is_floating, namespace
from .validate import check_index_target, class_axis

__all__ = ["Masked", "apply_where"]


@dataclass
class Masked:
    """The masked call: ``input`` and ``target`` to compute on, and the masks.

    ``logits`` is the per-logit mask (``input``'s shape), ``rows`` the rows with
    at least one included class (``input``'s shape without the class axis).
    """

    xp: Any
    input: Any
    target: Any
    logits: Any
    rows: Any
    probs: bool
    ignore_index: int  # the value that marks skipped class-index rows

    def reduction(self, reduction: str) -> str:
        """The reduction to compute with: ``'sum'`` for a ``'mean'`` over
        probability-target rows, which :meth:`finish` divides by the counted rows."""
        return "sum" if self.probs and reduction == "mean" else reduction

    def finish(self, result: tuple[Any, dict], reduction: str) -> tuple[Any, dict]:
        """``(value, grads)`` of the masked call as the caller's: the mean over
        counted rows (NaN value and zero gradient if none), and zero gradient at
        excluded probability-target entries."""
        xp = self.xp
        value, grads = result
        if self.probs and reduction == "mean":
            n = xp.sum(xp.astype(self.rows, value.dtype))
            none = n == 0
            safe = xp.where(none, xp.ones_like(n), n)
            value = xp.where(none, xp.full_like(value, float("nan")), value / safe)
            grads = {k: xp.where(none, xp.zeros_like(g), g / xp.astype(safe, g.dtype))
                     for k, g in grads.items()}  # fmt: skip
        if "target" in grads:
            g = grads["target"]
            grads["target"] = xp.where(self.logits, g, xp.zeros_like(g))
        return value, grads


def _per_logit(xp: Any, where: Any, shape: tuple, axis: int) -> Any:
    """``where`` as a boolean mask of ``shape``, or ``ValueError`` naming both shapes."""
    if not (xp.isdtype(where.dtype, "bool") or xp.isdtype(where.dtype, "integral")):
        raise TypeError(f"where must be a boolean (or 0/1 integer) mask, got dtype {where.dtype}")
    where = xp.astype(where, xp.bool)
    rows = shape[:axis] + shape[axis + 1 :]
    if tuple(where.shape) == tuple(shape):
        return where
    if tuple(where.shape) == tuple(rows):
        return xp.broadcast_to(xp.expand_dims(where, axis=axis), shape)
    raise ValueError(
        f"where has shape {tuple(where.shape)}; expected input's shape {tuple(shape)} "
        f"(one flag per logit) or {tuple(rows)} (one flag per row, class axis {axis} removed)"
    )


def apply_where(
    input: Any,
    target: Any,
    where: Any,
    axis: int | None,
    ignore_index: int | None,
    label_smoothing: float = 0.0,
) -> Masked:
    """Mask ``input`` (excluded logits become ``-inf``) and ``target``.

    Class-index targets of rows with no included class become ``ignore_index``
    (the library's index dtype; -1 when it is ``None``), so that the loss skips them; probability targets are zeroed where
    excluded.  The class axis is PyTorch's (1, or 0 for ``(C,)`` input) unless
    ``axis`` is given.
    """
    if label_smoothing:
        raise ValueError(
            f"label_smoothing={label_smoothing!r} cannot be combined with where= (the "
            f"smoothing mass would fall on excluded classes); smooth the target instead"
        )
    xp, (input, target, where) = namespace(input, target, where)
    ax = class_axis(input.ndim, axis)
    mask = _per_logit(xp, where, tuple(input.shape), ax)
    rows = xp.any(mask, axis=ax)
    # rows with nothing included keep their logits (and are skipped), so that
    # no row is all -inf (which would give NaN gradients)
    keep = mask | xp.expand_dims(~rows, axis=ax)
    x = xp.where(keep, input, xp.full_like(input, -float("inf")))
    probs = tuple(target.shape) == tuple(input.shape) and is_floating(xp, target)
    if probs:
        t = xp.where(mask, target, xp.zeros_like(target))
    else:
        if ignore_index is None:  # skipped rows need a mark: -1, once no label is negative
            check_index_target(xp, target, input.shape[ax], None)
            ignore_index = -1
        t = xp.astype(target, index_dtype(xp))
        if tuple(t.shape) == tuple(rows.shape):  # other shapes: the loss says what is wrong
            t = xp.where(rows, t, xp.full_like(t, ignore_index))
    return Masked(xp, x, t, mask, rows, probs, ignore_index)
