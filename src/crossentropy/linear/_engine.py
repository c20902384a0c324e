"""The chunk engine of the fused linear losses: chunks of rows, their gradients, the reduction.

The counted rows are taken a chunk at a time; the call's *objective*
(:class:`._softmax.Softmax` for ``linear_cross_entropy``,
:class:`._divergence.Divergence` for ``linear_distillation_loss``) makes each
chunk's logits blocks by GEMM into reused ``(chunk, V)`` buffers, reduces them
to per-row losses, and adds the blocks' gradient products into the
accumulators built here.  This module holds what does not depend on the
objective: the accumulators, the chunks, the rows put back in place and the
reduction.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from .._core.namespace import compute_dtype, index_dtype, restore
from .._core.reduction import grad_scale, reduce
from ._blocks import Grads, cast, spans

__all__ = ["cotangent_rows", "evaluate", "expand", "reduced_value"]


def _accumulators(c: Any, need: tuple, vocab_spans: list) -> Grads:
    """Zero gradient accumulators for what ``need`` asks: ``(input, linear_weight,
    linear_bias, target)``."""
    xp, ops = c.xp, c.ops
    n_rows, d = c.x.shape
    dev = array_api_compat.device(c.x)
    dx = dw = dw_full = db = dt = None
    if need[0]:
        dx = xp.zeros((n_rows, d), dtype=c.x.dtype, device=dev) if ops.mutable else []
    if need[1]:
        acc = compute_dtype(xp, c.w.dtype)
        dw_full = xp.zeros((c.w.shape[0], d), dtype=acc, device=dev)
        dw = [dw_full[j0:j1, :] for j0, j1 in vocab_spans]
    if need[2]:
        db = [xp.zeros((j1 - j0,), dtype=c.cdtype, device=dev) for j0, j1 in vocab_spans]
    if len(need) > 3 and need[3] and c.probs:
        dt = xp.zeros(tuple(c.t.shape), dtype=c.cdtype, device=dev) if ops.mutable else []
    return Grads(dx, dw, dw_full, db, dt)


def _put(c: Any, acc: Any, rows: Any, value: Any) -> Any:
    """Rows ``rows`` of an accumulator set to ``value`` (or collected)."""
    if value is None:
        return acc
    if c.ops.mutable:
        return c.ops.put_rows(acc, rows, value)
    acc.append(value)
    return acc


def cotangent_rows(c: Any, cotangent: Any) -> Any:
    """What each counted row's gradient is multiplied by for the gradient of
    ``sum(cotangent * value)``: the reduction's factor times ``cotangent`` (one
    per row for ``'none'``); ``None`` without a cotangent (``evaluate``'s default)."""
    if cotangent is None or not c.n_kept:
        return None
    xp = c.xp
    ct = xp.astype(cotangent, c.cdtype)
    if c.reduction == "none":
        rows = xp.reshape(ct, (-1,))
        return rows if c.kept is None else xp.take(rows, c.kept, axis=0)
    ones = xp.ones((c.n_kept,), dtype=c.cdtype, device=array_api_compat.device(c.x))
    return ones * (grad_scale(xp, ones, c.reduction, c.denom) * ct)


def evaluate(c: Any, need: tuple, row_scale: Any = None) -> tuple[Any, tuple, dict]:
    """Per-row losses of the counted rows, the gradients asked for in ``need``,
    and the objective's per-row statistics.

    ``need`` flags ``(input, linear_weight, linear_bias[, target])``.  Returns
    ``(loss_kept, (dinput, dlinear_weight, dlinear_bias, dtarget), extras)``,
    a gradient being ``None`` unless asked for and ``extras`` mapping names to
    ``(n_kept,)`` arrays.  The gradients are those of the reduced loss; with
    ``row_scale`` (shape ``(n_kept,)``) each row's gradient is scaled by it
    instead of by the reduction's factor.
    """
    xp, ops = c.xp, c.ops
    n_vocab = c.w.shape[0]
    dev = array_api_compat.device(c.x)
    vocab_spans = spans(n_vocab, c.block)
    grads = None
    if any(need):
        if c.n_kept and row_scale is None:
            row_scale = xp.full((c.n_kept,), 1.0, dtype=c.cdtype, device=dev)
            row_scale = row_scale * grad_scale(xp, row_scale, c.reduction, c.denom)
        grads = _accumulators(c, need, vocab_spans)

    n_buffers = c.objective.buffers if c.n_kept else 0
    flats = [ops.buffer(c.chunk * n_vocab, c.cdtype, dev) for _ in range(n_buffers)]
    losses: list[Any] = []
    extras: dict[str, list[Any]] = {}
    for s0, s1 in spans(c.n_kept, c.chunk):
        rows = slice(s0, s1) if c.kept is None else c.kept[s0:s1]
        scale_c = None if grads is None else row_scale[s0:s1]
        out = c.objective.chunk(c, rows, scale_c, vocab_spans, flats, grads)
        losses.append(out.loss)
        for name, value in out.extras.items():
            extras.setdefault(name, []).append(value)
        if grads is not None:
            grads.dx = _put(c, grads.dx, rows, out.dx)
            grads.dt = _put(c, grads.dt, rows, out.dt)
    del flats

    loss = xp.concat(losses) if losses else xp.zeros((0,), dtype=c.cdtype, device=dev)
    extras = {name: xp.concat(parts) for name, parts in extras.items()}
    if grads is None:
        return loss, (None, None, None, None), extras
    return loss, _finish(c, grads, need), extras


def _finish(c: Any, grads: Grads, need: tuple) -> tuple:
    """The accumulated gradients in the caller's shapes and dtypes."""
    xp, ops = c.xp, c.ops
    d = c.x.shape[1]
    dev = array_api_compat.device(c.x)
    dx = grads.dx
    if need[0] and not ops.mutable:
        kept_dx = xp.concat(dx) if dx else xp.zeros((0, d), dtype=c.cdtype, device=dev)
        dx = cast(xp, expand(c, kept_dx), c.x.dtype)
    if need[0] and c.shard is not None:  # each shard's part of the products
        dx = c.shard.all_sum_input_grad(dx)
    if need[0]:
        dx = xp.reshape(dx, c.in_shape)
    dw = None
    if need[1]:
        dw = grads.dw_full if ops.mutable else xp.concat(grads.dw, axis=0)
        dw = cast(xp, dw, c.w.dtype)
    db = cast(xp, xp.concat(grads.db), c.bias_dtype) if need[2] else None
    dt = grads.dt
    if dt is not None:
        dt = xp.concat(dt, axis=0) if not ops.mutable else dt
        dt = cast(xp, xp.reshape(dt, c.shape + (c.w.shape[0],)), c.t_dtype)
    return dx, dw, db, dt


def expand(c: Any, kept_rows: Any) -> Any:
    """Rows of the counted targets back to all ``N`` rows, zeros where ignored."""
    xp = c.xp
    if c.kept is None:
        return kept_rows
    dev = array_api_compat.device(c.x)
    pad = xp.zeros((1,) + tuple(kept_rows.shape[1:]), dtype=kept_rows.dtype, device=dev)
    table = xp.concat([kept_rows, pad], axis=0)
    # each row's position among the counted ones, or the zero row at the end
    position = xp.cumulative_sum(xp.astype(c.valid, index_dtype(xp))) - 1
    position = xp.where(c.valid, position, xp.full_like(position, c.n_kept))
    return xp.take(table, position, axis=0)


def reduced_value(c: Any, loss_kept: Any) -> Any:
    """The reduced loss (or the per-row losses, zeros where ignored), caller's dtype."""
    xp = c.xp
    if c.reduction == "none":
        value = xp.reshape(expand(c, loss_kept), c.shape)
    else:
        value = reduce(xp, loss_kept, c.reduction, c.denom)
    return restore(xp, value, c.out_dtype)
