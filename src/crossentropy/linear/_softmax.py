"""The cross-entropy objective of the chunk engine: softmax row statistics and gradient blocks.

Per chunk of counted rows, the logits are made block by block (one GEMM
each) and exponentiated in place while they are in cache; their row sums, the
target logit (for probability targets, the target-weighted sum of the
logits) and the smoothing sums accumulate (:func:`_logits_blocks`).  Then each
block becomes its gradient with respect to the logits and goes into the
gradient products (:func:`_gradients`).  With a
:class:`~crossentropy._core.shard.VocabShard` the row statistics are combined
over the processes sharing the vocabulary (:func:`_combine`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from .._core.namespace import device, index_dtype, to_bool
from ..kernels import blas
from ._arrayops import NumpyOps
from ._blocks import ChunkOut, Grads, add_products, cast, logits_block, take_rows, zeros_rows

__all__ = ["Softmax"]

# A plain chunk (index targets; no label smoothing, softcap or gradient
# filter) leaves its exponentiated blocks unnormalised and applies each row's
# scale after the gradient products (NumPy), if every row sum lies in
# [1/_FOLD_RANGE, _FOLD_RANGE]: an unscaled entry is at most the row sum, so
# neither product can overflow for any sensible weight, and a pass over the
# (chunk, V) buffer is saved.
_FOLD_RANGE = 2.0**64


@dataclass
class _Rows:
    """A chunk's logits blocks and their row statistics (``(rows,)`` arrays)."""

    blocks: list
    shifts: list  # the max each block was shifted by (None: unshifted)
    m: Any  # the running max (0 unshifted)
    s: Any  # sum over the classes of exp(z - m)
    yt: Any  # index targets: the target logit; probabilities: sum_v q_v (z_v - m)
    tw: Any  # probability targets: sum_v q_v with q_v = w_v t_v; else None
    sw: Any  # smoothing: sum_v w_v (z_v - m)
    w_seen: Any  # smoothing: summed class weight of the blocks seen
    ent: Any = None  # statistics: sum_v exp(z_v - m) (z_v - m)
    best: Any = None  # statistics: the largest logit seen
    amax: Any = None  # statistics: its class (the first one)


@dataclass(frozen=True)
class Softmax:
    """Softmax cross-entropy (``linear_cross_entropy``); ``stats`` adds each
    row's log-probability of the target, logsumexp, entropy, argmax and z-loss
    term to the chunk's output."""

    stats: bool = False
    buffers: int = 1  # (chunk, V) buffers a chunk needs

    def chunk(
        self, c: Any, rows: Any, scale_c: Any, spans: list, flats: list, grads: Grads | None
    ) -> ChunkOut:
        """Per-row losses of the counted rows ``rows``; accumulates the gradients
        (each row's scaled by ``scale_c``) into ``grads``.

        Blocks are vocabulary-major, ``(block, rows)``: the logits GEMM is then
        ``W_block @ x.T``, a tall matrix times a thin one, which BLAS runs
        closer to its peak than ``x @ W_block.T`` for the thin chunks that the
        memory budget allows.
        """
        xp = c.xp
        x_c, t_c = take_rows(xp, c.x, rows), take_rows(xp, c.t, rows)
        n_vocab, eps = c.n_classes, c.eps
        xg = cast(xp, x_c, c.gdtype)
        xt = (xg if c.inv_t == 1 else xg * c.inv_t).T
        wt = None
        if not c.probs:
            wt = zeros_rows(c, x_c.shape[0]) + 1
            if c.weight is not None:
                wt = xp.take(c.weight, t_c, axis=0)
            if c.offset:
                t_c = t_c - c.offset  # the target's row in this shard of the vocabulary, if there
        want_dt = grads is not None and grads.dt is not None
        keep = c.softcap is not None or want_dt  # the blocks keep their logits
        if c.shard is None:
            r = _logits_blocks(c, xt, t_c, spans, flats[0], False, keep, self.stats)
            if r is None:  # logits beyond exp's range: shift by the running max
                r = _logits_blocks(c, xt, t_c, spans, flats[0], True, keep, self.stats)
        else:  # every shard must take the same (shifted) path: they meet in _combine
            r = _combine(c, _logits_blocks(c, xt, t_c, spans, flats[0], True, keep, False))
        log_s = xp.log(r.s)
        lse = log_s + r.m
        if c.probs:
            loss = (1 - eps) * (r.tw * log_s - r.yt)
        else:
            loss = (1 - eps) * wt * (log_s - (r.yt - r.m))
        if eps > 0:
            loss = loss + (eps / n_vocab) * (r.w_seen * log_s - r.sw)
        z_term = c.z_loss * lse * lse if c.z_loss else None
        if z_term is not None:
            loss = loss + z_term
        extras = _statistics(c, r, log_s, lse, z_term) if self.stats else {}
        if grads is None:
            return ChunkOut(loss, extras)
        dx, dt = _gradients(c, (x_c, xg, t_c), scale_c, spans, flats[0], grads, r, wt, keep)
        return ChunkOut(loss, extras, dx, dt)


def _statistics(c: Any, r: _Rows, log_s: Any, lse: Any, z_term: Any) -> dict:
    """The per-row statistics of a chunk (index targets, counted rows)."""
    xp = c.xp
    return {
        "logprob": (r.yt - r.m) - log_s,
        "logsumexp": lse,
        "entropy": log_s - r.ent / r.s,
        "argmax": r.amax,
        "z_loss": xp.zeros_like(lse) if z_term is None else z_term,
    }


@overload
def _logits_blocks(
    c: Any, xt: Any, t_c: Any, spans: list, flat: Any, shifted: Literal[True], keep: bool,
    stats: bool,
) -> _Rows: ...
@overload
def _logits_blocks(
    c: Any, xt: Any, t_c: Any, spans: list, flat: Any, shifted: bool, keep: bool, stats: bool
) -> _Rows | None: ...
def _logits_blocks(
    c: Any, xt: Any, t_c: Any, spans: list, flat: Any, shifted: bool, keep: bool, stats: bool
) -> _Rows | None:
    """The logits blocks of a chunk and their row statistics (first half of a chunk).

    Each block ``(block, rows)`` is made by one GEMM, then exponentiated in
    place (or, with ``keep``, kept as logits: softcap's ``tanh'`` and the
    target gradient's log-probabilities need them).

    Unshifted (``shifted=False``), ``exp(y)`` is taken as it is, which saves
    two passes over each block; it is kept only if no row sum overflowed and
    every row's largest term is a normal number with ``1/eps`` of headroom,
    else ``None`` is returned and the chunk is redone shifted: each block by
    the running row max ``m`` (an online logsumexp; ``shifts`` holds the max
    each block was shifted by, to rescale it later).
    """
    xp, ops = c.xp, c.ops
    n, n_vocab, cap = xt.shape[1], c.w.shape[0], c.softcap
    zero = zeros_rows(c, n)
    r = _Rows([], [], None if shifted else zero, zero, zero, zero if c.probs else None, zero, 0.0)
    if stats:
        r.ent, r.best = zero, zero - float("inf")
        r.amax = xp.zeros((n,), dtype=index_dtype(xp), device=device(zero))
    for j0, j1 in spans:
        out = None if flat is None else xp.reshape(flat[n * j0 : n * j1], (j1 - j0, n))
        b = logits_block(c, c.w, c.bias, xt, (j0, j1), out)
        if cap is not None:
            b /= cap
            b = ops.tanh_(b)
            b *= cap
        if not c.probs:
            hit = (t_c >= j0) & (t_c < j1)
            col = xp.clip(t_c - j0, 0, j1 - j0 - 1)
            r.yt = xp.where(hit, xp.take_along_axis(b, col[None, :], axis=0)[0, :], r.yt)
        if stats:
            _argmax_update(xp, r, b, j0)
        m_new = None
        if shifted:  # streaming logsumexp: running max m, sum s of exp(y - m)
            bm = xp.max(b, axis=0)
            m_new = bm if r.m is None else xp.maximum(r.m, bm)
            if r.m is not None:
                _rescale(xp, r, m_new)
            b -= m_new[None, :]
        _linear_sums(c, r, b, t_c, (j0, j1))
        b = _exponentiate(c, r, b, keep)
        r.blocks.append(b)
        r.shifts.append(m_new)
        if shifted:
            r.m = m_new
    if not shifted:
        info = xp.finfo(c.cdtype)
        floor = n_vocab * info.smallest_normal / info.eps
        ok = (r.s >= floor) & (r.s <= info.max)
        if r.ent is not None:  # sum e^y y overflows before sum e^y does
            ok = ok & (xp.abs(r.ent) <= info.max)
        if not to_bool(xp.all(ok)):  # also False for NaN
            return None
    return r


def _argmax_update(xp: Any, r: _Rows, b: Any, j0: int) -> None:
    """Keep the largest logit of each row and its first class."""
    bm = xp.max(b, axis=0)
    better = bm > r.best
    r.amax = xp.where(better, xp.astype(xp.argmax(b, axis=0), index_dtype(xp)) + j0, r.amax)
    r.best = xp.where(better, bm, r.best)


def _rescale(xp: Any, r: _Rows, m_new: Any) -> None:
    """The running sums, from the old running max ``r.m`` to ``m_new``."""
    same = r.m == m_new
    delta = xp.where(same, xp.zeros_like(m_new), r.m - m_new)
    factor = xp.where(same, xp.ones_like(m_new), xp.exp(r.m - m_new))
    if r.ent is not None:  # sum e^(z-m) (z-m) = e^(m-m') (sum e^(z-m') ... + s (m - m'))
        r.ent = (r.ent + r.s * delta) * factor
    r.s = r.s * factor
    r.sw = r.sw + r.w_seen * delta
    if r.tw is not None:
        r.yt = r.yt + r.tw * delta


def _target_block(c: Any, t_c: Any, span: tuple) -> Any:
    """``(block, rows)`` probability targets times the class weights, ``q = w_v t_v``."""
    j0, j1 = span
    q = t_c[:, j0:j1].T
    return q if c.weight is None else q * c.weight[j0:j1, None]


def _linear_sums(c: Any, r: _Rows, b: Any, t_c: Any, span: tuple) -> None:
    """Add a (shifted) block's smoothing sums and probability-target sums."""
    xp = c.xp
    j0, j1 = span
    if c.eps > 0:
        if c.weight is None:
            part, w_block = xp.sum(b, axis=0), float(j1 - j0)
        else:
            w_b = c.weight[c.offset + j0 : c.offset + j1]
            part, w_block = xp.matmul(w_b, b), xp.sum(w_b)
        r.sw = r.sw + part
        r.w_seen = r.w_seen + w_block
    if c.probs:
        q = _target_block(c, t_c, span)
        r.yt = r.yt + xp.sum(q * b, axis=0)
        r.tw = r.tw + xp.sum(q, axis=0)


def _exponentiate(c: Any, r: _Rows, b: Any, keep: bool) -> Any:
    """Add ``exp(b)`` into the row sums (and the entropy sums); return the
    block to keep: ``exp(b)`` in place, or ``b`` itself with ``keep``."""
    xp = c.xp
    if not keep and r.ent is None:
        b, r.s = c.ops.exp_sum_(b, r.s)  # one fused pass where the kernels allow
        return b
    e = c.ops.exp(b)
    r.s = r.s + xp.sum(e, axis=0)
    if r.ent is not None:
        r.ent = r.ent + xp.sum(e * b, axis=0)
    return b if keep else c.ops.assign_(b, e)


def _combine(c: Any, r: _Rows) -> _Rows:
    """The row statistics of the whole vocabulary from this shard's (shifted) ones.

    One all-reduce ``MAX`` of the running maxima, then one all-reduce ``SUM``
    of the sums of exponentials (rescaled to the common maximum), the target
    logits (0 where another shard has the target) and the smoothing sums.
    """
    xp, shard = c.xp, c.shard
    big_m = shard.all_max(r.m)
    big_m = xp.where(xp.isfinite(big_m), big_m, xp.zeros_like(big_m))
    s = r.s * xp.exp(r.m - big_m)
    sw = r.sw
    if c.eps > 0:  # sw = sum_v w_v (y_v - m): shift it to the common maximum
        sw = sw + r.w_seen * (r.m - big_m)
        s, yt, sw = shard.all_sum(s, r.yt, sw)
    else:
        s, yt = shard.all_sum(s, r.yt)
    return dataclasses.replace(r, m=big_m, s=s, yt=yt, sw=sw, w_seen=shard.weight_sum)


def _gradients(
    c: Any, chunk: tuple, scale_c: Any, spans: list, flat: Any, grads: Grads, r: _Rows,
    wt: Any, keep: bool,
) -> tuple[Any, Any]:  # fmt: skip
    """Accumulate a chunk's gradient products into ``grads``; return its rows of
    the ``input`` and target gradients (or ``None``).  ``chunk`` is ``(x_c,
    x_c in the GEMM dtype, targets)``, ``wt`` the class weight of each row's
    index target."""
    xp = c.xp
    x_c, xg, t_c = chunk
    n, n_vocab, eps = x_c.shape[0], c.n_classes, c.eps
    log_s = xp.log(r.s)
    # d loss / d y' = coef_p * softmax - coef * target - (eps / V) * w
    coef = (1 - eps) * (r.tw if c.probs else wt)
    coef_p = coef
    if eps > 0:
        coef_p = coef_p + (eps / n_vocab) * r.w_seen
    if c.z_loss:
        coef_p = coef_p + 2 * c.z_loss * (log_s + r.m)
    scale = coef_p / r.s
    row_t = scale_c if c.inv_t == 1 else scale_c * c.inv_t  # the logits are x / T
    offsets = _fold_offsets(c, r.s, coef, coef_p, r.shifts)
    if offsets is None:  # each block scaled: G = scale * e - coef * onehot - ...
        row = row_t
        xs = cast(xp, x_c * cast(xp, row_t, x_c.dtype)[:, None], c.gdtype)
    else:  # G = row * (e - offsets * onehot), row applied to x and to dx
        row = scale * row_t
        xs = cast(xp, xg * cast(xp, row, xg.dtype)[:, None], c.gdtype)
    dxt = None if grads.dx is None else xp.zeros((c.x.shape[1], n), dtype=c.cdtype, device=device(c.x))
    whole = None if offsets is None else _whole_chunk(c, flat, r.blocks, spans)
    if whole is not None:  # folded blocks need no pass: only their GEMMs
        dxt = _whole_products(c, grads, whole, spans, t_c, offsets, xs, row, dxt)
    dcoef = -(1 - eps) * scale_c if grads.dt is not None else None
    dts = []
    for k, span in enumerate(spans if whole is None else ()):
        g, r.blocks[k] = r.blocks[k], None
        g, dt = _block_gradient(c, g, (r.shifts[k], r.m, log_s), scale, t_c, span, coef,
                                offsets, keep, dcoef)  # fmt: skip
        dts.append(dt)
        if g is not None:
            dxt = add_products(c, grads, k, span, g, xs, row, dxt)
    dx = None if dxt is None else (dxt * row[None, :]).T
    return dx, (xp.concat(dts, axis=0).T if dcoef is not None else None)


def _whole_products(
    c: Any, grads: Grads, whole: Any, spans: list, t_c: Any, offsets: Any, xs: Any, row: Any,
    dxt: Any,
) -> Any:  # fmt: skip
    """The gradient products of a folded NumPy chunk from its whole ``(V, rows)``
    buffer: one GEMM for the input gradient, one per block for the weight's."""
    xp, ops = c.xp, c.ops
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
    return dxt


def _block_gradient(
    c: Any, g: Any, shift: tuple, scale: Any, t_c: Any, span: tuple, coef: Any, offsets: Any,
    keep: bool, dcoef: Any,
) -> tuple[Any, Any]:  # fmt: skip
    """A block of exponentiated (or, with ``keep``, plain) logits turned into its
    gradient with respect to the logits, in place, and the block of the target
    gradient (probability targets, ``dcoef``: ``-(1 - eps)`` times each row's
    scale).  The gradient is ``None`` if gradient filtering drops it.
    ``shift`` is ``(mk, m, log_s)``: the max the block was shifted by (``None``
    unshifted), the final one and the log of the row sum; folded blocks
    (``offsets``) keep their row scale for later."""
    xp, ops, cap, eps = c.xp, c.ops, c.softcap, c.eps
    mk, m, log_s = shift
    j0, j1 = span
    th = dt = None
    if offsets is None and not keep:
        g *= (scale if mk is None else scale * xp.exp(mk - m))[None, :]
    elif offsets is None:
        if cap is not None:
            th = (g if mk is None else g + mk[None, :]) / cap
        if mk is not None:
            g += (mk - m)[None, :]
        if dcoef is not None:  # d loss / d t_v = -(1 - eps) w_v log p_v
            dt = (g - log_s[None, :]) * dcoef[None, :]
            dt = dt if c.weight is None else dt * c.weight[j0:j1, None]
        g = ops.exp_(g)
        g *= scale[None, :]
    if c.probs:
        g -= (1 - eps) * _target_block(c, t_c, span)
    else:
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
        return None, dt
    return g, dt


def _fold_offsets(c: Any, s: Any, coef: Any, coef_p: Any, shifts: list) -> Any | None:
    """Whether a chunk's row scale may wait until after the gradient products.

    With index targets and neither label smoothing, softcap nor gradient
    filter, a block's gradient is ``scale * e - coef * onehot`` (``scale =
    coef_p / s``), that is ``scale * (e - (coef / scale) * onehot)``: the
    blocks then need no pass of their own (the target entries only),
    ``scale`` multiplying ``x`` (``linear_weight``'s gradient) and the ``(D,
    rows)`` ``input`` gradient instead.  Returns the offsets ``coef / scale``
    per row, or ``None`` where this does not hold or could lose range: the
    shifted (running max) blocks, a row sum outside ``[1/_FOLD_RANGE,
    _FOLD_RANGE]``, an offset beyond it.
    """
    if not c.ops.fold_scale or c.softcap is not None or c.eps or c.filter_eps or c.probs:
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


def _whole_chunk(c: Any, flat: Any, blocks: list, spans: list) -> np.ndarray | None:
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
