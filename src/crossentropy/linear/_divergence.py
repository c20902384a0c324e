"""The distillation objective of the chunk engine: a divergence between two heads' softmaxes.

For each chunk of counted rows, every vocabulary block is made twice by GEMM,
``zs = (W_s xs + b_s) / T`` of the student into one ``(chunk, V)`` buffer and
``zt = (W_t xt + b_t) / T`` of the teacher into another.  While they are in
cache the row statistics accumulate online: the sums of exponentials of both
and, per divergence, one weighted sum of the difference of the logits

* ``'kl'``: :math:`\\sum_v e^{z_t} (z_t - z_s)`, so that
  :math:`\\mathrm{KL}(P \\| Q) = \\langle P, z_t - z_s \\rangle - \\operatorname{lse}_t
  + \\operatorname{lse}_s`;
* ``'reverse_kl'``: :math:`\\sum_v e^{z_s} (z_s - z_t)`, the same for
  :math:`\\mathrm{KL}(Q \\| P)`;
* ``'jsd'``: nothing more; a second pass over the kept blocks, once both
  normalisers are known, gives :math:`P`, :math:`Q`, :math:`\\log M` and the loss.

Each block is then turned into the gradient with respect to the student's
logits and goes into the two gradient products (:func:`._blocks.add_products`);
the teacher gets none.  As in :mod:`._softmax`, exponentials are taken
unshifted when every row sum stays in range, else the chunk is redone with
running maxima.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args, overload

from .._core.namespace import device, to_bool
from ._blocks import ChunkOut, Grads, add_products, cast, logits_block, take_rows, zeros_rows

__all__ = ["DIVERGENCES", "Divergence", "DivergenceKind"]

DivergenceKind = Literal["kl", "reverse_kl", "jsd"]
"""``linear_distillation_loss``'s ``divergence=``."""

DIVERGENCES: tuple[str, ...] = get_args(DivergenceKind)


@dataclass
class _Pair:
    """A chunk's two sets of blocks and their row statistics (``(rows,)`` arrays)."""

    s_blocks: list = field(default_factory=list)  # student
    t_blocks: list = field(default_factory=list)  # teacher (or what replaces it)
    s_shifts: list = field(default_factory=list)  # the max each block was shifted by, or None
    t_shifts: list = field(default_factory=list)
    ms: Any = None  # running maxima (0 unshifted)
    mt: Any = None
    ss: Any = None  # sums of exp(z - m)
    st: Any = None
    acc: Any = None  # the divergence's weighted sum of z_t - z_s (or z_s - z_t)


@dataclass(frozen=True)
class Divergence:
    """``KL(P || Q)`` (``'kl'``), ``KL(Q || P)`` (``'reverse_kl'``) or the
    generalised Jensen-Shannon divergence (``'jsd'``, weight ``beta`` on the
    teacher) between the teacher's softmax ``P`` and the student's ``Q``."""

    kind: str = "kl"
    beta: float = 0.5
    buffers: int = 2  # (chunk, V) buffers a chunk needs: the student's and the teacher's

    def chunk(
        self, c: Any, rows: Any, scale_c: Any, spans: list, flats: list, grads: Grads | None
    ) -> ChunkOut:
        """Per-row divergences of the counted rows ``rows``; accumulates the
        student's gradients (each row's scaled by ``scale_c``) into ``grads``."""
        xp = c.xp
        xg = cast(xp, take_rows(xp, c.x, rows), c.gdtype)
        xt = cast(xp, take_rows(xp, c.teacher.x, rows), c.gdtype)
        heads = ((xg if c.inv_t == 1 else xg * c.inv_t).T, (xt if c.inv_t == 1 else xt * c.inv_t).T)
        r = self._statistics(c, heads, spans, flats, shifted=False)
        if r is None:  # logits beyond exp's range: shift by the running maxima
            r = self._statistics(c, heads, spans, flats, shifted=True)
        lse_s, lse_t = xp.log(r.ss) + r.ms, xp.log(r.st) + r.mt
        if self.kind == "kl":
            loss = r.acc / r.st - lse_t + lse_s
        elif self.kind == "reverse_kl":
            loss = r.acc / r.ss - lse_s + lse_t
        else:
            loss = self._jsd_pass(c, r)
        if grads is None:
            return ChunkOut(loss, {})
        return ChunkOut(loss, {}, self._gradients(c, r, xg, scale_c, spans, grads))

    @overload
    def _statistics(
        self, c: Any, heads: tuple, spans: list, flats: list, shifted: Literal[True]
    ) -> _Pair: ...
    @overload
    def _statistics(
        self, c: Any, heads: tuple, spans: list, flats: list, shifted: bool
    ) -> _Pair | None: ...
    def _statistics(
        self, c: Any, heads: tuple, spans: list, flats: list, shifted: bool
    ) -> _Pair | None:
        """Both heads' blocks and the row statistics; ``None`` if an unshifted
        row sum left the range where it is exact (the caller redoes it shifted)."""
        xp, ops = c.xp, c.ops
        n, zero = heads[0].shape[1], zeros_rows(c, heads[0].shape[1])
        r = _Pair(ms=None if shifted else zero, mt=None if shifted else zero, ss=zero, st=zero)
        r.acc = zero
        for span in spans:
            j0, j1 = span
            bs = logits_block(c, c.w, c.bias, heads[0], span, _slot(xp, flats[0], n, span))
            bt = logits_block(c, c.teacher.w, c.teacher.bias, heads[1], span,
                              _slot(xp, flats[1], n, span))  # fmt: skip
            ks = kt = off = None
            if shifted:
                ks, kt = self._shift(xp, r, bs, bt)
                bs -= ks[None, :]
                bt -= kt[None, :]
                off = kt - ks  # z_t - z_s = bt - bs + off
            if self.kind == "kl":
                diff = ops.sub(bt, bs, "diff")
                if off is not None:
                    diff += off[None, :]
                bt, r.st = ops.exp_sum_(bt, r.st)
                bs, r.ss = ops.exp_sum_(bs, r.ss)
                r.acc = r.acc + ops.dot_columns(bt, diff)
            elif self.kind == "reverse_kl":
                r.st = r.st + ops.sum_exp(bt)
                bt = ops.rsub_(bt, bs)  # z_s - z_t, less the shifts
                if off is not None:
                    bt -= off[None, :]
                bs, r.ss = ops.exp_sum_(bs, r.ss)
                r.acc = r.acc + ops.dot_columns(bs, bt)
            else:
                r.ss = r.ss + ops.sum_exp(bs)
                r.st = r.st + ops.sum_exp(bt)
            r.s_blocks.append(bs)
            r.t_blocks.append(bt)
            r.s_shifts.append(ks)
            r.t_shifts.append(kt)
            if shifted:
                r.ms, r.mt = ks, kt
        if not shifted:
            info = xp.finfo(c.cdtype)
            floor = c.w.shape[0] * info.smallest_normal / info.eps
            ok = (r.ss >= floor) & (r.ss <= info.max) & (r.st >= floor) & (r.st <= info.max)
            if not to_bool(xp.all(ok)):  # also False for NaN
                return None
        return r

    def _shift(self, xp: Any, r: _Pair, bs: Any, bt: Any) -> tuple[Any, Any]:
        """The new running maxima after blocks ``bs``, ``bt``; the sums rescaled to them."""
        ms = xp.max(bs, axis=0) if r.ms is None else xp.maximum(r.ms, xp.max(bs, axis=0))
        mt = xp.max(bt, axis=0) if r.mt is None else xp.maximum(r.mt, xp.max(bt, axis=0))
        if r.ms is not None:
            fs = xp.where(r.ms == ms, xp.ones_like(ms), xp.exp(r.ms - ms))
            ft = xp.where(r.mt == mt, xp.ones_like(mt), xp.exp(r.mt - mt))
            r.ss, r.st = r.ss * fs, r.st * ft
            r.acc = r.acc * (ft if self.kind == "kl" else fs)
        return ms, mt

    def _jsd_pass(self, c: Any, r: _Pair) -> Any:
        """The generalised JSD of each row, from the kept logits blocks and both
        normalisers; leaves ``Q`` in the student's blocks, ``Q (log Q - log M)``
        in the teacher's and ``KL(Q || M)`` in ``r.acc``, for the gradient."""
        xp, ops = c.xp, c.ops
        beta = self.beta
        tiny = xp.finfo(c.cdtype).smallest_normal
        log_ss, log_st = xp.log(r.ss), xp.log(r.st)
        loss = r.acc = zeros_rows(c, r.ss.shape[0])
        for k, (bs, bt) in enumerate(zip(r.s_blocks, r.t_blocks)):
            ks, kt = r.s_shifts[k], r.t_shifts[k]
            bs += (-log_ss if ks is None else ks - r.ms - log_ss)[None, :]  # log Q
            bt += (-log_st if kt is None else kt - r.mt - log_st)[None, :]  # log P
            q, p = ops.exp(bs, "q"), ops.exp(bt, "p")
            # log M, kept finite where both P and Q underflow (their terms are 0 there)
            log_m = ops.log_(ops.clip_min_(ops.mix(p, q, beta, "m"), tiny))
            bs -= log_m
            bt -= log_m
            bs *= q  # Q (log Q - log M)
            kq = xp.sum(bs, axis=0)
            loss = loss + beta * ops.dot_columns(p, bt) + (1 - beta) * kq
            r.acc = r.acc + kq
            r.s_blocks[k] = ops.assign_(bt, q)  # Q in the teacher's place, the other in the student's
            r.t_blocks[k] = bs
        return loss

    def _gradients(
        self, c: Any, r: _Pair, xg: Any, scale_c: Any, spans: list, grads: Grads
    ) -> Any:
        """Accumulate the student's gradient products into ``grads``; return
        its rows of the ``input`` gradient (or ``None``)."""
        xp = c.xp
        if self.kind == "jsd":  # G = (1 - beta) (Q (log Q - log M) - KL(Q || M) Q)
            factor = zeros_rows(c, r.ss.shape[0]) + (1 - self.beta)
        else:  # G = (Q - P) or Q (d - KL): Q = e^(z_s - m_s) / s_s, the 1 / s_s per row
            factor = 1 / r.ss
        row = factor * scale_c if c.inv_t == 1 else factor * (scale_c * c.inv_t)
        xs = cast(xp, xg * cast(xp, row, xg.dtype)[:, None], c.gdtype)
        dxt = None
        if grads.dx is not None:
            dxt = xp.zeros((c.x.shape[1], xg.shape[0]), dtype=c.cdtype, device=device(xg))
        kl_q = r.acc / r.ss  # reverse_kl: KL(Q || P) + lse_s - lse_t, the d's weighted mean
        for k, span in enumerate(spans):
            es, other = r.s_blocks[k], r.t_blocks[k]
            r.s_blocks[k] = r.t_blocks[k] = None
            ks, kt = r.s_shifts[k], r.t_shifts[k]
            if ks is not None and self.kind != "jsd":
                es *= xp.exp(ks - r.ms)[None, :]
            if self.kind == "kl":  # e_s - (s_s / s_t) e_t
                ratio = r.ss / r.st if kt is None else r.ss / r.st * xp.exp(kt - r.mt)
                other *= ratio[None, :]
                es -= other
                g = es
            elif self.kind == "reverse_kl":  # e_s (d - E_Q[d])
                other -= kl_q[None, :]
                other *= es
                g = other
            else:
                es *= r.acc[None, :]
                other -= es
                g = other
            dxt = add_products(c, grads, k, span, g, xs, row, dxt)
        return None if dxt is None else (dxt * row[None, :]).T


def _slot(xp: Any, flat: Any, n: int, span: tuple) -> Any:
    """The part of a ``(chunk, V)`` buffer that block ``span`` of ``n`` rows takes."""
    if flat is None:
        return None
    j0, j1 = span
    return xp.reshape(flat[n * j0 : n * j1], (j1 - j0, n))
