"""Validation of a ``linear_cross_entropy`` call and the choice of its chunk sizes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.errors import DTypeError
from .._core.namespace import (
    compute_dtype,
    device,
    index_dtype,
    is_floating,
    is_integer,
    namespace,
)
from .._core.options import CrossEntropyOptions
from .._core.reduction import check_normalizer, check_reduction
from .._core.shard import VocabShard
from .._core.validate import (
    check_floating,
    check_ignore_index,
    check_index_target,
    check_vector,
    widen_unsigned,
)
from ._arrayops import Functional, TorchOps, ops_for
from ._softmax import Softmax

__all__ = [
    "Head",
    "LinearCall",
    "LinearOptions",
    "check_chunk_size",
    "check_head",
    "chunk_rows",
    "counted_rows",
    "default_chunk_size",
    "gemm_dtypes",
    "prepare_distill_call",
    "prepare_linear_call",
    "rule_options",
    "scaled_bias",
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
        temperature: float = 1.0,
        normalizer: Any = None,
    ) -> LinearOptions:
        """The options as given to ``linear_cross_entropy``, validated and converted."""
        if filter_eps is None:
            filter_eps = 0.0
        elif not float(filter_eps) >= 0:
            raise ValueError(f"filter_eps must be >= 0 or None, got {filter_eps!r}")
        reduction = check_reduction(reduction)
        return cls(
            reduction=reduction,
            ignore_index=check_ignore_index(ignore_index),
            loss=CrossEntropyOptions.checked(
                label_smoothing, z_loss, softcap, temperature, check_normalizer(normalizer, reduction)
            ),
            chunk_size=check_chunk_size(chunk_size),
            filter_eps=float(filter_eps),
        )

    def with_denominator(self, denominator: Any) -> LinearOptions:
        """These options with ``'mean'`` dividing by ``denominator`` (unchecked:
        a K-dimensional weight's positions share the whole call's)."""
        return dataclasses.replace(self, loss=dataclasses.replace(self.loss, normalizer=denominator))


_OPTION_NAMES = (
    "reduction", "ignore_index", "label_smoothing", "z_loss", "softcap", "chunk_size",
    "filter_eps", "temperature", "normalizer",
)  # fmt: skip


def rule_options(arguments: dict, differentiable: tuple) -> tuple[LinearOptions, tuple]:
    """``(options, need)`` of a gradient rule's call, from its arguments (``locals()``
    on entry): the options checked, and which of the ``differentiable`` argument
    names ``wrt`` asks for."""
    wrt = arguments["wrt"]
    if "linear_bias" in wrt and arguments["linear_bias"] is None:
        raise ValueError("cannot differentiate with respect to linear_bias: it is None")
    options = LinearOptions.checked(**{name: arguments[name] for name in _OPTION_NAMES})
    return options, tuple(name in wrt for name in differentiable)


@dataclass
class LinearCall:
    """A validated ``linear_cross_entropy`` call: rows flattened, options checked,
    chunk sizes chosen."""

    xp: Any
    ops: Functional
    x: Any  # (N, D) input rows, caller's dtype
    w: Any  # (V, D) linear weight, caller's dtype
    bias: Any  # (V,) compute dtype, divided by the temperature, or None
    bias_dtype: Any  # the caller's linear_bias dtype
    weight: Any  # (V,) class weights, compute dtype, or None
    t: Any  # (N,) int64 targets, ignored entries replaced by 0; or (N, V) probabilities
    probs: bool  # probability targets
    valid: Any  # (N,) bool, the rows that count
    kept: Any  # (n,) indices of the counted rows, or None when every row counts
    n_kept: int
    denom: Any  # the 'mean' denominator: the summed weight of the counted targets
    shape: tuple  # the per-row losses' shape (the target's, without probabilities' V)
    in_shape: tuple  # input shape, for its gradient
    out_dtype: Any  # dtype of the loss
    cdtype: Any  # compute dtype (float32 for half precision)
    gdtype: Any  # GEMM dtype
    reduction: str
    eps: float
    z_loss: float
    softcap: float | None  # divided by the temperature
    inv_t: float  # 1 / temperature: the logits are (x / T) W^T + b / T
    filter_eps: float
    chunk: int
    block: int
    objective: Any  # what a chunk computes: _softmax.Softmax, _divergence.Divergence
    shard: VocabShard | None = None  # w holds this shard's rows of the vocabulary
    teacher: Any = None  # distillation: the teacher's head (Head)
    t_dtype: Any = None  # the caller's dtype of probability targets

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


def check_head(input: Any, linear_weight: Any, names: tuple[str, str] = ("input", "linear_weight")) -> None:
    """Raise unless ``input (..., D)`` and ``linear_weight (V, D)`` fit."""
    x_name, w_name = names
    if linear_weight.ndim != 2:
        raise ValueError(
            f"{w_name} must be 2-D with shape (V, D) (vocabulary size, features), "
            f"got shape {tuple(linear_weight.shape)}"
        )
    d = linear_weight.shape[1]
    if input.ndim == 0 or input.shape[-1] != d:
        raise ValueError(
            f"{x_name} has shape {tuple(input.shape)} and {w_name} has shape "
            f"{tuple(linear_weight.shape)}: the last axis of {x_name} (D) must equal the "
            f"second axis of {w_name} (V, D)"
        )


def _target_kind(xp: Any, input: Any, linear_weight: Any, target: Any) -> bool:
    """True for class probabilities ``(..., V)``, False for class indices ``(...)``,
    after checking that ``target`` fits ``input (..., D)`` and ``linear_weight (V, D)``."""
    check_head(input, linear_weight)
    batch = tuple(input.shape[:-1])
    shape = tuple(target.shape)
    if shape == batch + (linear_weight.shape[0],) and shape != batch:
        if not is_floating(xp, target):
            raise DTypeError(
                f"target has shape {shape}, input's batch shape {batch} and the vocabulary "
                f"size V={linear_weight.shape[0]}: class probabilities, which must be floating, "
                f"got dtype {target.dtype}"
            )
        return True
    if shape != batch:
        raise ValueError(
            f"target has shape {shape}, expected {batch} (input's shape {tuple(input.shape)} "
            f"without its feature axis: one class index per row of input) or {batch + (linear_weight.shape[0],)} "
            f"(class probabilities over the V={linear_weight.shape[0]} classes)"
        )
    if not is_integer(xp, target):
        raise DTypeError(
            f"target of shape {shape} must hold integer class indices (any integer dtype), "
            f"got dtype {target.dtype}; class probabilities have shape {batch + (linear_weight.shape[0],)}"
        )
    return False


def counted_rows(
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


def _probability_rows(xp: Any, target: Any, n_vocab: int, cdtype: Any) -> tuple:
    """``(t, valid, kept, n_kept, denom)`` of class-probability targets: every row
    counts, and ``'mean'`` divides by the number of rows (as ``cross_entropy``)."""
    t = xp.astype(xp.reshape(target, (-1, n_vocab)), cdtype, copy=False)
    n = t.shape[0]
    valid = xp.ones((n,), dtype=xp.bool, device=device(t))
    return t, valid, None, n, n


def gemm_dtypes(xp: Any, ops: Any, *arrays: Any) -> tuple[Any, Any, Any]:
    """``(out_dtype, cdtype, gdtype)``: the loss's dtype, the compute dtype, the GEMMs' dtype."""
    out_dtype = xp.result_type(*(a.dtype for a in arrays))
    cdtype = compute_dtype(xp, out_dtype)
    # PyTorch multiplies half-precision matrices natively (float32 accumulation
    # inside the GEMM); elsewhere the operands are cast block by block
    return out_dtype, cdtype, out_dtype if isinstance(ops, TorchOps) else cdtype


def scaled_bias(xp: Any, bias: Any, cdtype: Any, inv_t: float) -> Any:
    if bias is None:
        return None
    bias = xp.astype(bias, cdtype)
    return bias if inv_t == 1 else bias * inv_t


def chunk_rows(xp: Any, options: Any, n_vocab: int, dtypes: tuple, n_kept: int) -> int:
    """Rows per chunk: the caller's, or the default (each of the objective's
    logits buffers then takes at most 112 MiB: thinner chunks would slow the GEMMs)."""
    token_chunk = options.chunk_size[0]
    if token_chunk is None:
        _, cdtype, gdtype = dtypes
        itemsize = 8 if cdtype == xp.float64 else 4
        token_chunk = default_chunk_size(n_vocab, itemsize, half_gemm=gdtype != cdtype)
    return max(1, min(token_chunk, max(n_kept, 1)))


def vocab_block(options: Any, n_vocab: int) -> int:
    """Vocabulary entries per block: the caller's or the default, at most ``V``
    (and 1 for ``V = 0``: no block, but no loop step of 0)."""
    return max(1, min(options.chunk_size[1] or _VOCAB_BLOCK, n_vocab))


def prepare_linear_call(
    input: Any,
    linear_weight: Any,
    target: Any,
    linear_bias: Any,
    weight: Any,
    options: LinearOptions,
    shard: VocabShard | None = None,
    objective: Any = None,
) -> LinearCall:
    """Validate the arrays of a call whose ``options`` are checked; with ``shard``,
    ``linear_weight`` holds this shard's rows and targets index the whole
    vocabulary.  ``objective`` defaults to :class:`._softmax.Softmax`."""
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
    probs = _target_kind(xp, input, linear_weight, target)
    n_vocab, d = linear_weight.shape
    n_total = n_vocab if shard is None else shard.n_classes
    if probs and shard is not None:
        raise ValueError("class-probability targets need the whole vocabulary: not with a shard")
    if linear_bias is not None:
        check_floating(xp, linear_bias, "linear_bias")
        check_vector(linear_bias, n_vocab, "linear_bias", "linear_weight.shape[0]")
    if weight is not None:
        check_floating(xp, weight, "weight")
        check_vector(weight, n_total, "weight", "the vocabulary size V")

    ops = ops_for(xp, input)
    dtypes = gemm_dtypes(xp, ops, input, linear_weight)
    cdtype = dtypes[1]
    if weight is not None:
        weight = xp.astype(weight, cdtype)
    if probs:
        t, valid, kept, n_kept, denom = _probability_rows(xp, target, n_vocab, cdtype)
    else:
        t, valid, kept, n_kept, denom = counted_rows(
            xp, target, weight, n_total, options.ignore_index
        )
    loss = options.loss
    if loss.normalizer is not None:
        denom = loss.normalizer
    inv_t, tempered = loss.tempered()
    objective = Softmax() if objective is None else objective
    return LinearCall(
        xp=xp,
        ops=ops,
        x=_rows(xp, input),
        w=linear_weight,
        bias=scaled_bias(xp, linear_bias, cdtype, inv_t),
        bias_dtype=None if linear_bias is None else linear_bias.dtype,
        weight=weight,
        t=t,
        probs=probs,
        valid=valid,
        kept=kept,
        n_kept=n_kept,
        denom=denom,
        shape=tuple(target.shape[:-1]) if probs else tuple(target.shape),
        in_shape=tuple(input.shape),
        out_dtype=dtypes[0],
        cdtype=cdtype,
        gdtype=dtypes[2],
        reduction=options.reduction,
        eps=loss.label_smoothing,
        z_loss=loss.z_loss,
        softcap=tempered.softcap,
        inv_t=inv_t,
        filter_eps=options.filter_eps,
        chunk=chunk_rows(xp, options, n_vocab, dtypes, n_kept),
        block=vocab_block(options, n_vocab),
        objective=objective,
        shard=shard,
        t_dtype=target.dtype if probs else None,
    )


@dataclass(frozen=True)
class Head:
    """The frozen second head of a distillation call: rows, weight and bias."""

    x: Any  # (N, D_t) input rows, caller's dtype
    w: Any  # (V, D_t) weight, caller's dtype
    bias: Any  # (V,) compute dtype, divided by the temperature, or None


def prepare_distill_call(
    student: tuple, teacher: tuple, target: Any, options: LinearOptions, objective: Any
) -> LinearCall:
    """Validate a distillation call: ``student`` and ``teacher`` are ``(input,
    weight, bias)`` (``bias`` may be ``None``), ``target`` ``None`` or class
    indices whose ``ignore_index`` entries mark the rows that do not count."""
    names = (("student_input", "student_weight", "student_bias"),
             ("teacher_input", "teacher_weight", "teacher_bias"))  # fmt: skip
    xp, (xs, ws, xt, wt, bs, bt, target) = namespace(
        student[0], student[1], teacher[0], teacher[1], student[2], teacher[2], target,
        names=(*names[0][:2], *names[1][:2], names[0][2], names[1][2], "target"), required=4,
    )  # fmt: skip
    for (x, w, b), (nx, nw, nb) in zip(((xs, ws, bs), (xt, wt, bt)), names):
        check_floating(xp, x, nx)
        check_floating(xp, w, nw)
        check_head(x, w, (nx, nw))
        if b is not None:
            check_floating(xp, b, nb)
            check_vector(b, w.shape[0], nb, f"{nw}.shape[0]")
    if wt.shape[0] != ws.shape[0] or tuple(xt.shape[:-1]) != tuple(xs.shape[:-1]):
        raise ValueError(
            f"student and teacher must share the tokens and the vocabulary: student_input "
            f"{tuple(xs.shape)} and student_weight {tuple(ws.shape)} against teacher_input "
            f"{tuple(xt.shape)} and teacher_weight {tuple(wt.shape)} (the leading axes of "
            f"the inputs and the first axes of the weights must be equal)"
        )
    batch, n_vocab = tuple(xs.shape[:-1]), ws.shape[0]
    if target is None:
        target = xp.zeros(batch, dtype=index_dtype(xp), device=device(xs))
    elif tuple(target.shape) != batch:
        raise ValueError(
            f"target has shape {tuple(target.shape)}, expected {batch}: the inputs' shape "
            f"without their feature axis (one class index, or ignore_index, per token)"
        )
    ops = ops_for(xp, xs)
    dtypes = gemm_dtypes(xp, ops, xs, ws, xt, wt)
    t, valid, kept, n_kept, denom = counted_rows(xp, target, None, n_vocab, options.ignore_index)
    loss = options.loss
    inv_t = 1.0 / loss.temperature
    return LinearCall(
        xp=xp, ops=ops, x=_rows(xp, xs), w=ws,
        bias=scaled_bias(xp, bs, dtypes[1], inv_t), bias_dtype=None if bs is None else bs.dtype,
        weight=None, t=t, probs=False, valid=valid, kept=kept, n_kept=n_kept,
        denom=denom if loss.normalizer is None else loss.normalizer,
        shape=batch, in_shape=tuple(xs.shape), out_dtype=dtypes[0], cdtype=dtypes[1],
        gdtype=dtypes[2], reduction=options.reduction, eps=0.0, z_loss=0.0, softcap=None,
        inv_t=inv_t, filter_eps=0.0, chunk=chunk_rows(xp, options, n_vocab, dtypes, n_kept),
        block=vocab_block(options, n_vocab), objective=objective,
        teacher=Head(_rows(xp, xt), wt, scaled_bias(xp, bt, dtypes[1], inv_t)),
    )  # fmt: skip


def _rows(xp: Any, input: Any) -> Any:
    """``input (..., D)`` as ``(N, D)`` rows (``(-1, 0)`` would be ambiguous at ``D = 0``)."""
    return xp.reshape(input, (math.prod(input.shape[:-1]), input.shape[-1]))
