"""The chunk engine of ``linear_cross_entropy``: logits blocks, row statistics, gradients.

The rows are taken a chunk at a time and the vocabulary a block at a time
inside each chunk.  Per chunk, one GEMM per block gives the logits block, a
streaming (online) logsumexp the row statistics; then each block becomes its
gradient with respect to the logits and goes into the two gradient products
(``dinput += G @ W`` and ``dW += G.T @ input``) while it is still in cache.
With a :class:`~crossentropy._core.shard.VocabShard` the row statistics are
combined over the processes sharing the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, overload

import array_api_compat
import numpy as np

from .._core.namespace import compute_dtype, index_dtype, restore, to_bool
from .._core.reduction import grad_scale, reduce
from .._core.shard import VocabShard
from ..kernels import blas
from ._arrayops import NumpyOps
from ._prepare import LinearCall

__all__ = ["evaluate", "reduced_value"]

# A plain chunk (no label smoothing, no softcap, no gradient filter) leaves
# its exponentiated blocks unnormalised and applies each row's scale after
# the gradient products (NumPy), if every row sum lies in [1/_FOLD_RANGE,
# _FOLD_RANGE]: an unscaled entry is at most the row sum, so neither product
# can overflow for any sensible weight, and a pass over the (chunk, V)
# buffer is saved.
_FOLD_RANGE = 2.0**64

def _cast(xp: Any, a: Any, dtype: Any) -> Any:
    return a if a.dtype == dtype else xp.astype(a, dtype)


def _spans(n: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(i + step, n)) for i in range(0, n, step)]


@dataclass
class _Grads:
    """Gradient accumulators (``None`` for those not wanted)."""

    dx: Any  # (N, D) caller's dtype (mutable libraries) or list of row chunks
    dw: list | None  # per vocabulary block, (block, D) views or arrays, accumulation dtype
    dw_full: Any  # the (V, D) array the views belong to (mutable libraries)
    db: Any  # (V,) accumulation dtype


@overload
def _logits_blocks(
    c: LinearCall, xt: Any, t_c: Any, spans: list, flat: Any, shifted: Literal[True]
) -> tuple: ...
@overload
def _logits_blocks(
    c: LinearCall, xt: Any, t_c: Any, spans: list, flat: Any, shifted: bool
) -> tuple | None: ...
def _logits_blocks(
    c: LinearCall, xt: Any, t_c: Any, spans: list, flat: Any, shifted: bool
) -> tuple | None:
    """The logits blocks of a chunk and their row statistics (first half of a chunk).

    Each block ``(block, rows)`` is made by one GEMM, then exponentiated in
    place (or, with ``softcap``, kept as capped logits).  Returns ``(blocks,
    shifts, m, s, yt, sw, w_seen)``: ``s`` is the sum of ``exp(y - m)`` per
    row, ``yt`` the target logit, ``sw`` the smoothing sum
    ``sum_v w_v (y_v - m)`` and ``w_seen`` the summed class weight.

    Unshifted (``shifted=False``), ``exp(y)`` is taken as it is, which saves
    two passes over each block; it is kept only if no row sum overflowed and
    every row's largest term is a normal number with ``1/eps`` of headroom,
    else ``None`` is returned and the chunk is redone shifted: each block by
    the running row max ``m`` (an online logsumexp; ``shifts`` holds the max
    each block was shifted by, to rescale it later).
    """
    xp, ops = c.xp, c.ops
    n, n_vocab = xt.shape[1], c.w.shape[0]
    cap, eps = c.softcap, c.eps
    store_exp = cap is None  # with softcap the capped logits stay, for tanh'
    zero = xp.zeros((n,), dtype=c.cdtype, device=array_api_compat.device(xt))
    blocks, shifts = [], []
    m = None if shifted else zero
    s = yt = sw = zero
    w_seen = 0.0
    for j0, j1 in spans:
        out = None if flat is None else xp.reshape(flat[n * j0 : n * j1], (j1 - j0, n))
        b = ops.mm(_cast(xp, c.w[j0:j1, :], c.gdtype), xt, out)
        if c.bias is not None:
            b += c.bias[j0:j1, None]
        if cap is not None:
            b /= cap
            b = ops.tanh_(b)
            b *= cap
        hit = (t_c >= j0) & (t_c < j1)
        col = xp.clip(t_c - j0, 0, j1 - j0 - 1)
        yt = xp.where(hit, xp.take_along_axis(b, col[None, :], axis=0)[0, :], yt)
        m_new = None
        if shifted:  # streaming logsumexp: running max m, sum s of exp(y - m)
            bm = xp.max(b, axis=0)
            if m is None:
                m_new = bm
            else:
                m_new = xp.maximum(m, bm)
                s = s * xp.where(m == m_new, zero + 1, xp.exp(m - m_new))
            b -= m_new[None, :]
        if eps > 0:
            if c.weight is None:
                part, w_block = xp.sum(b, axis=0), float(j1 - j0)
            else:
                w_b = c.weight[c.offset + j0 : c.offset + j1]
                part, w_block = xp.matmul(w_b, b), xp.sum(w_b)
            if shifted and m is not None:
                sw = sw + w_seen * (m - m_new)
            sw = sw + part
            w_seen = w_seen + w_block
        if store_exp:
            b, s = ops.exp_sum_(b, s)
        else:
            s = s + xp.sum(xp.exp(b), axis=0)
        blocks.append(b)
        shifts.append(m_new)
        if shifted:
            m = m_new
    if not shifted:
        info = xp.finfo(c.cdtype)
        floor = n_vocab * info.smallest_normal / info.eps
        if not to_bool(xp.all((s >= floor) & (s <= info.max))):  # also False for NaN
            return None
    return blocks, shifts, m, s, yt, sw, w_seen


def _combine(c: LinearCall, shard: VocabShard, stats: tuple) -> tuple:
    """The row statistics of the whole vocabulary from this shard's (shifted) ones.

    One all-reduce ``MAX`` of the running maxima, then one all-reduce ``SUM``
    of the sums of exponentials (rescaled to the common maximum), the target
    logits (0 where another shard has the target) and the smoothing sums.
    """
    xp = c.xp
    blocks, shifts, m, s, yt, sw, w_seen = stats
    big_m = shard.all_max(m)
    big_m = xp.where(xp.isfinite(big_m), big_m, xp.zeros_like(big_m))
    s = s * xp.exp(m - big_m)
    if c.eps > 0:  # sw = sum_v w_v (y_v - m): shift it to the common maximum
        sw = sw + w_seen * (m - big_m)
        s, yt, sw = shard.all_sum(s, yt, sw)
    else:
        s, yt = shard.all_sum(s, yt)
    return blocks, shifts, big_m, s, yt, sw, shard.weight_sum


def _chunk(
    c: LinearCall,
    x_c: Any,
    t_c: Any,
    scale_c: Any,
    spans: list,
    flat: Any,
    grads: _Grads | None,
) -> tuple[Any, Any]:
    """Per-row losses of one chunk of counted rows; accumulates the gradients.

    ``scale_c`` scales each row's gradient (the reduction's factor, or the
    upstream gradient of ``reduction='none'``).  Returns ``(loss, dx_chunk)``.

    Blocks are vocabulary-major, ``(block, rows)``: the logits GEMM is then
    ``W_block @ x.T``, a tall matrix times a thin one, which BLAS runs
    closer to its peak than ``x @ W_block.T`` for the thin chunks that the
    memory budget allows.
    """
    xp = c.xp
    n, n_vocab, eps = x_c.shape[0], c.n_classes, c.eps
    xg = _cast(xp, x_c, c.gdtype)
    xt = xg.T
    zero = xp.zeros((n,), dtype=c.cdtype, device=array_api_compat.device(x_c))
    wt = zero + 1 if c.weight is None else xp.take(c.weight, t_c, axis=0)

    o = c.offset
    if o:
        t_c = t_c - o  # the target's row in this shard of the vocabulary, if there
    if c.shard is None:
        stats = _logits_blocks(c, xt, t_c, spans, flat, shifted=False)
        if stats is None:  # logits beyond exp's range: shift by the running max
            stats = _logits_blocks(c, xt, t_c, spans, flat, shifted=True)
    else:  # every shard must take the same (shifted) path: they meet in _combine
        stats = _combine(c, c.shard, _logits_blocks(c, xt, t_c, spans, flat, shifted=True))
    blocks, maxes, m, s, yt, sw, w_seen = stats

    log_s = xp.log(s)
    lse = log_s + m
    loss = (1 - eps) * wt * (log_s - (yt - m))
    if eps > 0:
        loss = loss + (eps / n_vocab) * (w_seen * log_s - sw)
    if c.z_loss:
        loss = loss + c.z_loss * lse * lse
    if grads is None:
        return loss, None
    return loss, _chunk_gradients(c, x_c, xg, t_c, scale_c, spans, flat, grads, stats, wt, lse)


def _chunk_gradients(
    c: LinearCall,
    x_c: Any,
    xg: Any,
    t_c: Any,
    scale_c: Any,
    spans: list,
    flat: Any,
    grads: _Grads,
    stats: tuple,
    wt: Any,
    lse: Any,
) -> Any:
    """Accumulate a chunk's gradient products into ``grads``; return its rows of
    the ``input`` gradient (or ``None``).  ``stats`` are the chunk's row
    statistics, ``wt`` the class weight of each row's target, ``lse`` its logsumexp."""
    xp, ops = c.xp, c.ops
    n, n_vocab, eps = x_c.shape[0], c.n_classes, c.eps
    blocks, maxes, m, s, _yt, _sw, w_seen = stats
    # d loss / d y' = coef_p * softmax - coef * onehot - (eps / V) * w
    coef = (1 - eps) * wt
    coef_p = coef
    if eps > 0:
        coef_p = coef_p + (eps / n_vocab) * w_seen
    if c.z_loss:
        coef_p = coef_p + 2 * c.z_loss * lse
    scale = coef_p / s
    offsets = _fold_offsets(c, s, coef, coef_p, maxes)
    if offsets is None:  # each block scaled: G = scale * e - coef * onehot - ...
        row = scale_c
        xs = _cast(xp, x_c * _cast(xp, scale_c, x_c.dtype)[:, None], c.gdtype)
    else:  # G = row * (e - offsets * onehot), row applied to x and to dx
        row = scale * scale_c
        xs = _cast(xp, xg * _cast(xp, row, xg.dtype)[:, None], c.gdtype)
    dev = array_api_compat.device(x_c)
    dxt = None if grads.dx is None else xp.zeros((c.x.shape[1], n), dtype=c.cdtype, device=dev)
    whole = None if offsets is None else _whole_chunk(c, flat, blocks, spans)
    if whole is not None:  # folded blocks need no pass: only their GEMMs
        n_local = whole.shape[0]
        hit = (t_c >= 0) & (t_c < n_local)
        whole = ops.sub_at(whole, hit, xp.clip(t_c, 0, n_local - 1), offsets)
        if dxt is not None:  # dx.T += W.T @ G, one GEMM for the chunk
            dxt = ops.addmm_(dxt, c.w.T, whole)
        if grads.dw is not None:  # dW_block += G_block @ (row * x): per block, as a
            for k, (j0, j1) in enumerate(spans):  # (V, D) one makes BLAS use 32 MiB more
                grads.dw[k] = ops.addmm_(grads.dw[k], whole[j0:j1], xs)
        if grads.db is not None:
            db = xp.matmul(whole, row)
            for k, (j0, j1) in enumerate(spans):
                grads.db[k] = grads.db[k] + db[j0:j1]
    for k, (j0, j1) in enumerate(spans if whole is None else ()):
        g, blocks[k] = blocks[k], None
        g = _block_gradient(c, g, maxes[k], m, scale, t_c, (j0, j1), coef, offsets)
        if g is None:
            continue
        gg = _cast(xp, g, c.gdtype)
        if dxt is not None:  # dx.T += W_block.T @ G_block
            dxt = ops.addmm_(dxt, _cast(xp, c.w[j0:j1, :], c.gdtype).T, gg)
        if grads.dw is not None:  # dW_block += G_block @ (scale * x)
            grads.dw[k] = ops.addmm_(grads.dw[k], gg, xs)
        if grads.db is not None:
            grads.db[k] = grads.db[k] + xp.matmul(g, row)
    return None if dxt is None else (dxt * row[None, :]).T


def _block_gradient(
    c: LinearCall,
    g: Any,
    mk: Any,
    m: Any,
    scale: Any,
    t_c: Any,
    span: tuple[int, int],
    coef: Any,
    offsets: Any,
) -> Any:
    """A block of exponentiated (or, with softcap, capped) logits turned into its
    gradient with respect to the logits, in place; ``None`` if gradient
    filtering drops it.  ``mk`` is the max the block was shifted by (``None``
    unshifted); folded blocks (``offsets``) keep their row scale for later."""
    xp, ops, cap, eps = c.xp, c.ops, c.softcap, c.eps
    j0, j1 = span
    th = None
    if offsets is None and cap is None:
        g *= (scale if mk is None else scale * xp.exp(mk - m))[None, :]
    elif offsets is None:
        th = (g if mk is None else g + mk[None, :]) / cap
        if mk is not None:
            g += (mk - m)[None, :]
        g = ops.exp_(g)
        g *= scale[None, :]
    hit = (t_c >= j0) & (t_c < j1)
    at = xp.clip(t_c - j0, 0, j1 - j0 - 1)
    g = ops.sub_at(g, hit, at, coef if offsets is None else offsets)
    if eps > 0:
        if c.weight is None:
            g -= eps / c.n_classes
        else:
            g -= (eps / c.n_classes) * c.weight[c.offset + j0 : c.offset + j1, None]
    if th is not None:
        g *= 1 - th * th
    if c.filter_eps and float(xp.max(xp.abs(g))) < c.filter_eps:
        return None
    return g


def _fold_offsets(c: LinearCall, s: Any, coef: Any, coef_p: Any, shifts: list) -> Any | None:
    """Whether a chunk's row scale may wait until after the gradient products.

    With neither label smoothing, softcap nor gradient filter, a block's
    gradient is ``scale * e - coef * onehot`` (``scale = coef_p / s``), that is
    ``scale * (e - (coef / scale) * onehot)``: the blocks then need no pass
    of their own (the target entries only), ``scale`` multiplying ``x``
    (``linear_weight``'s gradient) and the ``(D, rows)`` ``input`` gradient
    instead.  Returns the offsets ``coef / scale`` per row, or ``None`` where
    this does not hold or could lose range: the shifted (running max) blocks,
    a row sum outside ``[1/_FOLD_RANGE, _FOLD_RANGE]``, an offset beyond it.
    """
    if not c.ops.fold_scale or c.softcap is not None or c.eps or c.filter_eps:
        return None
    if any(mk is not None for mk in shifts):
        return None
    xp = c.xp
    one = xp.ones_like(s)
    # coef / scale = s * (coef / coef_p), exactly s when coef_p == coef
    offsets = xp.where(coef == 0, 0 * one, s * (coef / xp.where(coef_p == 0, one, coef_p)))
    fits = (s >= 1 / _FOLD_RANGE) & (s <= _FOLD_RANGE) & (xp.abs(offsets) <= _FOLD_RANGE)
    if not to_bool(xp.all(fits & ((coef == 0) | (coef_p != 0)))):  # also False for NaN
        return None
    return offsets


def _whole_chunk(c: LinearCall, flat: Any, blocks: list, spans: list) -> np.ndarray | None:
    """The ``(V, rows)`` array whose consecutive rows a NumPy chunk's blocks are.

    Folded blocks (:func:`_fold_offsets`) need no pass of their own, so the
    ``input`` gradient can take the whole chunk at once: one GEMM
    ``W.T @ G`` instead of one per block, with ``K = V`` (fewer and larger
    BLAS calls, measured faster at 224 rows).  ``None`` unless the
    blocks lie in place in ``flat`` and BLAS takes every operand as it is
    (no cast, no copy of ``linear_weight``, no ``(V, D)`` temporary).
    """
    if not isinstance(c.ops, NumpyOps) or not isinstance(flat, np.ndarray) or not spans:
        return None
    dtype = np.dtype(c.w.dtype)
    if not (dtype == c.gdtype == c.cdtype == flat.dtype) or dtype not in blas.cblas():
        return None
    if blas.blas_layout(c.w) is None:
        return None
    n_local, n = spans[-1][1], blocks[0].shape[1]
    whole = flat[: n_local * n].reshape(n_local, n)
    base, pitch = whole.ctypes.data, n * whole.itemsize
    for b, (j0, j1) in zip(blocks, spans):
        if not isinstance(b, np.ndarray) or b.ctypes.data != base + j0 * pitch:
            return None
        if b.shape != (j1 - j0, n) or b.strides != whole.strides:
            return None
    return whole


def evaluate(
    c: LinearCall,
    need: tuple[bool, ...],
    row_scale: Any = None,
) -> tuple[Any, tuple[Any, Any, Any]]:
    """Per-row losses of the counted rows, and the gradients asked for in ``need``.

    Returns ``(loss_kept, (dinput, dlinear_weight, dlinear_bias))``, a
    gradient being ``None`` unless asked for.  They are the gradients of the
    reduced loss; with ``row_scale`` (shape ``(n_kept,)``) each row's gradient
    is scaled by it instead of by the reduction's factor.
    """
    xp, ops = c.xp, c.ops
    n_rows, d = c.x.shape
    n_vocab = c.w.shape[0]
    dev = array_api_compat.device(c.x)
    want = any(need)
    spans = _spans(n_vocab, c.block)

    grads = None
    if want:
        if c.n_kept and row_scale is None:
            row_scale = xp.full((c.n_kept,), 1.0, dtype=c.cdtype, device=dev)
            factor = grad_scale(xp, row_scale, c.reduction, c.denom)
            row_scale = row_scale * factor
        dx = dw = dw_full = db = None
        if need[0]:
            dx = xp.zeros((n_rows, d), dtype=c.x.dtype, device=dev) if ops.mutable else []
        if need[1]:
            acc = compute_dtype(xp, c.w.dtype)
            dw_full = xp.zeros((n_vocab, d), dtype=acc, device=dev)
            dw = [dw_full[j0:j1, :] for j0, j1 in spans]
        if need[2]:
            db = [xp.zeros((j1 - j0,), dtype=c.cdtype, device=dev) for j0, j1 in spans]
        grads = _Grads(dx, dw, dw_full, db)

    flat = ops.buffer(c.chunk * n_vocab, c.cdtype, dev) if c.n_kept else None
    losses = []
    for s0, s1 in _spans(c.n_kept, c.chunk):
        if c.kept is None:
            rows: Any = slice(s0, s1)
            x_c, t_c = c.x[s0:s1, :], c.t[s0:s1]
        else:
            rows = c.kept[s0:s1]
            x_c, t_c = xp.take(c.x, rows, axis=0), xp.take(c.t, rows, axis=0)
        scale_c = None if grads is None else row_scale[s0:s1]
        loss, dx_c = _chunk(c, x_c, t_c, scale_c, spans, flat, grads)
        losses.append(loss)
        if dx_c is not None and grads is not None:
            if ops.mutable:
                ops.put_rows(grads.dx, rows, dx_c)
            else:
                grads.dx.append(dx_c)
    del flat

    loss = xp.concat(losses) if losses else xp.zeros((0,), dtype=c.cdtype, device=dev)
    out = (None, None, None)
    if grads is not None:
        dx = grads.dx
        if need[0] and not ops.mutable:
            kept_dx = xp.concat(dx) if dx else xp.zeros((0, d), dtype=c.cdtype, device=dev)
            dx = _cast(xp, _expand(c, kept_dx), c.x.dtype)
        if need[0] and c.shard is not None:  # each shard's part of the products
            dx = c.shard.all_sum_input_grad(dx)
        if need[0]:
            dx = xp.reshape(dx, c.in_shape)
        dw = None
        if need[1]:
            dw = grads.dw_full if ops.mutable else xp.concat(grads.dw, axis=0)
            dw = _cast(xp, dw, c.w.dtype)
        db = _cast(xp, xp.concat(grads.db), c.bias_dtype) if need[2] else None
        out = (dx, dw, db)
    return loss, out


def _expand(c: LinearCall, kept_rows: Any) -> Any:
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


def reduced_value(c: LinearCall, loss_kept: Any) -> Any:
    """The reduced loss (or the per-row losses, zeros where ignored), caller's dtype."""
    xp = c.xp
    if c.reduction == "none":
        value = xp.reshape(_expand(c, loss_kept), c.shape)
    else:
        value = reduce(xp, loss_kept, c.reduction, c.denom)
    return restore(xp, value, c.out_dtype)
