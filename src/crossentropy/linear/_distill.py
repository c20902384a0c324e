"""``linear_distillation_loss``: a student head against a frozen teacher head, fused.

The public function and its gradient rule; the call is validated by
:func:`._prepare.prepare_distill_call` and computed by the chunk engine
(:mod:`._engine`) with the :class:`._divergence.Divergence` objective, through
the same ``autograd.Function`` as ``linear_cross_entropy`` for PyTorch tensors.
"""

from __future__ import annotations

import math
from typing import Any

from .._core.namespace import namespace, numeric_guard
from .._core.reduction import Reduction
from .._core.rules import defines_grad
from .._core.types import Array, ArrayLike, ArrayT
from ._autograd import Spec, needs_autograd, torch_function, value_and_grads
from ._divergence import DIVERGENCES, Divergence, DivergenceKind
from ._prepare import LinearOptions, prepare_distill_call

__all__ = ["linear_distillation_loss"]

_DIFFERENTIABLE = ("student_input", "student_weight", "student_bias")


def linear_distillation_loss(
    student_input: ArrayT | ArrayLike,
    student_weight: Array | ArrayLike,
    teacher_input: Array | ArrayLike,
    teacher_weight: Array | ArrayLike,
    target: Array | ArrayLike | None = None,
    *,
    student_bias: Array | ArrayLike | None = None,
    teacher_bias: Array | ArrayLike | None = None,
    divergence: DivergenceKind = "kl",
    beta: float | None = None,
    temperature: float = 1.0,
    ignore_index: int | None = -100,
    reduction: Reduction = "mean",
    normalizer: float | None = None,
    chunk_size: int | tuple[int | None, int | None] | None = None,
) -> ArrayT:
    r"""Divergence between a teacher's and a student's softmax over a vocabulary, per token,
    from their hidden states and output layers, never forming either ``(N, V)`` logits.

    The naive equivalent computes both logits matrices, ``zs = (student_input
    @ student_weight.T + student_bias) / T`` and ``zt = (teacher_input @
    teacher_weight.T + teacher_bias) / T``, their ``log_softmax`` and a
    divergence per row; here both heads are taken a chunk of tokens at a
    time with two ``(chunk, V)`` buffers, at the speed of the four matrix
    products (two logits, two student gradients).  The teacher is frozen: it
    gets no gradient.

    Parameters
    ----------
    student_input : array_like, floating, shape (N, D_s) or (..., D_s)
        The student's hidden states, one row per token.
    student_weight : array_like, floating, shape (V, D_s)
        The student's output layer (``torch.nn.Linear(D_s, V).weight``).
    teacher_input : array_like, floating, shape (N, D_t) or (..., D_t)
        The teacher's hidden states for the same tokens (same leading axes).
    teacher_weight : array_like, floating, shape (V, D_t)
        The teacher's output layer, over the same vocabulary.
    target : array_like, integer, shape ``student_input.shape[:-1]``, optional
        Class indices in ``[0, V)``; only which of them equal
        ``ignore_index`` is used: those tokens count for nothing (padding,
        prompt tokens).  ``None``: every token counts.
    student_bias, teacher_bias : array_like, shape (V,), optional, keyword-only
        The output layers' biases.
    divergence : {'kl', 'reverse_kl', 'jsd'}, default 'kl', keyword-only
        ``'kl'``: :math:`\mathrm{KL}(P \| Q)` (forward, the usual
        distillation loss); ``'reverse_kl'``: :math:`\mathrm{KL}(Q \| P)`
        (mode seeking); ``'jsd'``: the generalised Jensen-Shannon divergence
        with weight ``beta`` on the teacher.  ``P`` is the teacher's softmax,
        ``Q`` the student's.
    beta : float in (0, 1), optional, keyword-only
        For ``'jsd'`` only (default 0.5, the symmetric JSD).
    temperature : float > 0, default 1.0, keyword-only
        Both heads' logits are divided by it.  The loss is not multiplied by
        :math:`T^2` (multiply it yourself for Hinton's scaling).
    ignore_index : int or None, default -100, keyword-only
        The ``target`` value of the tokens that do not count.
    reduction : {'mean', 'sum', 'none'}, default 'mean', keyword-only
        ``'mean'`` divides by the number of counted tokens (or ``normalizer``).
    normalizer : float > 0, optional, keyword-only
        With ``'mean'`` only: divide the summed divergences by it instead
        (gradient accumulation over micro-batches, as in
        :func:`linear_cross_entropy`).
    chunk_size : int or (int, int), optional, keyword-only
        Tokens per chunk, or ``(tokens, vocabulary entries)`` per block, as in
        :func:`linear_cross_entropy` (default: each of the two buffers at
        most 112 MiB, 224 tokens at ``V = 128000`` in float32).

    Returns
    -------
    array
        Scalar for ``'mean'`` and ``'sum'``, ``student_input.shape[:-1]`` for
        ``'none'`` (0 for tokens that do not count); the inputs' result dtype
        and array library.  On PyTorch tensors that require grad,
        ``loss.backward()`` fills ``.grad`` of ``student_input``,
        ``student_weight`` and ``student_bias``.

    Raises
    ------
    DTypeError
        Integer inputs, weights or biases, or a floating ``target``.
    TargetIndexError
        A ``target`` entry outside ``[0, V)`` that is not ``ignore_index``.
    ValueError
        Shapes that do not fit together (the message names them), an unknown
        ``divergence``, ``beta`` outside ``(0, 1)`` or given without
        ``'jsd'``, an invalid ``temperature``, ``reduction``, ``normalizer``
        or ``chunk_size``.

    See Also
    --------
    linear_cross_entropy : the same fused head against class indices.
    crossentropy.info.kl_divergence : KL between two given distributions.

    Notes
    -----
    With :math:`P = \operatorname{softmax}(z_t)`, :math:`Q =
    \operatorname{softmax}(z_s)` per token,

    .. math::
        \mathrm{KL}(P \| Q) = \sum_v P_v (\log P_v - \log Q_v), \qquad
        \mathrm{JSD}_\beta = \beta\, \mathrm{KL}(P \| M) + (1 - \beta)\, \mathrm{KL}(Q \| M),
        \quad M = \beta P + (1 - \beta) Q .

    The gradients with respect to the student's logits are :math:`Q - P`
    (``'kl'``), :math:`Q_v (\log Q_v - \log P_v - \mathrm{KL}(Q \| P))`
    (``'reverse_kl'``) and :math:`(1 - \beta)\, Q_v (\log Q_v - \log M_v -
    \mathrm{KL}(Q \| M))` (``'jsd'``), times :math:`1/T` and the reduction's
    factor; the products with ``student_weight`` and the student's rows give
    the gradients of ``student_input`` and ``student_weight``.  The
    forward KL needs one online sum besides the normalisers,
    :math:`\sum_v e^{z_{t,v}} (z_{t,v} - z_{s,v})`, and the reverse KL its
    mirror; the JSD needs a second pass over the kept blocks for :math:`\log
    M`.

    Peers: Liger-Kernel's ``LigerFusedLinearJSDLoss`` (the same ``beta``
    convention, ``beta = 0`` and ``1`` meaning the two KLs; GPU only) and the
    ``generalized_jsd_loss`` of TRL's GKD trainer (on logits); PyTorch's
    ``F.kl_div(log_q, log_p, log_target=True)`` on materialised logits.

    Examples
    --------
    The student's logits ``[0, 0]`` against the teacher's ``[log 3, 0]``:
    :math:`P = (3/4, 1/4)`, :math:`Q = (1/2, 1/2)` and
    :math:`\mathrm{KL}(P \| Q) = \tfrac34 \log \tfrac32 + \tfrac14 \log \tfrac12`:

    >>> import numpy as np
    >>> import crossentropy as ce
    >>> W = np.eye(2)
    >>> hs, ht = np.array([[0.0, 0.0]]), np.array([[np.log(3.0), 0.0]])
    >>> round(float(ce.linear_distillation_loss(hs, W, ht, W)), 4)
    0.1308
    >>> round(float(0.75 * np.log(1.5) + 0.25 * np.log(0.5)), 4)
    0.1308

    The gradient of the student's hidden states is :math:`(Q - P) W`:

    >>> loss, dh = ce.value_and_grad(ce.linear_distillation_loss)(hs, W, ht, W)
    >>> dh
    array([[-0.25,  0.25]])
    """
    options, objective = _checked(
        divergence, beta, temperature, ignore_index, reduction, normalizer, chunk_size
    )
    spec = _spec(options, objective)
    student: tuple[Any, Any, Any] = (student_input, student_weight, student_bias)
    if needs_autograd(*student):
        if target is not None:  # autograd saves tensors only: a NumPy or list target becomes one
            _, (_, target) = namespace(student_input, target)
        return torch_function().apply(
            spec, *student, target, teacher_input, teacher_weight, teacher_bias
        )[0]
    arrays = (*student, target, teacher_input, teacher_weight, teacher_bias)
    return value_and_grads(spec, arrays, (False,) * 4)[0][0]


def _checked(
    divergence: str, beta: Any, temperature: float, ignore_index: Any, reduction: str,
    normalizer: Any, chunk_size: Any,
) -> tuple[LinearOptions, Divergence]:  # fmt: skip
    """The options and the objective of a call, or ``ValueError`` naming the bad one."""
    if divergence not in DIVERGENCES:
        raise ValueError(
            f"divergence must be one of {', '.join(map(repr, DIVERGENCES))}, got {divergence!r}"
        )
    if divergence != "jsd":
        if beta is not None:
            raise ValueError(
                f"beta weighs the teacher in divergence='jsd' only, got beta={beta!r} with "
                f"divergence={divergence!r}"
            )
        objective = Divergence(divergence)
    else:
        value = 0.5 if beta is None else float(beta)
        if not 0 < value < 1 or math.isnan(value):
            raise ValueError(
                f"beta must lie strictly between 0 and 1 for divergence='jsd' (its limits "
                f"0 and 1 give a zero divergence; use 'kl' or 'reverse_kl'), got {beta!r}"
            )
        objective = Divergence("jsd", value)
    options = LinearOptions.checked(
        reduction=reduction,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
        temperature=temperature,
        normalizer=normalizer,
    )
    return options, objective


def _spec(options: LinearOptions, objective: Divergence) -> Spec:
    def prepare(
        input: Any, weight: Any, bias: Any, target: Any, t_input: Any, t_weight: Any, t_bias: Any
    ) -> Any:
        return prepare_distill_call(
            (input, weight, bias), (t_input, t_weight, t_bias), target, options, objective
        )

    return Spec(prepare)


@defines_grad(linear_distillation_loss, *_DIFFERENTIABLE)
@numeric_guard
def _linear_distillation_loss_rule(
    student_input: Any,
    student_weight: Any,
    teacher_input: Any,
    teacher_weight: Any,
    target: Any = None,
    *,
    student_bias: Any = None,
    teacher_bias: Any = None,
    divergence: str = "kl",
    beta: float | None = None,
    temperature: float = 1.0,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    normalizer: float | None = None,
    chunk_size: Any = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    if "student_bias" in wrt and student_bias is None:
        raise ValueError("cannot differentiate with respect to student_bias: it is None")
    options, objective = _checked(
        divergence, beta, temperature, ignore_index, reduction, normalizer, chunk_size
    )
    need = tuple(name in wrt for name in _DIFFERENTIABLE) + (False,)
    arrays = (student_input, student_weight, student_bias, target, teacher_input,
              teacher_weight, teacher_bias)  # fmt: skip
    outputs, grads = value_and_grads(_spec(options, objective), arrays, need, cotangent)
    return outputs[0], {n: g for n, g, w in zip(_DIFFERENTIABLE, grads, need) if w}
