"""Validation of a ``linear_cross_entropy`` call and the choice of its chunk sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.namespace import compute_dtype, index_dtype, namespace
from .._core.options import CrossEntropyOptions
from .._core.reduction import check_reduction
from .._core.shard import VocabShard
from .._core.validate import (
    check_floating,
    check_ignore_index,
    check_index_target,
    check_vector,
    widen_unsigned,
)
from ._arrayops import Functional, TorchOps, ops_for

__all__ = [
    "LinearCall",
    "LinearOptions",
    "check_chunk_size",
    "default_chunk_size",
    "prepare_linear_call",
]

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


@dataclass(frozen=True)
class LinearOptions:
    """The options of a ``linear_cross_entropy`` call, checked (:meth:`checked`)."""

    reduction: str = "mean"
    ignore_index: int | None = -100
    loss: CrossEntropyOptions = CrossEntropyOptions()
    chunk_size: tuple[int | None, int | None] = (None, None)  # rows, vocabulary entries
    filter_eps: float = 0.0

    @classmethod
    def checked(
        cls,
        *,
        reduction: str = "mean",
        ignore_index: int | None = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        chunk_size: Any = None,
        filter_eps: float | None = None,
    ) -> LinearOptions:
        """The options as given to ``linear_cross_entropy``, validated and converted."""
        if filter_eps is None:
            filter_eps = 0.0
        elif not float(filter_eps) >= 0:
            raise ValueError(f"filter_eps must be >= 0 or None, got {filter_eps!r}")
        return cls(
            reduction=check_reduction(reduction),
            ignore_index=check_ignore_index(ignore_index),
            loss=CrossEntropyOptions.checked(label_smoothing, z_loss, softcap),
            chunk_size=check_chunk_size(chunk_size),
            filter_eps=float(filter_eps),
        )


@dataclass
class LinearCall:
    """A validated ``linear_cross_entropy`` call: rows flattened, options checked,
    chunk sizes chosen."""

    xp: Any
    ops: Functional
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
    shard: VocabShard | None = None  # w holds this shard's rows of the vocabulary

    @property
    def offset(self) -> int:
        """The first vocabulary entry of ``w`` (0 unless sharded)."""
        return 0 if self.shard is None else self.shard.offset

    @property
    def n_classes(self) -> int:
        """The whole vocabulary's size."""
        return self.w.shape[0] if self.shard is None else self.shard.n_classes


def check_chunk_size(chunk_size: Any) -> tuple[int | None, int | None]:
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


def _check_shapes(input: Any, linear_weight: Any, target: Any) -> None:
    """Raise unless ``input (..., D)``, ``linear_weight (V, D)`` and ``target (...)`` fit."""
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


def _counted_rows(
    xp: Any, target: Any, weight: Any, n_total: int, ignore_index: int | None
) -> tuple[Any, Any, Any, int, Any]:
    """``(t, valid, kept, n_kept, denom)`` of the flattened class-index ``target``:
    indices in the library's index dtype (0 where ignored), the counted rows' mask, their indices (``None``
    when every row counts) and number, and the ``'mean'`` denominator."""
    flat, ignore_index = widen_unsigned(xp, xp.reshape(target, (-1,)), ignore_index)
    valid = check_index_target(xp, flat, n_total, ignore_index)
    index = index_dtype(xp)
    t = xp.where(valid, xp.astype(flat, index), xp.zeros_like(flat, dtype=index))
    n_kept = int(xp.sum(xp.astype(valid, index)))
    kept = None if n_kept == flat.shape[0] else xp.nonzero(valid)[0]
    if weight is None:
        return t, valid, kept, n_kept, n_kept
    t_kept = t if kept is None else xp.take(t, kept, axis=0)
    return t, valid, kept, n_kept, xp.sum(xp.take(weight, t_kept, axis=0))


def prepare_linear_call(
    input: Any,
    linear_weight: Any,
    target: Any,
    linear_bias: Any,
    weight: Any,
    options: LinearOptions,
    shard: VocabShard | None = None,
) -> LinearCall:
    """Validate the arrays of a call whose ``options`` are checked; with ``shard``,
    ``linear_weight`` holds this shard's rows and targets index the whole vocabulary."""
    xp, (input, linear_weight, target, linear_bias, weight) = namespace(
        input,
        linear_weight,
        target,
        linear_bias,
        weight,
        names=("input", "linear_weight", "target", "linear_bias", "weight"),
        required=3,
    )
    check_floating(xp, input, "input")
    check_floating(xp, linear_weight, "linear_weight")
    _check_shapes(input, linear_weight, target)
    n_vocab, d = linear_weight.shape
    n_total = n_vocab if shard is None else shard.n_classes
    if linear_bias is not None:
        check_floating(xp, linear_bias, "linear_bias")
        check_vector(linear_bias, n_vocab, "linear_bias", "linear_weight.shape[0]")
    if weight is not None:
        check_floating(xp, weight, "weight")
        check_vector(weight, n_total, "weight", "the vocabulary size V")

    out_dtype = xp.result_type(input.dtype, linear_weight.dtype)
    cdtype = compute_dtype(xp, out_dtype)
    ops = ops_for(xp, input)
    # PyTorch multiplies half-precision matrices natively (float32 accumulation
    # inside the GEMM); elsewhere the operands are cast block by block
    gdtype = out_dtype if isinstance(ops, TorchOps) else cdtype
    if weight is not None:
        weight = xp.astype(weight, cdtype)
    t, valid, kept, n_kept, denom = _counted_rows(xp, target, weight, n_total, options.ignore_index)
    bias_dtype = None if linear_bias is None else linear_bias.dtype
    if linear_bias is not None:
        linear_bias = xp.astype(linear_bias, cdtype)
    token_chunk, block = options.chunk_size
    if token_chunk is None:
        itemsize = 8 if cdtype == xp.float64 else 4
        token_chunk = default_chunk_size(n_vocab, itemsize, half_gemm=gdtype != cdtype)
    loss = options.loss
    return LinearCall(
        xp=xp,
        ops=ops,
        x=xp.reshape(input, (math.prod(input.shape[:-1]), d)),  # (-1, 0) is ambiguous at D=0
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
        reduction=options.reduction,
        eps=loss.label_smoothing,
        z_loss=loss.z_loss,
        softcap=loss.softcap,
        filter_eps=options.filter_eps,
        chunk=max(1, min(token_chunk, max(n_kept, 1))),
        block=max(1, min(block or _VOCAB_BLOCK, n_vocab)),  # V = 0: no block, no step of 0
        shard=shard,
    )
