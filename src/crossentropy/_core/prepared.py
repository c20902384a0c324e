"""Validated calls: one type and one ``prepare_*`` function per kind of call.

* :class:`ClassCall` / :func:`prepare_class_call` -- a class axis and a target of
  class indices or probabilities (``cross_entropy``, ``nll_loss``,
  ``multi_margin_loss``, the vocabulary-parallel loss);
* :class:`PairCall` / :func:`prepare_pair_call` -- an ``input`` and a
  same-shaped ``target`` computed element by element (BCE, KL, MSE, hinge);
* :func:`prepare_scores` -- one floating array (softmax and friends).

A prepared call holds the arrays in their compute dtype (float32 for half
precision), the caller's dtype to restore at the end, and the checked options;
everything after it trusts it.  ``linear_cross_entropy`` has its own call type
in :mod:`crossentropy.linear`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any

from .namespace import index_dtype, is_floating, namespace, restore, upcast
from .reduction import REDUCTIONS, check_reduction, grad_scale, reduce
from .shard import VocabShard
from .validate import (
    check_batch,
    check_floating,
    check_ignore_index,
    check_index_target,
    check_integer_target,
    check_same_shape,
    check_vector,
    class_axis,
    counted_mask,
    widen_unsigned,
)

__all__ = [
    "ClassCall",
    "PairCall",
    "broadcast_to_input",
    "finish_pair",
    "prepare_class_call",
    "prepare_pair_call",
    "prepare_scores",
    "rebind",
    "to_caller_layout",
]


# -- a class axis -------------------------------------------------------------------


@dataclass
class ClassCall:
    """A validated call with a class axis, moved last, in the compute dtype.

    The per-row arrays of class-index targets (:attr:`valid`, :attr:`index`,
    :attr:`w_t`) are made on first use: the fused kernel reads the caller's
    ``target`` itself, so its calls allocate none of them.
    """

    xp: Any
    x: Any  # (..., C) view of input, compute dtype
    axis: int  # class axis of the caller's input
    dtype: Any  # caller's input dtype
    n_classes: int  # C of this input (a shard's width when sharded)
    weight: Any  # (C,) compute dtype, or None
    reduction: str
    target: Any  # (...) the caller's class indices, checked; or (..., C) probabilities
    probs: bool  # probability targets
    ignore_index: int | None = None
    class_weight: Any = None  # weight over every class (the whole vocabulary if sharded)
    n_total: int = 0  # classes the indices refer to (the whole vocabulary if sharded)

    @functools.cached_property
    def valid(self) -> Any:
        """(...) bool mask of the counted targets (index targets only)."""
        return counted_mask(self.xp, self.target, self.ignore_index)

    @functools.cached_property
    def _indices(self) -> tuple[Any, Any]:
        """``(index, unseen)``: the counted class indices in the library's index
        dtype (0 elsewhere), and the mask of counted indices outside ``[0, C)``.

        The range check raises on such an index, except where it cannot read
        the values (inside ``jax.jit``): there the row's weight becomes NaN, so
        that its loss and gradient, and any reduction over it, are NaN (a wrong
        class is never read, and a negative index never wraps around)."""
        xp, t = self.xp, self.target
        dtype = index_dtype(xp)
        t = xp.astype(t, dtype)
        inside = (t >= 0) & (t < (self.n_total or self.n_classes))
        keep = self.valid & inside
        return xp.where(keep, t, xp.zeros_like(t)), self.valid & ~inside

    @property
    def index(self) -> Any:
        """(...) class indices (the library's index dtype), 0 where not counted."""
        return self._indices[0]

    @functools.cached_property
    def w_t(self) -> Any:
        """(...) weight of each counted target, 0 where ignored, NaN where out of
        range (index targets only)."""
        xp = self.xp
        index, unseen = self._indices
        if self.class_weight is None:
            w_t = xp.astype(self.valid, self.x.dtype)
        else:
            w_t = xp.take(self.class_weight, xp.reshape(index, (-1,)), axis=0)
            w_t = xp.reshape(w_t, index.shape)
            w_t = xp.where(self.valid, w_t, xp.zeros_like(w_t))
        return xp.where(unseen, xp.full_like(w_t, float("nan")), w_t)


def _class_last(xp: Any, a: Any, axis: int) -> Any:
    return xp.moveaxis(a, axis, -1) if axis != a.ndim - 1 else a


def prepare_class_call(
    input: Any,
    target: Any,
    weight: Any = None,
    *,
    reduction: str,
    ignore_index: int | None = None,
    axis: int | None = None,
    probabilities: bool = False,
    shard: VocabShard | None = None,
) -> ClassCall:
    """Validate a call with a class axis and bring it to the class-last layout.

    ``probabilities`` allows a floating target of ``input``'s shape (class
    probabilities); otherwise the target must hold class indices.  With
    ``shard``, ``input`` holds the classes ``[shard.offset, shard.offset + C_r)``
    of ``shard.n_classes``: targets and ``weight`` refer to the whole
    vocabulary, and the call's ``weight`` is the shard's slice of it.
    """
    xp, (input, target, weight) = namespace(
        input, target, weight, names=("input", "target", "weight"), required=2
    )
    check_floating(xp, input, "input")
    reduction = check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    ax = class_axis(input.ndim, axis)
    n_classes = input.shape[ax]
    n_total = n_classes if shard is None else shard.n_classes
    x = upcast(xp, _class_last(xp, input, ax))
    if weight is not None:
        check_floating(xp, weight, "weight")
        check_vector(weight, n_total, "weight")
        weight = xp.astype(weight, x.dtype)

    if probabilities and tuple(target.shape) == tuple(input.shape) and is_floating(xp, target):
        t = xp.astype(_class_last(xp, target, ax), x.dtype, copy=False)  # no copy if same dtype
        return ClassCall(xp, x, ax, input.dtype, n_classes, weight, reduction, t, True)

    check_integer_target(xp, target)  # a float target of another shape: say so first
    check_batch(tuple(input.shape), tuple(target.shape), ax)
    target, ignore_index = widen_unsigned(xp, target, ignore_index)
    check_index_target(xp, target, n_total, ignore_index)
    class_weight = weight
    if shard is not None and weight is not None:
        weight = weight[shard.offset : shard.offset + n_classes]
    return ClassCall(
        xp, x, ax, input.dtype, n_classes, weight, reduction, target, False,
        ignore_index, class_weight, n_total,
    )  # fmt: skip


def rebind(call: ClassCall, input: Any, target: Any, weight: Any) -> ClassCall:
    """``call``, validated on other views of the same data (NumPy views of PyTorch
    CPU tensors), with the caller's own arrays put back, unvalidated again."""
    xp, (input, target, weight) = namespace(input, target, weight)
    x = upcast(xp, _class_last(xp, input, call.axis))
    if weight is not None:
        weight = xp.astype(weight, x.dtype)
    if call.probs:
        target = xp.astype(_class_last(xp, target, call.axis), x.dtype, copy=False)
    return replace(
        call, xp=xp, x=x, dtype=input.dtype, weight=weight, target=target, class_weight=weight
    )


def to_caller_layout(call: ClassCall, g: Any) -> Any:
    """A (..., C) gradient in the caller's layout (class axis back) and dtype."""
    xp = call.xp
    if call.axis != g.ndim - 1:
        g = xp.moveaxis(g, -1, call.axis)
    return restore(xp, g, call.dtype)


# -- element by element -------------------------------------------------------------


@dataclass
class PairCall:
    """A validated ``(input, target)`` call in the compute dtype."""

    xp: Any
    x: Any
    t: Any
    dtype: Any  # caller's input dtype
    reduction: str
    extras: list  # further optional arrays, upcast (None where absent)


def prepare_pair_call(
    fn: str,
    input: Any,
    target: Any,
    reduction: str,
    *extras: Any,
    allowed: tuple[str, ...] = REDUCTIONS,
    float_target: bool = True,
    extra_names: tuple[str, ...] = ("weight", "pos_weight"),
) -> PairCall:
    """Validate ``input``/``target`` (same shape, floating) and optional arrays
    (named ``extra_names`` in messages)."""
    names = ("input", "target", *extra_names)
    xp, (input, target, *extras) = namespace(input, target, *extras, names=names, required=2)
    check_floating(xp, input, "input")
    if float_target:
        check_floating(xp, target, "target")
    check_same_shape(input, target, fn)
    reduction = check_reduction(reduction, allowed)
    x = upcast(xp, input)
    t = xp.astype(target, x.dtype)
    ex = [None if e is None else xp.astype(e, x.dtype) for e in extras]
    return PairCall(xp, x, t, input.dtype, reduction, ex)


def broadcast_to_input(xp: Any, w: Any, shape: tuple, name: str) -> Any:
    """``w`` broadcast to ``shape``, or a ``ValueError`` naming both shapes."""
    try:
        return xp.broadcast_to(w, shape)
    except Exception:
        raise ValueError(
            f"{name} of shape {tuple(w.shape)} cannot be broadcast to input shape {tuple(shape)}"
        ) from None


def finish_pair(
    p: PairCall,
    loss: Any,
    wrt: tuple[str, ...],
    local: dict,
    denominator: Any = None,
    cotangent: Any = None,
) -> tuple[Any, dict]:
    """Reduce ``loss`` and scale each local gradient in ``local`` (name -> thunk)
    by the reduction's factor and the ``cotangent`` of the value (if given)."""
    xp = p.xp
    value = restore(xp, reduce(xp, loss, p.reduction, denominator), p.dtype)
    if not wrt:
        return value, {}
    s = grad_scale(xp, loss, p.reduction, denominator)
    if cotangent is not None:
        s = s * xp.astype(cotangent, loss.dtype)
    return value, {name: restore(xp, s * local[name](), p.dtype) for name in wrt}


# -- one array ----------------------------------------------------------------------


def prepare_scores(x: Any, name: str = "x") -> tuple[Any, Any]:
    """``(xp, x)`` for a floating array of any shape (0-d included)."""
    xp, (x,) = namespace(x, names=(name,), required=1)
    check_floating(xp, x, name)
    return xp, x
