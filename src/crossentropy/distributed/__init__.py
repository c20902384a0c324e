"""Vocabulary-parallel cross-entropy over ``torch.distributed``: ``vocab_parallel_*``.

When a model's output layer is sharded over the vocabulary (tensor
parallelism, as in Megatron-LM), each process holds the logits of a
contiguous slice of the classes, ``logits[..., offset : offset + width]``, or
the matching rows of the output layer's weight.  The loss and its gradients
are computed here without gathering the logits: per row, the processes agree
on the maximum (one all-reduce ``MAX``), then on the sum of the exponentials,
the target logit (from the process that owns the target) and, for label
smoothing, the sum of the logits (one fused all-reduce ``SUM``).  Each
process's logits gradient is then local.  Communication is ``O(N)`` floats per
call, whatever the vocabulary size.

Before computing, the processes agree on the call (``_agreement``): one
all-gather of a few integers (shard width, ``validate``, grad mode, which
arguments require grad, a checksum of the options, shapes and dtypes), then,
unless ``validate=False``, one small ``all_gather_object`` of the whole
description (digests of the target and class weights included).  A call that
would give wrong results or hang (a different batch size, target, option or
grad mode on one process, a shard of the wrong width, targets out of range)
raises the same clear error on every process instead.

PyTorch is needed (imported on first use); the collectives are
``torch.distributed``'s, so any backend works: gloo for CPU tensors, nccl for
CUDA tensors (each process must have called ``torch.cuda.set_device``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._core.namespace import is_torch, namespace, restore
from .._core.options import CrossEntropyOptions
from .._core.prepared import prepare_class_call, to_caller_layout
from .._core.reduction import Reduction, check_normalizer, grad_scale, reduce
from .._core.shard import VocabShard
from .._core.softmax_ce import cross_entropy_rows
from .._core.types import Array, ArrayLike
from .._core.validate import (
    check_floating,
    check_ignore_index,
    check_label_smoothing,
    class_axis,
    counted_mask,
    widen_unsigned,
)
from ..linear import LinearOptions, default_chunk_size, sharded_linear_cross_entropy
from ._agreement import Layout, call_facts
from ._agreement import layout as agreed_layout

if TYPE_CHECKING:
    import torch

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

_SMOOTHING_MODES = ("pytorch", "megatron")
_COMMON_OPTIONS = (
    "ignore_index",
    "reduction",
    "label_smoothing",
    "label_smoothing_mode",
    "z_loss",
    "softcap",
)


@dataclass(frozen=True)
class _ShardedCall:
    """What the vocabulary-parallel ``autograd.Function`` needs besides the tensors."""

    ignore_index: int
    reduction: str
    axis: int | None
    options: CrossEntropyOptions
    shard: VocabShard


def _options(common: tuple, **more: Any) -> dict:
    """The options by name: the values of ``_COMMON_OPTIONS``, then ``more``."""
    return dict(zip(_COMMON_OPTIONS, common, strict=True), **more)


def _fact(normalizer: Any) -> Any:
    """A normalizer as the ranks compare it (a 0-d tensor by its value)."""
    return None if normalizer is None else repr(float(normalizer))


def _requires_grad(x: Any) -> bool:
    """True if autograd will differentiate with respect to ``x`` in this call."""
    import torch

    return torch.is_grad_enabled() and bool(getattr(x, "requires_grad", False))


def _counted(target: Any, ignore_index: int | None) -> int:
    """The number of target entries that are not ``ignore_index``."""
    xp, (target,) = namespace(target)
    target, ignore_index = widen_unsigned(xp, target, ignore_index)
    return int(xp.sum(xp.astype(counted_mask(xp, target, ignore_index), xp.int64)))


def _smoothing(label_smoothing: float, mode: str, n_classes: int) -> float:
    """PyTorch's ``label_smoothing`` as it is, or Megatron's converted to PyTorch's.

    Megatron-LM / NeMo put ``1 - a`` on the target and ``a / (V - 1)`` on every
    other class; that is PyTorch's smoothing with ``a * V / (V - 1)``.
    """
    eps = check_label_smoothing(label_smoothing)
    if mode == "pytorch" or eps == 0:
        return eps
    if n_classes < 2:
        raise ValueError("label_smoothing_mode='megatron' needs at least 2 classes")
    converted = eps * n_classes / (n_classes - 1)
    if converted > 1:
        raise ValueError(
            f"label_smoothing={label_smoothing!r} with label_smoothing_mode='megatron' must be "
            f"at most (V - 1) / V = {(n_classes - 1) / n_classes!r} for V={n_classes} classes"
        )
    return converted


def _check_mode(mode: str) -> str:
    if mode not in _SMOOTHING_MODES:
        raise ValueError(f"label_smoothing_mode must be 'pytorch' or 'megatron', got {mode!r}")
    return mode


def _check_tensor(x: Any, name: str) -> None:
    if not is_torch(x):
        raise TypeError(
            f"{name} must be a torch.Tensor (vocabulary-parallel losses run on "
            f"torch.distributed), got {type(x).__name__}"
        )


def _shard(
    layout: Layout, weight: Any, group: Any, label_smoothing: float, mode: str
) -> tuple[VocabShard, float]:
    """The shard descriptor with its collectives over ``group``, and the
    label smoothing in PyTorch's form."""
    import torch
    import torch.distributed as dist

    def all_max(m: Any) -> Any:
        m = m.clone(memory_format=torch.contiguous_format)  # the caller keeps its own
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        return m

    def all_sum(*rows: Any) -> tuple:
        present = [r for r in rows if r is not None]
        stacked = torch.stack(present)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM, group=group)
        it = iter(stacked.unbind(0))
        return tuple(None if r is None else next(it) for r in rows)

    def all_sum_input_grad(g: Any) -> Any:
        g = g.contiguous()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=group)
        return g

    n = layout.n_classes
    weight_sum = n if weight is None else torch.sum(weight.to(torch.float64)).item()
    shard = VocabShard(
        offset=layout.offset,
        width=layout.sizes[layout.rank],
        n_classes=n,
        weight_sum=weight_sum,
        all_max=all_max,
        all_sum=all_sum,
        all_sum_input_grad=all_sum_input_grad,
    )
    return shard, _smoothing(label_smoothing, _check_mode(mode), n)


# -- vocab_parallel_cross_entropy ---------------------------------------------------


def vocab_parallel_cross_entropy(
    logits_shard: torch.Tensor,
    target: Array | ArrayLike,
    *,
    group: Any = None,
    weight: Array | ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    axis: int | None = None,
    label_smoothing_mode: Literal["pytorch", "megatron"] = "pytorch",
    shard_sizes: Sequence[int] | None = None,
    validate: bool = True,
    normalizer: float | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of logits sharded over the vocabulary across processes.

    Equal to ``cross_entropy(torch.cat(all_shards, dim=class_axis), target,
    ...)`` (value and gradients), without gathering the shards: each rank
    passes its own slice of the classes and receives the same loss.

    Parameters
    ----------
    logits_shard : torch.Tensor, floating, shape (N, C_r), (C_r,) or (N, C_r, d1, ..., dK)
        This rank's contiguous slice of the logits along the class axis (axis
        1, or 0 for unbatched input, or ``axis``).  Ranks hold consecutive
        slices in rank order; widths may differ.
    target : torch.Tensor, integer, shape (N,), () or (N, d1, ..., dK)
        Class indices into the whole vocabulary ``[0, C)``, ``C = sum(C_r)``,
        or ``ignore_index``.  The same on every rank.
    group : ProcessGroup, optional, keyword-only
        The processes sharing the vocabulary (default: the whole world).
    weight : torch.Tensor, shape (C,), optional, keyword-only
        Rescaling weight per class of the *whole* vocabulary, the same on
        every rank.
    ignore_index, reduction, label_smoothing, z_loss, softcap, axis
        As in :func:`crossentropy.cross_entropy`.
    label_smoothing_mode : {'pytorch', 'megatron'}, default 'pytorch', keyword-only
        ``'pytorch'``: the target gets ``1 - eps + eps / C`` and every class
        ``eps / C`` (``torch.nn.functional.cross_entropy``).  ``'megatron'``:
        the target gets ``1 - eps`` and every other class ``eps / (C - 1)``
        (Megatron-LM and NeMo); the same as ``'pytorch'`` with
        ``eps * C / (C - 1)``.
    shard_sizes : sequence of int, optional, keyword-only
        Every rank's shard width, in rank order.  Without it the widths are
        exchanged (one small collective).  With it a rank whose shard has
        another width is an error.
    validate : bool, default True, keyword-only
        Exchange a description of the call between the ranks first (one
        ``all_gather_object``) and raise the same error on every rank when
        they disagree: batch shape, target values (by digest), dtypes,
        options, class weights, shard widths.  ``False`` saves that exchange
        and the digests; what changes the sequence of collectives (``validate``
        itself, grad mode, which arguments require grad, the options, shapes
        and dtypes, by checksum) is still compared through one all-gather of
        a few integers, which every call makes.  With ``False``, targets that
        differ between ranks give wrong results.
    normalizer : float > 0, optional, keyword-only
        With ``reduction='mean'`` only: divide the summed losses by it instead
        of the summed weight of the counted targets (the count of a whole
        step's tokens, for gradient accumulation; see
        :func:`crossentropy.cross_entropy`).  The same on every rank.

    Returns
    -------
    torch.Tensor
        The loss (scalar for ``'mean'``/``'sum'``, the target's shape for
        ``'none'``), identical on every rank, ``logits_shard``'s dtype.  If
        ``logits_shard`` requires grad, ``backward()`` fills its gradient:
        the rows of the full gradient that belong to this shard (no
        communication in the backward).

    Raises
    ------
    RuntimeError
        No initialised process group, or another rank's call failed (the
        message names the rank and its error).
    ValueError
        The ranks disagree (the message lists every rank's value), a shard
        width that contradicts ``shard_sizes``, or an invalid option.
    TargetIndexError
        A target outside ``[0, C)`` of the whole vocabulary (on every rank).
    TypeError
        An argument that is not a torch tensor; integer logits (``DTypeError``).

    See Also
    --------
    crossentropy.cross_entropy : the same loss on unsharded logits.
    vocab_parallel_linear_cross_entropy : the same from hidden states and a
        sharded output layer, without any logits.

    Notes
    -----
    Per row, with :math:`m` the all-reduced maximum, each rank computes
    :math:`s_r = \sum_{c \in r} e^{x_c - m}`, the target logit if it owns the
    target (0 otherwise) and, for smoothing, :math:`\sum_{c \in r} w_c (x_c -
    m)`; one all-reduce adds them up, giving :math:`\operatorname{lse} = m +
    \log \sum_r s_r` and the loss of :func:`crossentropy.cross_entropy`.  The
    gradient of the shard is :math:`\operatorname{softmax}(x)_c` minus the
    one-hot entries it owns (with the smoothing, z-loss and softcap terms),
    computed in the forward and kept for the backward.

    Examples
    --------
    With two processes (``torchrun --nproc-per-node 2 script.py``)::

        import torch, torch.distributed as dist
        from crossentropy.distributed import vocab_parallel_cross_entropy

        dist.init_process_group("gloo")
        rank = dist.get_rank()
        torch.manual_seed(0)                      # same logits everywhere
        logits = torch.randn(8, 1000)
        target = torch.randint(0, 1000, (8,))
        shard = logits[:, rank * 500 : (rank + 1) * 500].requires_grad_()
        loss = vocab_parallel_cross_entropy(shard, target)
        loss.backward()                           # shard.grad: this rank's columns
        # loss == torch.nn.functional.cross_entropy(logits, target) on both ranks
    """

    common = (ignore_index, reduction, label_smoothing, label_smoothing_mode, z_loss, softcap)

    def facts() -> tuple[int, dict, Callable[[], dict]]:
        for name, x in (("logits_shard", logits_shard), ("target", target), ("weight", weight)):
            if x is not None:
                _check_tensor(x, name)
        _check_mode(label_smoothing_mode)
        check_ignore_index(ignore_index)
        check_normalizer(normalizer, reduction)
        check_floating(namespace(logits_shard)[0], logits_shard, "logits_shard")
        ax = class_axis(logits_shard.ndim, axis, "logits_shard")
        batch = tuple(logits_shard.shape[:ax]) + tuple(logits_shard.shape[ax + 1 :])
        options = _options(common, axis=axis, normalizer=_fact(normalizer))
        cheap, costly = call_facts(target, weight, options)
        return (
            int(logits_shard.shape[ax]),
            {
                "batch shape (logits_shard's shape without the class axis)": batch,
                "logits dtype": str(logits_shard.dtype),
                **cheap,
            },
            costly,
        )

    fn = "vocab_parallel_cross_entropy"
    grads = {"logits_shard": _requires_grad(logits_shard)}
    layout = agreed_layout(
        fn, group, shard_sizes, validate, facts, grads, lambda: logits_shard.device
    )
    shard, eps = _shard(layout, weight, group, label_smoothing, label_smoothing_mode)
    options = CrossEntropyOptions.checked(
        eps, z_loss, softcap, normalizer=check_normalizer(normalizer, reduction)
    )
    call = _ShardedCall(ignore_index, reduction, axis, options, shard)
    return _vocab_parallel_function().apply(logits_shard, target, weight, call)


@functools.cache
def _vocab_parallel_function() -> Any:
    """The ``torch.autograd.Function`` (built on first use: PyTorch is imported lazily)."""
    import torch
    from torch.autograd.function import once_differentiable

    class VocabParallelCrossEntropy(torch.autograd.Function):
        """The forward computes the shard's gradient of each row's loss (the
        collectives happen there); the backward only scales it."""

        @staticmethod
        def forward(ctx: Any, logits_shard: Any, target: Any, weight: Any, call: Any) -> Any:
            b = prepare_class_call(
                logits_shard,
                target,
                weight,
                reduction=call.reduction,
                ignore_index=call.ignore_index,
                axis=call.axis,
                shard=call.shard,
            )
            need = bool(ctx.needs_input_grad[0])
            loss, denom, d_input, _ = cross_entropy_rows(b, call.options, need, call.shard)
            if need:
                ctx.d_input = d_input
                ctx.scale = grad_scale(b.xp, loss, b.reduction, denom)
                ctx.batch = dataclasses.replace(b, x=None, target=None)
            return restore(b.xp, reduce(b.xp, loss, b.reduction, denom), b.dtype)

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad_output: Any) -> tuple:
            s = ctx.scale * grad_output.to(ctx.d_input.dtype)
            return to_caller_layout(ctx.batch, ctx.d_input * s[..., None]), None, None, None

    return VocabParallelCrossEntropy


# -- vocab_parallel_linear_cross_entropy --------------------------------------------


def vocab_parallel_linear_cross_entropy(
    input: torch.Tensor,
    weight_shard: torch.Tensor,
    target: Array | ArrayLike,
    *,
    group: Any = None,
    linear_bias: torch.Tensor | None = None,
    weight: Array | ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | tuple[int | None, int | None] | None = None,
    label_smoothing_mode: Literal["pytorch", "megatron"] = "pytorch",
    shard_sizes: Sequence[int] | None = None,
    validate: bool = True,
    normalizer: float | None = None,
) -> torch.Tensor:
    r"""Cross-entropy of ``input @ W.T + b`` with ``W`` sharded over the vocabulary.

    Equal to ``linear_cross_entropy(input, torch.cat(all_weight_shards),
    target, linear_bias=torch.cat(all_bias_shards), ...)`` (value and
    gradients): each rank multiplies the replicated ``input`` by its own rows
    of the output layer, a chunk of tokens at a time, and never holds logits
    beyond one ``(chunk, V_r)`` block.

    Parameters
    ----------
    input : torch.Tensor, floating, shape (N, D) or (..., D)
        Hidden states, the same on every rank (replicated).
    weight_shard : torch.Tensor, floating, shape (V_r, D)
        This rank's consecutive rows of the output layer's ``(V, D)`` weight,
        in rank order; ``V = sum(V_r)``.
    target : torch.Tensor, integer, shape ``input.shape[:-1]``
        Class indices into the whole vocabulary, or ``ignore_index``.
    group : ProcessGroup, optional, keyword-only
        The processes sharing the vocabulary (default: the whole world).
    linear_bias : torch.Tensor, shape (V_r,), optional, keyword-only
        This rank's slice of the output layer's bias.
    weight : torch.Tensor, shape (V,), optional, keyword-only
        Rescaling weight per class of the whole vocabulary (same on every rank).
    ignore_index, reduction, label_smoothing, z_loss, softcap, chunk_size
        As in :func:`crossentropy.linear_cross_entropy`; the default chunk is
        the single-process one for the whole vocabulary (the same rows on every
        rank, and a ``(chunk, V_r)`` buffer that shrinks with the shard).
    label_smoothing_mode, shard_sizes, validate, normalizer
        As in :func:`vocab_parallel_cross_entropy`.

    Returns
    -------
    torch.Tensor
        The loss, identical on every rank, in ``input``'s dtype.  With
        autograd, ``input.grad`` is the whole gradient (the ranks' partial
        products are all-reduced) and ``weight_shard.grad`` /
        ``linear_bias.grad`` this rank's rows.

    Raises
    ------
    RuntimeError, ValueError, TargetIndexError, TypeError
        As in :func:`vocab_parallel_cross_entropy`; also an ``input`` whose
        last axis is not ``weight_shard``'s second.

    See Also
    --------
    crossentropy.linear_cross_entropy : the single-process version.
    vocab_parallel_cross_entropy : the same on sharded logits.

    Notes
    -----
    The per-chunk row statistics (running maximum, sum of exponentials,
    target logit, smoothing sum) are combined with one all-reduce ``MAX``
    and one all-reduce ``SUM`` per chunk of tokens; the gradient of
    ``input`` gets one all-reduce ``SUM`` of ``(N, D)``.  ``input`` is not
    compared across ranks (it may be large): it must be replicated.
    """
    import torch

    common = (ignore_index, reduction, label_smoothing, label_smoothing_mode, z_loss, softcap)

    def facts() -> tuple[int, dict, Callable[[], dict]]:
        named = (
            ("input", input),
            ("weight_shard", weight_shard),
            ("target", target),
            ("linear_bias", linear_bias),
            ("weight", weight),
        )
        for name, x in named:
            if x is not None:
                _check_tensor(x, name)
        _check_mode(label_smoothing_mode)
        check_ignore_index(ignore_index)
        check_normalizer(normalizer, reduction)
        xp = namespace(input)[0]
        check_floating(xp, input, "input")
        check_floating(xp, weight_shard, "weight_shard")
        if weight_shard.ndim != 2:
            raise ValueError(
                f"weight_shard must be 2-D with shape (V_r, D), got shape "
                f"{tuple(weight_shard.shape)}"
            )
        width = int(weight_shard.shape[0])
        if linear_bias is not None and tuple(linear_bias.shape) != (width,):
            raise ValueError(
                f"linear_bias must have shape (V_r,) = ({width},), this rank's shard width, "
                f"got shape {tuple(linear_bias.shape)}"
            )
        options = _options(common, chunk_size=chunk_size, normalizer=_fact(normalizer))
        cheap, costly = call_facts(target, weight, options)
        return (
            width,
            {
                "input shape": tuple(input.shape),
                "weight_shard's feature size D": int(weight_shard.shape[1]),
                "dtypes": (str(input.dtype), str(weight_shard.dtype)),
                "linear_bias given": linear_bias is not None,
                # the number of chunks, and so of collectives, follows from it
                "number of counted rows (target != ignore_index)": _counted(target, ignore_index),
                **cheap,
            },
            costly,
        )

    fn = "vocab_parallel_linear_cross_entropy"
    grads = {
        name: _requires_grad(x)
        for name, x in (
            ("input", input),
            ("weight_shard", weight_shard),
            ("linear_bias", linear_bias),
        )
    }
    layout = agreed_layout(fn, group, shard_sizes, validate, facts, grads, lambda: input.device)
    shard, eps = _shard(layout, weight, group, label_smoothing, label_smoothing_mode)
    rows = chunk_size[0] if isinstance(chunk_size, (tuple, list)) else chunk_size
    block = chunk_size[1] if isinstance(chunk_size, (tuple, list)) else None
    if rows is None:  # the same chunks on every rank: they meet in each chunk's collectives
        # the single-process chunk for the whole vocabulary: the same on every rank, and
        # a (chunk, V_r) buffer that shrinks with the shard
        dtype = torch.promote_types(input.dtype, weight_shard.dtype)
        half = dtype in (torch.float16, torch.bfloat16)
        rows = default_chunk_size(layout.n_classes, 8 if dtype == torch.float64 else 4, half)
    options = LinearOptions.checked(
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=eps,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=(rows, block),
        normalizer=normalizer,
    )
    return sharded_linear_cross_entropy(
        input, weight_shard, target, linear_bias, weight, options, shard
    )
