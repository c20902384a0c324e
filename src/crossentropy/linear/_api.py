"""``linear_cross_entropy``: the public function, its gradient rule, and the sharded entry.

The function validates its options once, then either hands PyTorch tensors
that need gradients to the ``autograd.Function`` (:mod:`._autograd`) or
prepares the call (:mod:`._prepare`) and runs the chunk engine (:mod:`._engine`),
which also gives the analytic gradients of ``value_and_grad``.
"""

from __future__ import annotations

from typing import Any

from .._core.namespace import device, is_torch, namespace, numeric_guard
from .._core.reduction import Reduction, grad_scale
from .._core.rules import defines_grad
from .._core.shard import VocabShard
from .._core.types import Array, ArrayLike, ArrayT
from ..kernels.custom_ops import torch_call, traced_as
from ._autograd import needs_autograd, torch_function
from ._engine import evaluate, reduced_value
from ._prepare import LinearCall, LinearOptions, prepare_linear_call

__all__ = ["linear_cross_entropy", "sharded_linear_cross_entropy"]

_DIFFERENTIABLE = ("input", "linear_weight", "linear_bias")


def linear_cross_entropy(
    input: ArrayT | ArrayLike,
    linear_weight: Array | ArrayLike,
    target: Array | ArrayLike,
    *,
    linear_bias: Array | ArrayLike | None = None,
    weight: Array | ArrayLike | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | tuple[int | None, int | None] | None = None,
    filter_eps: float | None = None,
) -> ArrayT:
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
    routed = torch_call("linear_cross_entropy", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    options = LinearOptions.checked(
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
        filter_eps=filter_eps,
    )
    arrays = (input, linear_weight, target, linear_bias, weight)
    if needs_autograd(input, linear_weight, linear_bias):
        return _through_autograd(arrays, options, None)
    return _value_and_grads(arrays, options, ())[0]


def sharded_linear_cross_entropy(
    input: Any,
    linear_weight: Any,
    target: Any,
    linear_bias: Any,
    weight: Any,
    options: LinearOptions,
    shard: VocabShard,
) -> Any:
    """:func:`linear_cross_entropy` of a vocabulary sharded over processes:
    ``linear_weight`` (and ``linear_bias``) hold this shard's rows, ``target`` and
    ``weight`` refer to the whole vocabulary, and the row statistics meet through
    ``shard``'s collectives (:mod:`crossentropy.distributed` builds it)."""
    arrays = (input, linear_weight, target, linear_bias, weight)
    if needs_autograd(input, linear_weight, linear_bias):
        return _through_autograd(arrays, options, shard)
    x, w, t, b, cw = (_detach(a) for a in arrays)
    c = prepare_linear_call(x, w, t, b, cw, options, shard)
    return reduced_value(c, evaluate(c, (False, False, False))[0])


def _through_autograd(arrays: tuple, options: LinearOptions, shard: VocabShard | None) -> Any:
    """The loss as an autograd node of PyTorch tensors that need gradients."""
    input, linear_weight, target, linear_bias, weight = arrays
    # autograd saves tensors only: a NumPy or list target becomes one
    _, (_, target, weight) = namespace(input, target, weight)
    return torch_function().apply(
        input, linear_weight, linear_bias, target, weight, (options, shard)
    )


@traced_as(linear_cross_entropy, "linear")
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
    cotangent: Any = None,
) -> tuple[Any, dict]:
    if "linear_bias" in wrt and linear_bias is None:
        raise ValueError("cannot differentiate with respect to linear_bias: it is None")
    options = LinearOptions.checked(
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
        filter_eps=filter_eps,
    )
    arrays = (input, linear_weight, target, linear_bias, weight)
    return _value_and_grads(arrays, options, wrt, cotangent)


def _value_and_grads(
    arrays: tuple, options: LinearOptions, wrt: tuple[str, ...], cotangent: Any = None
) -> tuple[Any, dict]:
    """The value and the gradients named in ``wrt``, without PyTorch autograd; with
    ``cotangent`` (the value's shape), those of ``sum(cotangent * value)``."""
    x, w, t, b, cw = (_detach(a) for a in arrays)
    c = prepare_linear_call(x, w, t, b, cw, options)
    need = tuple(name in wrt for name in _DIFFERENTIABLE)
    loss, grads = evaluate(c, need, _row_scale(c, cotangent) if any(need) else None)
    return reduced_value(c, loss), {n: g for n, g, w in zip(_DIFFERENTIABLE, grads, need) if w}


def _row_scale(c: LinearCall, cotangent: Any) -> Any:
    """What each counted row's gradient is multiplied by: the reduction's factor
    times ``cotangent`` (one per row for ``'none'``), or ``None`` without one."""
    if cotangent is None or not c.n_kept:
        return None
    xp = c.xp
    ct = xp.astype(cotangent, c.cdtype)
    if c.reduction == "none":
        rows = xp.reshape(ct, (-1,))
        return rows if c.kept is None else xp.take(rows, c.kept, axis=0)
    ones = xp.ones((c.n_kept,), dtype=c.cdtype, device=device(c.x))
    return ones * (grad_scale(xp, ones, c.reduction, c.denom) * ct)


def _detach(a: Any) -> Any:
    return a.detach() if is_torch(a) else a
