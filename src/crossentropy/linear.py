"""Cross-entropy of a linear layer's output without the ``(N, V)`` logits: ``linear_cross_entropy``.

A language model's head computes ``logits = h @ W.T`` for ``N`` tokens and a
vocabulary of ``V`` words and feeds them to :func:`cross_entropy`.  With
``N = 8192`` and ``V = 128000`` the float32 logits alone take 4 GiB, and the
naive backward holds two more arrays of that size.  Here the tokens are taken
a chunk at a time (and the vocabulary a block at a time inside each chunk):
per chunk, one GEMM gives the logits block, a streaming (online) logsumexp
gives the row statistics, and the gradient of the block with respect to the
logits is applied at once with two GEMMs (``dinput = G @ W`` and
``dW += G.T @ input``).  Peak extra memory is one ``(chunk, V)`` buffer.

With a reduced loss (``'mean'``, ``'sum'``) the gradients are computed during
the forward, so the backward costs nothing; with ``reduction='none'`` the
backward of the PyTorch ``autograd.Function`` recomputes the blocks, because
each row's gradient must be scaled by its own upstream gradient.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from ._namespace import compute_dtype, is_torch, namespace, numeric_guard, restore, to_bool
from ._reduction import check_reduction, reduce, seed
from ._validate import (
    check_floating,
    check_index_target,
    check_label_smoothing,
    check_vector,
    check_z_loss_softcap,
)
from .grad import defines_grad
from .kernels import _native

__all__ = ["linear_cross_entropy"]

# Bytes for the (token chunk, V) logits buffer, the one large temporary: with
# the other temporaries (a few (block, chunk) and (chunk, D) arrays) a call at
# V = 128000 in float32 stays under 128 MiB (chunk = 224 rows).  Thinner
# chunks make the three GEMMs markedly slower (measured: 192 rows ran ~1.3x
# the full-size GEMMs, 384 rows ~1.05x), so the budget is spent on rows.
_BUFFER_BYTES = 112 * 2**20
# Vocabulary rows per block: a (block, chunk) block is exponentiated, scaled
# and fed to its two GEMMs while it is still in cache (4096 measured best of
# 1024-8192 at chunk 216).  NumPy's folded chunks (below) skip the scaling,
# and their input gradient takes the whole (V, chunk) buffer in one GEMM.
_VOCAB_BLOCK = 4096
# Rows per chunk at least, by default, when PyTorch multiplies half-precision
# matrices (gdtype narrower than cdtype): each chunk then adds its rounded
# (V, D) weight-gradient product into the float32 (V, D) accumulator, a pass
# over V * D * 4 bytes whatever the chunk's rows, so thin chunks pay it often.
# Measured at N=8192, D=1024, V=128000 bfloat16 (2 cores): 224 rows 10.4 s,
# 448 rows 10.1 s, 896 rows 9.0 s, the three GEMMs alone 8.8 s.  The logits
# buffer (896 x V float32) then stays below that accumulator for D >= 896.
_HALF_CHUNK = 896
# A plain chunk (no label smoothing, no softcap, no gradient filter) leaves
# its exponentiated blocks unnormalised and applies each row's scale after
# the gradient products (NumPy), if every row sum lies in [1/_FOLD_RANGE,
# _FOLD_RANGE]: an unscaled entry is at most the row sum, so neither product
# can overflow for any sensible weight, and a pass over the (chunk, V)
# buffer is saved.
_FOLD_RANGE = 2.0**64


# -- in-place operations ------------------------------------------------------------


class _Functional:
    """Array operations written for any Array API library (new arrays each time).

    Subclasses override them with in-place versions where the library has
    them (NumPy ``out=``, PyTorch ``*_``), which is what keeps the memory at
    one logits buffer.
    """

    mutable = False
    fold_scale = False  # _chunk may apply the row scale after the GEMMs (see _FOLD_RANGE)

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def buffer(self, size: int, dtype: Any, dev: Any) -> Any:
        return None

    def mm(self, a: Any, b: Any, out: Any) -> Any:
        """``a @ b``, written into ``out`` (compute dtype) when there is one."""
        y = self.xp.matmul(a, b)
        return y if out is None or y.dtype == out.dtype else self.xp.astype(y, out.dtype)

    def exp_(self, a: Any) -> Any:
        return self.xp.exp(a)

    def tanh_(self, a: Any) -> Any:
        return self.xp.tanh(a)

    def exp_sum_(self, a: Any, s: Any) -> tuple[Any, Any]:
        """``(exp(a), s + exp(a).sum(axis=0))``, ``a`` exponentiated in place where possible."""
        a = self.exp_(a)
        return a, s + self.xp.sum(a, axis=0)

    def addmm_(self, acc: Any, a: Any, b: Any) -> Any:
        """``acc + a @ b`` (in place where possible)."""
        y = self.xp.matmul(a, b)
        return acc + (y if y.dtype == acc.dtype else self.xp.astype(y, acc.dtype))

    def sub_at(self, g: Any, hit: Any, col: Any, vals: Any) -> Any:
        """``g[col[n], n] -= vals[n]`` for the rows ``n`` where ``hit`` (``g`` is a
        ``(block, rows)`` block): a one-hot of the block, as the standard has no
        scatter."""
        xp = self.xp
        cols = xp.arange(g.shape[0], device=array_api_compat.device(g))
        onehot = xp.astype(cols[:, None] == col[None, :], g.dtype)
        return g - onehot * xp.where(hit, vals, xp.zeros_like(vals))[None, :]

    def put_rows(self, dst: Any, rows: Any, vals: Any) -> Any:
        raise NotImplementedError  # functional libraries collect the rows instead


class _NumpyOps(_Functional):
    mutable = True
    fold_scale = True

    def __init__(self, xp: Any) -> None:
        super().__init__(xp)
        self._scratch: dict[str, np.ndarray] = {}

    def _tmp(self, name: str, shape: tuple, dtype: Any) -> np.ndarray:
        size = math.prod(shape)
        buf = self._scratch.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._scratch[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)

    def buffer(self, size: int, dtype: Any, dev: Any) -> Any:
        return np.empty(size, dtype=dtype)

    def mm(self, a: Any, b: Any, out: Any) -> Any:
        if out is None or a.dtype != out.dtype:
            return super().mm(a, b, out) if out is None else _assign(out, a @ b)
        if _gemm(a, b, out, 0.0):
            return out
        return np.matmul(a, b, out=out)

    def exp_(self, a: Any) -> Any:
        return np.exp(a, out=a)

    def tanh_(self, a: Any) -> Any:
        return np.tanh(a, out=a)

    def exp_sum_(self, a: Any, s: Any) -> tuple[Any, Any]:
        # one fused pass in C (NumPy's exp and its sum along axis 0 are two)
        total = np.array(s, dtype=a.dtype, copy=True)
        if _native.exp_sum(a, total):
            return a, total
        return super().exp_sum_(a, s)

    def addmm_(self, acc: Any, a: Any, b: Any) -> Any:
        if _gemm(a, b, acc, 1.0):  # BLAS accumulates into acc itself
            return acc
        # NumPy's matmul cannot accumulate: product into a reused scratch, then add
        tmp = self._tmp("mm", acc.shape, np.result_type(a, b))
        np.matmul(a, b, out=tmp)
        acc += tmp
        return acc

    def sub_at(self, g: Any, hit: Any, col: Any, vals: Any) -> Any:
        g[col, np.arange(g.shape[1])] -= np.where(hit, vals, 0)
        return g

    def put_rows(self, dst: Any, rows: Any, vals: Any) -> Any:
        dst[rows] = vals
        return dst


# NumPy's matmul has no ``C += A @ B``; its BLAS does.  NumPy's wheels ship
# OpenBLAS with its CBLAS symbols, which ctypes reaches in the library NumPy
# has already loaded (so the same threads run both).  Anything unexpected
# (another BLAS, another layout) falls back to matmul + add.
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@functools.cache
def _cblas() -> dict:
    import ctypes
    import glob
    import os

    found: dict = {}
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, index in (
            ("scipy_cblas_", "64_", ctypes.c_int64),
            ("cblas_", "64_", ctypes.c_int64),
            ("scipy_cblas_", "", ctypes.c_int),
            ("cblas_", "", ctypes.c_int),
        ):
            for letter, dtype, real in (
                ("s", np.float32, ctypes.c_float),
                ("d", np.float64, ctypes.c_double),
            ):
                fn = getattr(lib, f"{prefix}{letter}gemm{suffix}", None)
                if fn is None or dtype in found:
                    continue
                ptr = ctypes.c_void_p
                fn.restype = None
                fn.argtypes = [index, index, index, index, index, index, real, ptr, index,
                               ptr, index, real, ptr, index]  # fmt: skip
                found[np.dtype(dtype)] = fn
        if found:
            break
    return found


def _blas_layout(m: np.ndarray) -> tuple[int, int] | None:
    """``(transpose flag, leading dimension)`` of a matrix for row-major CBLAS."""
    s0, s1 = (st // m.itemsize for st in m.strides)
    rows, cols = m.shape
    if (s1 == 1 or cols == 1) and s0 >= max(1, cols) and s0 > 0:
        return _NO_TRANS, s0
    if (s0 == 1 or rows == 1) and s1 >= max(1, rows) and s1 > 0:
        return _TRANS, s1
    return None


def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> bool:
    """``c = a @ b + beta * c`` by BLAS in place; False if it cannot (then nothing is done)."""
    if not (a.dtype == b.dtype == c.dtype) or min(a.shape + b.shape) == 0:
        return False
    fn = _cblas().get(c.dtype)
    la, lb, lc = _blas_layout(a), _blas_layout(b), _blas_layout(c)
    if fn is None or la is None or lb is None or lc is None or lc[0] != _NO_TRANS:
        return False
    (m, k), n = a.shape, b.shape[1]
    fn(_ROW_MAJOR, la[0], lb[0], m, n, k, 1.0, a.ctypes.data, la[1], b.ctypes.data, lb[1],
       beta, c.ctypes.data, lc[1])  # fmt: skip
    return True


class _TorchOps(_Functional):
    mutable = True

    def buffer(self, size: int, dtype: Any, dev: Any) -> Any:
        import torch

        return torch.empty(size, dtype=dtype, device=dev)

    def mm(self, a: Any, b: Any, out: Any) -> Any:
        import torch

        if out is None:
            return super().mm(a, b, out)
        if a.dtype != out.dtype:  # half-precision GEMM, float32 block
            return out.copy_(a @ b)
        return torch.matmul(a, b, out=out)

    def exp_(self, a: Any) -> Any:
        return a.exp_()

    def tanh_(self, a: Any) -> Any:
        return a.tanh_()

    def addmm_(self, acc: Any, a: Any, b: Any) -> Any:
        if a.dtype == acc.dtype:
            return acc.addmm_(a, b)
        acc += a @ b
        return acc

    def sub_at(self, g: Any, hit: Any, col: Any, vals: Any) -> Any:
        # every row once (0 where the target is elsewhere): no nonzero(), no device sync
        import torch

        rows = torch.arange(g.shape[1], device=g.device)
        g[col, rows] -= torch.where(hit, vals, torch.zeros_like(vals))
        return g

    def put_rows(self, dst: Any, rows: Any, vals: Any) -> Any:
        if isinstance(rows, slice):
            dst[rows].copy_(vals)
        else:
            dst.index_copy_(0, rows, vals.to(dst.dtype))
        return dst


def _assign(out: Any, value: Any) -> Any:
    out[...] = value
    return out


def _ops(xp: Any, x: Any) -> _Functional:
    if array_api_compat.is_numpy_array(x):
        return _NumpyOps(xp)
    if is_torch(x):
        return _TorchOps(xp)
    return _Functional(xp)


# -- preparation --------------------------------------------------------------------


@dataclass
class _Call:
    """A validated call: rows flattened, options checked, chunk sizes chosen."""

    xp: Any
    ops: _Functional
    x: Any  # (N, D) input rows, caller's dtype
    w: Any  # (V, D) linear weight, caller's dtype
    bias: Any  # (V,) compute dtype, or None
    bias_dtype: Any  # the caller's linear_bias dtype
    weight: Any  # (V,) class weights, compute dtype, or None
    t: Any  # (N,) int64 targets, ignored entries replaced by 0
    valid: Any  # (N,) bool, the rows that count
    kept: Any  # (n,) indices of the counted rows, or None when every row counts
    n_kept: int
    denom: Any  # the 'mean' denominator: the summed weight of the counted targets
    shape: tuple  # target shape, for reduction='none'
    in_shape: tuple  # input shape, for its gradient
    out_dtype: Any  # dtype of the loss
    cdtype: Any  # compute dtype (float32 for half precision)
    gdtype: Any  # GEMM dtype
    reduction: str
    eps: float
    z_loss: float
    softcap: float | None
    filter_eps: float
    chunk: int
    block: int
    shard: Any = None  # a crossentropy.distributed.VocabShard: w holds its rows of the vocabulary

    @property
    def offset(self) -> int:
        """The first vocabulary entry of ``w`` (0 unless sharded)."""
        return 0 if self.shard is None else self.shard.offset

    @property
    def n_classes(self) -> int:
        """The whole vocabulary's size."""
        return self.w.shape[0] if self.shard is None else self.shard.n_classes


def _check_chunk_size(chunk_size: Any) -> tuple[int | None, int | None]:
    pair = chunk_size if isinstance(chunk_size, (tuple, list)) else (chunk_size, None)
    if len(pair) != 2:
        raise ValueError(
            f"chunk_size must be an int (rows per chunk) or a pair (rows, vocabulary "
            f"entries per block), got {chunk_size!r}"
        )
    for v in pair:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(
                f"chunk_size entries must be positive integers or None, got {chunk_size!r}"
            )
    return tuple(None if v is None else int(v) for v in pair)  # type: ignore[return-value]


def default_chunk_size(n_vocab: int, itemsize: int = 4, half_gemm: bool = False) -> int:
    """Rows per chunk so that the ``(chunk, V)`` logits buffer fits in 112 MiB,
    or at least 896 rows with ``half_gemm`` (half-precision GEMMs into float32
    accumulators, see ``_HALF_CHUNK``).

    A multiple of 8, but not a power of two (a power-of-two leading dimension
    makes the BLAS kernels thrash the cache).
    """
    chunk = _BUFFER_BYTES // max(1, n_vocab * itemsize)
    if chunk < 16:
        chunk = max(1, chunk)
    else:
        chunk = chunk // 8 * 8
        chunk = chunk - 8 if chunk & (chunk - 1) == 0 and chunk > 16 else chunk
    return max(chunk, _HALF_CHUNK) if half_gemm else chunk


def _prepare(
    input: Any,
    linear_weight: Any,
    target: Any,
    linear_bias: Any,
    weight: Any,
    reduction: str,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    chunk_size: Any,
    filter_eps: float | None,
    shard: Any = None,
) -> _Call:
    xp, (input, linear_weight, target, linear_bias, weight) = namespace(
        input, linear_weight, target, linear_bias, weight
    )
    check_floating(xp, input, "input")
    check_floating(xp, linear_weight, "linear_weight")
    reduction = check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    z_loss, softcap = check_z_loss_softcap(z_loss, softcap)
    token_chunk, block = _check_chunk_size(chunk_size)
    if filter_eps is None:
        filter_eps = 0.0
    elif not float(filter_eps) >= 0:
        raise ValueError(f"filter_eps must be >= 0 or None, got {filter_eps!r}")

    if linear_weight.ndim != 2:
        raise ValueError(
            f"linear_weight must be 2-D with shape (V, D) (vocabulary size, features), "
            f"got shape {tuple(linear_weight.shape)}"
        )
    n_vocab, d = linear_weight.shape
    if input.ndim == 0 or input.shape[-1] != d:
        raise ValueError(
            f"input has shape {tuple(input.shape)} and linear_weight has shape "
            f"{tuple(linear_weight.shape)}: the last axis of input (D) must equal the "
            f"second axis of linear_weight (V, D)"
        )
    if tuple(target.shape) != tuple(input.shape[:-1]):
        if tuple(target.shape) == tuple(input.shape[:-1]) + (n_vocab,):
            raise ValueError(
                "linear_cross_entropy takes class indices only: a target of class "
                f"probabilities with shape {tuple(target.shape)} is as large as the logits it "
                "avoids; use cross_entropy(input @ linear_weight.T, target) instead"
            )
        raise ValueError(
            f"target has shape {tuple(target.shape)}, expected {tuple(input.shape[:-1])}: "
            f"input's shape {tuple(input.shape)} without its feature axis (one class index "
            f"per row of input)"
        )
    n_total = n_vocab if shard is None else shard.n_classes
    if linear_bias is not None:
        check_floating(xp, linear_bias, "linear_bias")
        check_vector(linear_bias, n_vocab, "linear_bias", "linear_weight.shape[0]")
    if weight is not None:
        check_floating(xp, weight, "weight")
        check_vector(weight, n_total, "weight", "the vocabulary size V")

    dtypes = [input.dtype, linear_weight.dtype]
    out_dtype = xp.result_type(*dtypes)
    cdtype = compute_dtype(xp, out_dtype)
    ops = _ops(xp, input)
    # PyTorch multiplies half-precision matrices natively (float32 accumulation
    # inside the GEMM); elsewhere the operands are cast block by block
    gdtype = out_dtype if isinstance(ops, _TorchOps) else cdtype

    x = xp.reshape(input, (-1, d))
    flat = xp.reshape(target, (-1,))
    valid = check_index_target(xp, flat, n_total, ignore_index)
    t = xp.where(valid, xp.astype(flat, xp.int64), xp.zeros_like(flat, dtype=xp.int64))
    n_kept = int(xp.sum(xp.astype(valid, xp.int64)))
    kept = None if n_kept == x.shape[0] else xp.nonzero(valid)[0]
    if weight is not None:
        weight = xp.astype(weight, cdtype)
        t_kept = t if kept is None else xp.take(t, kept, axis=0)
        denom = xp.sum(xp.take(weight, t_kept, axis=0))
    else:
        denom = n_kept
    bias_dtype = None
    if linear_bias is not None:
        bias_dtype = linear_bias.dtype
        linear_bias = xp.astype(linear_bias, cdtype)

    itemsize = 8 if cdtype == xp.float64 else 4
    if token_chunk is None:
        token_chunk = default_chunk_size(n_vocab, itemsize, half_gemm=gdtype != cdtype)
    return _Call(
        xp=xp,
        ops=ops,
        x=x,
        w=linear_weight,
        bias=linear_bias,
        bias_dtype=bias_dtype,
        weight=weight,
        t=t,
        valid=valid,
        kept=kept,
        n_kept=n_kept,
        denom=denom,
        shape=tuple(target.shape),
        in_shape=tuple(input.shape),
        out_dtype=out_dtype,
        cdtype=cdtype,
        gdtype=gdtype,
        reduction=reduction,
        eps=eps,
        z_loss=z_loss,
        softcap=softcap,
        filter_eps=float(filter_eps),
        chunk=max(1, min(token_chunk, max(n_kept, 1))),
        block=min(block or _VOCAB_BLOCK, n_vocab),
        shard=shard,
    )


# -- the chunked forward and backward -----------------------------------------------


def _cast(xp: Any, a: Any, dtype: Any) -> Any:
    return a if a.dtype == dtype else xp.astype(a, dtype)


def _spans(n: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(i + step, n)) for i in range(0, n, step)]


@dataclass
class _Grads:
    """Gradient accumulators (``None`` for those not wanted)."""

    dx: Any  # (N, D) caller's dtype (mutable libraries) or list of row chunks
    dw: list  # per vocabulary block, (block, D) views or arrays, accumulation dtype
    dw_full: Any  # the (V, D) array the views belong to (mutable libraries)
    db: Any  # (V,) accumulation dtype


def _logits_blocks(
    c: _Call, xt: Any, t_c: Any, spans: list, flat: Any, shifted: bool
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


def _combine(c: _Call, stats: tuple) -> tuple:
    """The row statistics of the whole vocabulary from this shard's (shifted) ones.

    One all-reduce ``MAX`` of the running maxima, then one all-reduce ``SUM``
    of the sums of exponentials (rescaled to the common maximum), the target
    logits (0 where another shard has the target) and the smoothing sums.
    """
    xp, shard = c.xp, c.shard
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
    c: _Call,
    x_c: Any,
    t_c: Any,
    seed_c: Any,
    spans: list,
    flat: Any,
    grads: _Grads | None,
) -> tuple[Any, Any]:
    """Per-row losses of one chunk of counted rows; accumulates the gradients.

    ``seed_c`` scales each row's gradient (the reduction's factor, or the
    upstream gradient of ``reduction='none'``).  Returns ``(loss, dx_chunk)``.

    Blocks are vocabulary-major, ``(block, rows)``: the logits GEMM is then
    ``W_block @ x.T``, a tall matrix times a thin one, which BLAS runs
    closer to its peak than ``x @ W_block.T`` for the thin chunks that the
    memory budget allows.
    """
    xp, ops = c.xp, c.ops
    n, n_vocab = x_c.shape[0], c.n_classes
    cap, eps = c.softcap, c.eps
    store_exp = cap is None  # with softcap the capped logits stay, for tanh'
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
        stats = _combine(c, _logits_blocks(c, xt, t_c, spans, flat, shifted=True))
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
        row = seed_c
        xs = _cast(xp, x_c * _cast(xp, seed_c, x_c.dtype)[:, None], c.gdtype)
    else:  # G = row * (e - offsets * onehot), row applied to x and to dx
        row = scale * seed_c
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
        g, mk = blocks[k], maxes[k]
        blocks[k] = None
        if offsets is None and store_exp:
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
                g -= eps / n_vocab
            else:
                g -= (eps / n_vocab) * c.weight[o + j0 : o + j1, None]
        if cap is not None:
            g *= 1 - th * th
        if c.filter_eps and float(xp.max(xp.abs(g))) < c.filter_eps:
            continue
        gg = _cast(xp, g, c.gdtype)
        if dxt is not None:  # dx.T += W_block.T @ G_block
            dxt = ops.addmm_(dxt, _cast(xp, c.w[j0:j1, :], c.gdtype).T, gg)
        if grads.dw is not None:  # dW_block += G_block @ (seed * x)
            grads.dw[k] = ops.addmm_(grads.dw[k], gg, xs)
        if grads.db is not None:
            grads.db[k] = grads.db[k] + xp.matmul(g, row)
    dx_c = None if dxt is None else (dxt * row[None, :]).T
    return loss, dx_c


def _fold_offsets(c: _Call, s: Any, coef: Any, coef_p: Any, shifts: list) -> Any | None:
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


def _whole_chunk(c: _Call, flat: Any, blocks: list, spans: list) -> np.ndarray | None:
    """The ``(V, rows)`` array whose consecutive rows a NumPy chunk's blocks are.

    Folded blocks (:func:`_fold_offsets`) need no pass of their own, so the
    ``input`` gradient can take the whole chunk at once: one GEMM
    ``W.T @ G`` instead of one per block, with ``K = V`` (fewer and larger
    BLAS calls, measured faster at 224 rows).  ``None`` unless the
    blocks lie in place in ``flat`` and BLAS takes every operand as it is
    (no cast, no copy of ``linear_weight``, no ``(V, D)`` temporary).
    """
    if not isinstance(c.ops, _NumpyOps) or not isinstance(flat, np.ndarray) or not spans:
        return None
    dtype = np.dtype(c.w.dtype)
    if not (dtype == c.gdtype == c.cdtype == flat.dtype) or dtype not in _cblas():
        return None
    if _blas_layout(c.w) is None:
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


def _evaluate(
    c: _Call,
    need: tuple[bool, bool, bool],
    row_seed: Any = None,
) -> tuple[Any, Any, tuple[Any, Any, Any]]:
    """Per-row losses of the counted rows, and the gradients asked for in ``need``.

    Returns ``(loss_kept, (dinput, dlinear_weight, dlinear_bias))``, a
    gradient being ``None`` unless asked for.  They are the gradients of the
    reduced loss; with ``row_seed`` (shape ``(n_kept,)``) each row's gradient
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
        if c.n_kept and row_seed is None:
            row_seed = xp.full((c.n_kept,), 1.0, dtype=c.cdtype, device=dev)
            factor = seed(xp, row_seed, c.reduction, c.denom)
            row_seed = row_seed * factor
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
        seed_c = None if grads is None else row_seed[s0:s1]
        loss, dx_c = _chunk(c, x_c, t_c, seed_c, spans, flat, grads)
        losses.append(loss)
        if dx_c is not None:
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


def _expand(c: _Call, kept_rows: Any) -> Any:
    """Rows of the counted targets back to all ``N`` rows, zeros where ignored."""
    xp = c.xp
    if c.kept is None:
        return kept_rows
    dev = array_api_compat.device(c.x)
    pad = xp.zeros((1,) + tuple(kept_rows.shape[1:]), dtype=kept_rows.dtype, device=dev)
    table = xp.concat([kept_rows, pad], axis=0)
    # each row's position among the counted ones, or the zero row at the end
    position = xp.cumulative_sum(xp.astype(c.valid, xp.int64)) - 1
    position = xp.where(c.valid, position, xp.full_like(position, c.n_kept))
    return xp.take(table, position, axis=0)


def _value(c: _Call, loss_kept: Any) -> Any:
    """The reduced loss (or the per-row losses, zeros where ignored), caller's dtype."""
    xp = c.xp
    if c.reduction == "none":
        value = xp.reshape(_expand(c, loss_kept), c.shape)
    else:
        value = reduce(xp, loss_kept, c.reduction, c.denom)
    return restore(xp, value, c.out_dtype)


# -- public function ----------------------------------------------------------------

_DIFFERENTIABLE = ("input", "linear_weight", "linear_bias")


def linear_cross_entropy(
    input: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    reduction: str = "mean",
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | tuple[int | None, int | None] | None = None,
    filter_eps: float | None = None,
) -> Any:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias``, never forming those logits.

    The naive equivalent is ``cross_entropy(input @ linear_weight.T + linear_bias,
    target, weight, ignore_index, reduction, label_smoothing, axis=-1)``; this
    function computes the same loss and gradients a chunk of rows at a time,
    with one ``(chunk, V)`` buffer instead of the ``(N, V)`` logits, and at the
    speed of the three matrix products the gradient needs.  It is PyTorch's
    ``torch.nn.functional.linear_cross_entropy`` for class-index targets.

    Parameters
    ----------
    input : array_like, floating, shape (N, D), (D,) or (d1, ..., dK, D)
        Hidden states: one row of ``D`` features per token.
    linear_weight : array_like, floating, shape (V, D)
        The output layer's weight (``torch.nn.Linear(D, V).weight``).
    target : array_like, integer, shape (N,), () or (d1, ..., dK)
        Class index in ``[0, V)`` per row of ``input``, or ``ignore_index``.
    linear_bias : array_like, shape (V,), optional, keyword-only
        The output layer's bias.
    weight : array_like, shape (V,), optional, keyword-only
        Rescaling weight per class, as in :func:`cross_entropy`.
    reduction : {'mean', 'sum', 'none'}, default 'mean', keyword-only
        ``'mean'`` divides by the summed weight of the counted targets.
    ignore_index : int or None, default -100, keyword-only
        Target value whose rows contribute no loss, no gradient and no
        denominator; such rows are dropped before any matrix product.
    label_smoothing : float in [0, 1], default 0.0, keyword-only
        Mix the target with the uniform distribution over the ``V`` classes.
    z_loss : float, default 0.0, keyword-only
        Adds ``z_loss * logsumexp(logits)**2`` per counted row.
    softcap : float, optional, keyword-only
        Use ``softcap * tanh(logits / softcap)`` as the logits.
    chunk_size : int or (int, int), optional, keyword-only
        Rows per chunk, or ``(rows, vocabulary entries)`` per block; ``None``
        entries are chosen automatically (rows so that the ``(rows, V)``
        buffer takes at most 112 MiB: 224 rows at ``V = 128000`` in float32;
        at least 896 rows for PyTorch half-precision tensors, whose float32
        weight-gradient accumulator every chunk passes over; 4096 entries).
        Results do not depend on it beyond rounding.
    filter_eps : float, optional, keyword-only
        Gradient filtering (as in Cut Cross-Entropy): skip the two gradient
        products of a vocabulary block whose gradient entries, before the
        reduction's scaling, are all below ``filter_eps`` in magnitude.  Off
        (exact) by default; it changes only the gradients, never the loss.

    Returns
    -------
    array
        Scalar for ``'mean'`` and ``'sum'``, the target's shape for
        ``'none'``; ``input``'s dtype (float16 and bfloat16 are computed in
        float32) and array library.  On PyTorch tensors that require grad
        the result has a ``grad_fn``: ``loss.backward()`` fills ``.grad`` of
        ``input``, ``linear_weight`` and ``linear_bias``.

    Raises
    ------
    TargetIndexError
        A class index outside ``[0, V)`` that is not ``ignore_index``.
    DTypeError
        Integer ``input``/``linear_weight``/``linear_bias``/``weight`` or a
        non-integer target.
    ValueError
        Shapes that do not fit together (the message names both), class
        probabilities as target, invalid ``reduction``, ``label_smoothing``,
        ``z_loss``, ``softcap``, ``chunk_size`` or ``filter_eps``.

    See Also
    --------
    cross_entropy : the same loss on logits.

    Notes
    -----
    With logits :math:`y_n = W x_n + b` (capped to :math:`c \tanh(y_n / c)`
    with ``softcap``), :math:`\operatorname{lse}_n = \log \sum_v e^{y_{n,v}}`,
    the loss of a counted row is

    .. math::
        \ell_n = (1-\varepsilon)\, w_{t_n} (\operatorname{lse}_n - y_{n,t_n})
               + \frac{\varepsilon}{V} \sum_v w_v (\operatorname{lse}_n - y_{n,v})
               + \zeta\, \operatorname{lse}_n^2

    reduced as in :func:`cross_entropy` (``'mean'`` divides by
    :math:`\sum_n w_{t_n}`).  With :math:`G = \partial \ell / \partial y`
    (softmax minus one-hot, plus the smoothing, z-loss and softcap terms,
    scaled by the reduction), the gradients are :math:`G W` for ``input``,
    :math:`G^\top X` for ``linear_weight`` and :math:`\sum_n G_n` for
    ``linear_bias``.

    The rows are processed in chunks.  Per chunk, the logits are made block
    by block (one GEMM each) and exponentiated in place, their row sums
    accumulated; if a row sum overflows or underflows, the chunk is redone
    with a streaming (running-max) logsumexp.  Then each block becomes its
    :math:`G` and goes into the two gradient products while it is still in
    cache, so each multiply-add of the three products happens once.  A
    reduced loss gets its gradients in the same pass (a PyTorch
    ``backward`` only hands them over, scaled by the upstream gradient, and
    only once: ``retain_graph`` needs ``reduction='none'``); the backward of
    ``reduction='none'`` redoes the pass with each row's upstream gradient.
    Half precision multiplies in its own dtype (PyTorch; float32
    accumulation inside the GEMM) and accumulates the softmax, the
    statistics and the gradients in float32 (for ``linear_weight``, a
    float32 ``(V, D)`` accumulator).  Where PyTorch's
    ``F.linear_cross_entropy`` reads a K-dimensional *weight* ``(C, d1, ...,
    D)``, here the extra axes belong to ``input`` (one row per token of a
    ``(batch, sequence, D)`` array).

    Examples
    --------
    With an identity weight the logits are the input itself, ``[1, 0]``, and
    the loss is :math:`\log(1 + e^{-1})`:

    >>> import numpy as np
    >>> import crossentropy as ce
    >>> h, W = np.array([[1.0, 0.0]]), np.eye(2)
    >>> round(float(ce.linear_cross_entropy(h, W, np.array([0]))), 4)
    0.3133
    >>> round(float(np.log1p(np.exp(-1.0))), 4)
    0.3133

    The gradient with respect to ``input`` is ``(softmax - one-hot) @ W``:

    >>> loss, (dh, dW) = ce.value_and_grad(ce.linear_cross_entropy, (0, 1))(h, W, np.array([0]))
    >>> dh.round(4)
    array([[-0.2689,  0.2689]])
    """
    return _linear_cross_entropy(
        input,
        linear_weight,
        target,
        linear_bias=linear_bias,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
        filter_eps=filter_eps,
    )


def _linear_cross_entropy(
    input: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any,
    weight: Any,
    reduction: str,
    ignore_index: int | None,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    chunk_size: Any,
    filter_eps: float | None,
    shard: Any = None,
) -> Any:
    """:func:`linear_cross_entropy`, or with ``shard`` the loss of a vocabulary
    sharded over processes (``linear_weight`` holds this shard's rows; see
    :mod:`crossentropy.distributed`)."""
    options = (
        reduction,
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        chunk_size,
        filter_eps,
        shard,
    )
    if _needs_autograd(input, linear_weight, linear_bias):
        # autograd saves tensors only: a NumPy or list target becomes one
        _, (_, target, weight) = namespace(input, target, weight)
        function = _torch_function()
        return function.apply(input, linear_weight, linear_bias, target, weight, options)
    if shard is not None:
        arrays = [_detach(a) for a in (input, linear_weight, target, linear_bias, weight)]
        c = _prepare(*arrays, *options)
        return _value(c, _evaluate(c, (False, False, False))[0])
    return _linear_cross_entropy_rule(
        input,
        linear_weight,
        target,
        linear_bias=linear_bias,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
        filter_eps=filter_eps,
    )[0]


@defines_grad(linear_cross_entropy, *_DIFFERENTIABLE)
@numeric_guard
def _linear_cross_entropy_rule(
    input: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    reduction: str = "mean",
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: Any = None,
    filter_eps: float | None = None,
    wrt: tuple[str, ...] = (),
) -> tuple[Any, dict]:
    if "linear_bias" in wrt and linear_bias is None:
        raise ValueError("cannot differentiate with respect to linear_bias: it is None")
    arrays = [_detach(a) for a in (input, linear_weight, target, linear_bias, weight)]
    c = _prepare(
        *arrays, reduction, ignore_index, label_smoothing, z_loss, softcap, chunk_size, filter_eps
    )
    need = tuple(name in wrt for name in _DIFFERENTIABLE)
    loss, grads = _evaluate(c, need)
    return _value(c, loss), {n: g for n, g, w in zip(_DIFFERENTIABLE, grads, need) if w}


def _detach(a: Any) -> Any:
    return a.detach() if is_torch(a) else a


# -- PyTorch autograd ---------------------------------------------------------------


def _needs_autograd(*arrays: Any) -> bool:
    tensors = [a for a in arrays if a is not None and is_torch(a)]
    if not tensors:
        return False
    import torch

    return torch.is_grad_enabled() and any(a.requires_grad for a in tensors)


@functools.cache
def _torch_function() -> Any:
    """The ``torch.autograd.Function`` (built on first use: PyTorch is imported lazily)."""
    import torch
    from torch.autograd.function import once_differentiable

    class LinearCrossEntropy(torch.autograd.Function):
        """Scalar reductions: gradients computed in the forward and handed over
        in the backward (once: they are scaled in place).  ``'none'``: the
        backward recomputes the blocks with the upstream gradient per row."""

        @staticmethod
        def forward(ctx, input, linear_weight, linear_bias, target, weight, options):
            c = _prepare(input, linear_weight, target, linear_bias, weight, *options)
            ctx.reduction = c.reduction
            if c.reduction == "none":
                loss, _ = _evaluate(c, (False, False, False))
                ctx.save_for_backward(input, linear_weight, linear_bias, target, weight)
                ctx.options = options
            else:
                loss, grads = _evaluate(c, tuple(ctx.needs_input_grad[:3]))
                ctx.grads = list(grads)
            return _value(c, loss)

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_output):
            if ctx.reduction == "none":
                input, linear_weight, linear_bias, target, weight = ctx.saved_tensors
                c = _prepare(input, linear_weight, target, linear_bias, weight, *ctx.options)
                row_seed = grad_output.reshape(-1)
                if c.kept is not None:
                    row_seed = row_seed[c.kept]
                row_seed = row_seed.to(c.cdtype)
                _, grads = _evaluate(c, tuple(ctx.needs_input_grad[:3]), row_seed)
            else:
                grads = ctx.grads
                if grads is None:
                    raise RuntimeError(
                        "linear_cross_entropy: backward through the same scalar loss twice; "
                        "its gradients are computed in the forward and handed over once. "
                        "Use reduction='none' and sum, which recomputes them in each backward."
                    )
                ctx.grads = None
                if not bool(grad_output == 1):
                    grads = [None if g is None else g.mul_(grad_output) for g in grads]
            return (*grads, None, None, None)

    return LinearCrossEntropy
