"""``linear_cross_entropy``: the public function, its gradient rule, and the sharded entry.

The function validates its options once, then either hands PyTorch tensors
that need gradients to the ``autograd.Function`` (:mod:`._autograd`) or
prepares the call (:mod:`._prepare`) and runs the chunk engine (:mod:`._engine`),
which also gives the analytic gradients of ``value_and_grad``.  A
K-dimensional ``linear_weight`` ``(V, d1, ..., dK, D)`` is one call per
position ``(d1, ..., dK)`` sharing the whole call's ``'mean'`` denominator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.namespace import namespace, numeric_guard
from .._core.reduction import Reduction
from .._core.rules import defines_grad
from .._core.shard import VocabShard
from .._core.types import Array, ArrayLike, ArrayT
from .._core.validate import check_floating
from ..kernels.custom_ops import torch_call, traced_as
from ._autograd import Spec, needs_autograd, torch_function, value_and_grads
from ._prepare import LinearOptions, counted_rows, prepare_linear_call, rule_options

__all__ = ["linear_cross_entropy", "sharded_linear_cross_entropy"]

_DIFFERENTIABLE = ("input", "linear_weight", "linear_bias", "target")
_ARGUMENTS = ("input", "linear_weight", "target", "linear_bias", "weight")


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
    temperature: float = 1.0,
    normalizer: float | None = None,
) -> ArrayT:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias``, never forming those logits.

    The naive equivalent is ``cross_entropy(input @ linear_weight.T + linear_bias,
    target, weight, ignore_index, reduction, label_smoothing, axis=-1)``; this
    function computes the same loss and gradients a chunk of rows at a time,
    with one ``(chunk, V)`` buffer instead of the ``(N, V)`` logits, and at the
    speed of the three matrix products the gradient needs.  It is PyTorch's
    ``torch.nn.functional.linear_cross_entropy``, K-dimensional weights and
    class-probability targets included.

    Parameters
    ----------
    input : array_like, floating, shape (N, D), (D,) or (d1, ..., dK, D)
        Hidden states: one row of ``D`` features per token.
    linear_weight : array_like, floating, shape (V, D) or (V, e1, ..., eK, D)
        The output layer's weight (``torch.nn.Linear(D, V).weight``).  A
        K-dimensional weight (PyTorch's K-dimensional loss) holds one
        ``(V, D)`` head per position ``(e1, ..., eK)``; ``input`` must then be
        ``(N, D)``.
    target : array_like, shape (N,), () or (d1, ..., dK); or floating (..., V)
        Class index in ``[0, V)`` per row of ``input``, or ``ignore_index``;
        or class probabilities, floating, ``input``'s shape with ``V`` in
        place of ``D`` (``(N, V, e1, ..., eK)`` for a K-dimensional weight).
        With a K-dimensional weight, indices have shape ``(N, e1, ..., eK)``.
    linear_bias : array_like, shape (V,) or (V, e1, ..., eK), optional, keyword-only
        The output layer's bias.
    weight : array_like, shape (V,), optional, keyword-only
        Rescaling weight per class, as in :func:`cross_entropy`.
    reduction : {'mean', 'sum', 'none'}, default 'mean', keyword-only
        ``'mean'`` divides by the summed weight of the counted targets (by the
        number of rows for probability targets), or by ``normalizer``.
    ignore_index : int or None, default -100, keyword-only
        Target value whose rows contribute no loss, no gradient and no
        denominator; such rows are dropped before any matrix product.
        Unused for probability targets.
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
    temperature : float > 0, default 1.0, keyword-only
        Divide the logits (after ``softcap``) by ``temperature`` before the
        softmax; the gradients include the ``1 / T`` factor.
    normalizer : float > 0, optional, keyword-only
        With ``reduction='mean'`` only: divide the summed weighted per-row
        losses by ``normalizer`` instead of by the local sum of weights.
        Passing the count of counted tokens of a whole optimisation step to
        each micro-batch makes their losses and gradients add up to the
        step's mean (gradient accumulation).

    Returns
    -------
    array
        Scalar for ``'mean'`` and ``'sum'``, the target's shape (without the
        class axis of probabilities) for ``'none'``; ``input``'s dtype
        (float16 and bfloat16 are computed in float32) and array library.  On
        PyTorch tensors that require grad the result has a ``grad_fn``:
        ``loss.backward()`` fills ``.grad`` of ``input``, ``linear_weight``,
        ``linear_bias`` and probability targets.

    Raises
    ------
    TargetIndexError
        A class index outside ``[0, V)`` that is not ``ignore_index``.
    DTypeError
        Integer ``input``/``linear_weight``/``linear_bias``/``weight``, a
        floating target of class indices' shape, or an integer one of
        probabilities' shape.
    ValueError
        Shapes that do not fit together (the message names both), invalid
        ``reduction``, ``label_smoothing``, ``z_loss``, ``softcap``,
        ``chunk_size``, ``filter_eps``, ``temperature`` or ``normalizer``.

    See Also
    --------
    cross_entropy : the same loss on logits.
    linear_cross_entropy_stats : the same pass, with per-token statistics.
    linear_distillation_loss : a student head against a teacher head.

    Notes
    -----
    With logits :math:`y_n = (W x_n + b) / T` (capped to :math:`(c \tanh((W
    x_n + b) / c)) / T` with ``softcap``), :math:`\operatorname{lse}_n =
    \log \sum_v e^{y_{n,v}}`, the loss of a counted row is

    .. math::
        \ell_n = (1-\varepsilon)\, w_{t_n} (\operatorname{lse}_n - y_{n,t_n})
               + \frac{\varepsilon}{V} \sum_v w_v (\operatorname{lse}_n - y_{n,v})
               + \zeta\, \operatorname{lse}_n^2

    (with probability targets :math:`p_n`, the first term is
    :math:`(1-\varepsilon) \sum_v w_v p_{n,v} (\operatorname{lse}_n -
    y_{n,v})`), reduced as in :func:`cross_entropy`: ``'mean'`` divides by
    :math:`\sum_n w_{t_n}`, or by the number of rows for probabilities, or
    by ``normalizer`` :math:`Z`.  With :math:`G = \partial \ell / \partial
    y` (softmax minus the target, plus the smoothing, z-loss and softcap
    terms, scaled by the reduction and by :math:`1/T`), the gradients are
    :math:`G W` for ``input``, :math:`G^\top X` for ``linear_weight`` and
    :math:`\sum_n G_n` for ``linear_bias``; for probability targets
    :math:`-(1-\varepsilon) w_v \log \operatorname{softmax}(y_n)_v` (scaled by the
    reduction) for ``target``.

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
    float32 ``(V, D)`` accumulator).  Probability targets are as large as
    the logits: they are read a block at a time (and copied whole only to
    bring them to the compute dtype).

    Peers: PyTorch 2.13 ``F.linear_cross_entropy`` (the same signature; no
    ``z_loss``, ``softcap``, ``temperature`` or ``normalizer``), Liger-Kernel's
    ``LigerFusedLinearCrossEntropyLoss`` (``softcap``, ``lse_square_scale`` for
    the z-loss, GPU only) and Cut Cross-Entropy's ``linear_cross_entropy(e,
    c, targets)`` (``filter_eps``, GPU only).  ``normalizer`` plays the part of
    Hugging Face ``transformers``' ``num_items_in_batch``.

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

    At temperature 0.5 the logits are ``[2, 0]``, the loss
    :math:`\log(1 + e^{-2})`; a probability target ``[0.5, 0.5]`` gives
    :math:`\log(1 + e^{-1}) + 1/2`:

    >>> round(float(ce.linear_cross_entropy(h, W, np.array([0]), temperature=0.5)), 4)
    0.1269
    >>> round(float(ce.linear_cross_entropy(h, W, np.array([[0.5, 0.5]]))), 4)
    0.8133
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
        temperature=temperature,
        normalizer=normalizer,
    )
    arrays = (input, linear_weight, target, linear_bias, weight)
    if needs_autograd(input, linear_weight, linear_bias, target):
        return _run(arrays, options, None, ())[0]
    return _run(arrays, options, None, None)[0]


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
    autograd = needs_autograd(input, linear_weight, linear_bias)
    return _one(arrays, options, shard, () if autograd else None)[0]


def _spec(options: LinearOptions, shard: VocabShard | None) -> Spec:
    def prepare(input: Any, linear_weight: Any, linear_bias: Any, target: Any, weight: Any) -> Any:
        return prepare_linear_call(input, linear_weight, target, linear_bias, weight, options, shard)

    return Spec(prepare, host=shard is None)


def _one(
    arrays: tuple, options: LinearOptions, shard: Any, need: tuple | None, cotangent: Any = None
) -> tuple:
    """``(value, grads)`` of a call with a 2-D ``linear_weight``.  ``need`` is
    ``()`` for the ``autograd.Function`` (``grads`` then ``None``), a tuple of
    flags for the gradients ``(input, linear_weight, linear_bias, target)``
    without autograd, or ``None`` for the value alone; with ``cotangent`` (the
    value's shape) the gradients are those of ``sum(cotangent * value)``."""
    input, linear_weight, target, linear_bias, weight = arrays
    spec = _spec(options, shard)
    if need == ():
        # autograd saves tensors only: a NumPy or list target becomes one
        _, (_, target, weight) = namespace(input, target, weight)
        value = torch_function().apply(spec, input, linear_weight, linear_bias, target, weight)
        return value[0], None
    outputs, grads = value_and_grads(spec, (input, linear_weight, linear_bias, target, weight),
                                     need or (False,) * 4, cotangent)  # fmt: skip
    return outputs[0], grads


def _run(
    arrays: tuple, options: LinearOptions, shard: Any, need: tuple | None, cotangent: Any = None
) -> tuple:
    """``(value, grads)`` as :func:`_one`, a K-dimensional ``linear_weight`` included."""
    xp, found = namespace(*arrays, names=_ARGUMENTS, required=3)
    if found[1].ndim <= 2:
        return _one(tuple(found), options, shard, need, cotangent)
    input, linear_weight, target, linear_bias, weight = found
    positions, probs = _k_dim_positions(xp, input, linear_weight, target, linear_bias)
    if options.reduction == "mean" and options.loss.normalizer is None:
        options = options.with_denominator(
            _k_dim_denominator(xp, target, weight, linear_weight.shape[0], options, probs)
        )
    values: list[Any] = []
    parts: list[Any] = []
    for k in positions:
        every = (slice(None),)
        w_k = linear_weight[every + k + every]
        b_k = None if linear_bias is None else linear_bias[every + k]
        t_k = target[every + every + k] if probs else target[every + k]
        ct_k = cotangent
        if cotangent is not None and options.reduction == "none":  # one per position
            ct_k = xp.reshape(cotangent, (input.shape[0], -1))[:, len(values)]
        value, grads = _one((input, w_k, t_k, b_k, weight), options, shard, need, ct_k)
        values.append(value)
        parts.append(grads)
    if options.reduction == "none":
        value = xp.reshape(xp.stack(values, axis=-1), tuple(input.shape[:1]) + linear_weight.shape[1:-1])
    else:
        value = sum(values[1:], values[0])
    if need is None or need == ():
        return value, None
    return value, _k_dim_grads(xp, parts, linear_weight.shape, probs, tuple(target.shape))


def _k_dim_positions(xp: Any, input: Any, w: Any, target: Any, bias: Any) -> tuple[list, bool]:
    """The positions ``(e1, ..., eK)`` of a K-dimensional weight ``(V, e1, ..., eK,
    D)`` and whether ``target`` holds probabilities; ``ValueError`` for shapes
    that do not fit."""
    check_floating(xp, input, "input")
    check_floating(xp, w, "linear_weight")
    v, out, d = w.shape[0], tuple(w.shape[1:-1]), w.shape[-1]
    if input.ndim != 2:
        raise ValueError(
            f"a K-dimensional linear_weight of shape {tuple(w.shape)} (V, e1, ..., eK, D) "
            f"needs a batched 2-D input (N, D), got input of shape {tuple(input.shape)}"
        )
    n = input.shape[0]
    if input.shape[1] != d:
        raise ValueError(
            f"input has shape {tuple(input.shape)} and linear_weight has shape "
            f"{tuple(w.shape)}: the last axes (D) must be equal"
        )
    if bias is not None and tuple(bias.shape) != (v,) + out:
        raise ValueError(
            f"linear_bias must have shape {(v,) + out} (linear_weight's shape without D), "
            f"got shape {tuple(bias.shape)}"
        )
    probs = tuple(target.shape) == (n, v) + out
    if not probs and tuple(target.shape) != (n,) + out:
        raise ValueError(
            f"target has shape {tuple(target.shape)}, expected {(n,) + out} (class indices) "
            f"or {(n, v) + out} (class probabilities) for input {tuple(input.shape)} and "
            f"linear_weight {tuple(w.shape)}"
        )
    return list(np.ndindex(*out)), probs


def _k_dim_denominator(
    xp: Any, target: Any, weight: Any, n_vocab: int, options: LinearOptions, probs: bool
) -> Any:
    """The ``'mean'`` denominator of the whole K-dimensional call."""
    if probs:
        return float(target.shape[0] * np.prod(target.shape[2:]))
    if weight is not None:
        check_floating(xp, weight, "weight")
        weight = xp.astype(weight, xp.float64 if weight.dtype == xp.float64 else xp.float32)
    return float(counted_rows(xp, target, weight, n_vocab, options.ignore_index)[4])


def _k_dim_grads(xp: Any, parts: list, w_shape: tuple, probs: bool, t_shape: tuple) -> tuple:
    """The gradients of a K-dimensional call from those of its positions."""
    dx = dw = db = dt = None
    first = parts[0]
    if first[0] is not None:
        dx = sum((p[0] for p in parts[1:]), first[0])
    if first[1] is not None:
        dw = xp.reshape(xp.stack([p[1] for p in parts], axis=1), w_shape)
    if first[2] is not None:
        db = xp.reshape(xp.stack([p[2] for p in parts], axis=1), w_shape[:-1])
    if first[3] is not None:
        dt = xp.reshape(xp.stack([p[3] for p in parts], axis=-1), t_shape)
    return dx, dw, db, dt


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
    temperature: float = 1.0,
    normalizer: float | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    options, need = rule_options(locals(), _DIFFERENTIABLE)
    arrays = (input, linear_weight, target, linear_bias, weight)
    value, grads = _run(arrays, options, None, need, cotangent)
    if need[3] and grads[3] is None:
        raise ValueError(
            "linear_cross_entropy is differentiable with respect to target only for class "
            "probabilities (a floating target of shape input.shape[:-1] + (V,)), not class indices"
        )
    return value, {n: g for n, g, w in zip(_DIFFERENTIABLE, grads, need) if w}
