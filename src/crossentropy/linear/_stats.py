"""``linear_cross_entropy_stats``: the loss of a language-model head and its per-token statistics.

One pass of the chunk engine gives, besides the loss and its gradients, each
token's log-probability of its target, logsumexp, entropy, argmax and z-loss
term (:class:`._softmax.Softmax` with ``stats=True``); they come back in a
:class:`TokenStats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from .._core.namespace import device, index_dtype, namespace, numeric_guard, restore
from .._core.reduction import Reduction
from .._core.rules import defines_grad
from .._core.types import Array, ArrayLike, ArrayT
from .._core.validate import counted_mask
from ._autograd import Spec, needs_autograd, torch_function, value_and_grads
from ._engine import expand, reduced_value
from ._prepare import LinearOptions, prepare_linear_call, rule_options
from ._softmax import Softmax

__all__ = ["TokenStats", "linear_cross_entropy_stats"]

_DIFFERENTIABLE = ("input", "linear_weight", "linear_bias")
_PER_TOKEN = ("logprob", "logsumexp", "entropy", "z_loss")


@dataclass(frozen=True)
class TokenStats(Generic[ArrayT]):
    r"""The loss of a language-model head and its statistics per token (the target's shape).

    Attributes
    ----------
    loss : array
        The loss, reduced as asked: what :func:`linear_cross_entropy` returns
        (differentiable: ``loss.backward()`` on PyTorch tensors).
    logprob : array, floating
        :math:`\log \operatorname{softmax}(y)_t`, the log-probability of the
        target (GRPO/PPO log-probabilities), without smoothing or z-loss.
    logsumexp : array, floating
        :math:`\operatorname{lse}(y)`, the log of the softmax's normaliser.
    entropy : array, floating
        :math:`-\sum_v p_v \log p_v` of the softmax.
    argmax : array, integer
        The most probable class (the first one on ties), in the library's
        index dtype (int64, int32 in JAX without x64); -1 where the target
        is ignored.
    correct : array, bool
        ``argmax == target`` (top-1 accuracy); False where ignored.
    z_loss : array, floating
        ``z_loss * logsumexp**2``, the z-loss term included in each token's
        loss (0 without ``z_loss``).
    counted : array, bool
        ``target != ignore_index``: the tokens the loss counts.  The floating
        statistics are 0 elsewhere (those tokens are skipped, not computed).

    Notes
    -----
    With the softmax :math:`p` of a token's logits :math:`y` and its target
    :math:`t`: ``logprob`` :math:`= \log p_t`, ``logsumexp`` :math:`= \log
    \sum_v e^{y_v}`, ``entropy`` :math:`= -\sum_v p_v \log p_v`.  What
    Liger-Kernel (``return_z_loss``) and TRL (``selective_log_softmax``,
    ``entropy_from_logits``) compute apart, in one object.

    Examples
    --------
    A uniform head over four classes: every log-probability is :math:`-\log 4`
    and the entropy :math:`\log 4`; the mean top-1 accuracy of two tokens:

    >>> import numpy as np
    >>> import crossentropy as ce
    >>> stats = ce.linear_cross_entropy_stats(np.zeros((2, 3)), np.ones((4, 3)),
    ...                                       np.array([0, 2]), reduction="none")
    >>> stats.logprob.round(4), stats.entropy.round(4)
    (array([-1.3863, -1.3863]), array([1.3863, 1.3863]))
    >>> float(stats.correct.mean())          # argmax 0 (the first of the ties) for both
    0.5
    """

    loss: ArrayT
    logprob: ArrayT
    logsumexp: ArrayT
    entropy: ArrayT
    argmax: ArrayT
    correct: ArrayT
    z_loss: ArrayT
    counted: ArrayT


def linear_cross_entropy_stats(
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
) -> TokenStats[ArrayT]:
    r""":func:`linear_cross_entropy` and, from the same pass, per-token statistics of the head.

    Takes exactly :func:`linear_cross_entropy`'s arguments (class-index
    targets and a 2-D ``linear_weight``) and returns a :class:`TokenStats`:
    the same loss (with the same gradients, through ``loss.backward()`` or
    :func:`crossentropy.value_and_grad`), and per token the log-probability
    of the target, the logsumexp, the entropy, the argmax and whether it is
    right, and the z-loss term.  No second pass over the logits is made:
    the statistics are accumulated while each block of logits is in cache.

    Parameters
    ----------
    input, linear_weight, target, linear_bias, weight, reduction, ignore_index
        As in :func:`linear_cross_entropy`; ``target`` holds class indices,
        shape ``input.shape[:-1]``, and ``linear_weight`` is ``(V, D)``.
    label_smoothing, z_loss, softcap, chunk_size, filter_eps, temperature, normalizer
        As in :func:`linear_cross_entropy`.  The statistics are those of the
        logits the loss sees: soft-capped, then divided by ``temperature``.

    Returns
    -------
    TokenStats
        ``loss`` as :func:`linear_cross_entropy` returns it; the other fields
        have the target's shape, ``input``'s dtype (``argmax`` the library's
        index dtype, int64 but in JAX without x64; ``correct`` and ``counted``
        bool) and array library, and are 0 (-1, False) where the target is
        ``ignore_index``: pass
        ``ignore_index=None`` to have every token's statistics.

    Raises
    ------
    ValueError, DTypeError, TargetIndexError
        As :func:`linear_cross_entropy`; also for class-probability targets
        or a K-dimensional ``linear_weight``.

    See Also
    --------
    linear_cross_entropy : the loss alone.
    crossentropy.metrics : streaming evaluation reports.

    Notes
    -----
    With the (capped, tempered) logits :math:`y` of a token, its softmax
    :math:`p`, target :math:`t`: ``logprob`` :math:`= y_t -
    \operatorname{lse}(y)`, ``entropy`` :math:`= \operatorname{lse}(y) -
    \sum_v p_v y_v`, ``argmax`` :math:`= \arg\max_v y_v`.  Per block the
    engine adds :math:`\sum_v e^{y_v - m} (y_v - m)` (and keeps the running
    maximum and its class) besides the sums it needs for the loss; the
    entropy is :math:`\log s - \sum_v e^{y_v - m} (y_v - m) / s`.

    Peers: Liger-Kernel's fused linear cross-entropy returns the z-loss term
    apart (``return_z_loss=True``) and TRL computes per-token log-probabilities
    and entropies for GRPO from materialised logits
    (``selective_log_softmax``, ``entropy_from_logits``); in PyTorch,
    ``F.log_softmax(h @ W.T, -1)`` and reductions of it.

    Examples
    --------
    Logits ``[2, 0]`` (an identity head) and target 0: the log-probability is
    :math:`-\log(1 + e^{-2})`, the argmax 0:

    >>> import numpy as np
    >>> import crossentropy as ce
    >>> h, W = np.array([[2.0, 0.0], [0.0, 0.0]]), np.eye(2)
    >>> stats = ce.linear_cross_entropy_stats(h, W, np.array([0, 1]), reduction="none")
    >>> stats.logprob.round(4), round(float(-np.log1p(np.exp(-2))), 4)
    (array([-0.1269, -0.6931]), -0.1269)
    >>> stats.entropy.round(4)              # the second row is uniform: log 2
    array([0.3653, 0.6931])
    >>> stats.argmax, stats.correct         # ties go to the first class
    (array([0, 0]), array([ True, False]))
    >>> bool(np.allclose(stats.loss, -stats.logprob))
    True
    """
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
    return _stats((input, linear_weight, target, linear_bias, weight), options, None)[0]


def _finish(c: Any, loss: Any, extras: dict) -> tuple:
    """The outputs of a statistics call: the loss, then the statistics per token."""
    xp = c.xp
    zeros = xp.zeros((0,), dtype=c.cdtype, device=device(c.x))
    outputs = [reduced_value(c, loss)]
    for name in _PER_TOKEN:
        value = expand(c, extras.get(name, zeros))
        outputs.append(restore(xp, xp.reshape(value, c.shape), c.out_dtype))
    index = index_dtype(xp)
    amax = extras.get("argmax", xp.zeros((0,), dtype=index, device=device(c.x)))
    amax = xp.where(c.valid, expand(c, amax), xp.full_like(c.valid, -1, dtype=index))
    outputs.append(xp.reshape(amax, c.shape))
    return tuple(outputs)


def _spec(options: LinearOptions) -> Spec:
    def prepare(input: Any, linear_weight: Any, linear_bias: Any, target: Any, weight: Any) -> Any:
        c = prepare_linear_call(
            input, linear_weight, target, linear_bias, weight, options, objective=Softmax(True)
        )
        if c.probs:
            raise ValueError(
                "linear_cross_entropy_stats needs class-index targets, got class probabilities "
                f"of shape {c.shape + (c.w.shape[0],)}"
            )
        return c

    return Spec(prepare, _finish)


def _stats(
    arrays: tuple, options: LinearOptions, need: tuple | None, cotangent: Any = None
) -> tuple:
    """``(TokenStats, grads)``: through the ``autograd.Function`` for tensors that
    need it, else with the gradients flagged in ``need`` (``None``: none), those
    of ``sum(cotangent * loss)`` with a ``cotangent``."""
    names = ("input", "linear_weight", "target", "linear_bias", "weight")
    xp, (input, linear_weight, target, linear_bias, weight) = namespace(
        *arrays, names=names, required=3
    )
    if linear_weight.ndim != 2:
        raise ValueError(
            f"linear_cross_entropy_stats needs a 2-D linear_weight (V, D), got shape "
            f"{tuple(linear_weight.shape)}"
        )
    spec, grads = _spec(options), None
    if need is None and needs_autograd(input, linear_weight, linear_bias):
        outputs = torch_function().apply(spec, input, linear_weight, linear_bias, target, weight)
    else:
        ordered = (input, linear_weight, linear_bias, target, weight)
        need = (need or (False,) * 3) + (False,)
        outputs, grads = value_and_grads(spec, ordered, need, cotangent)
    loss, logprob, lse, entropy, zl, amax = outputs
    counted = counted_mask(xp, target, options.ignore_index)
    correct = counted & (amax == xp.astype(target, amax.dtype))
    return TokenStats(loss, logprob, lse, entropy, amax, correct, zl, counted), grads


@defines_grad(linear_cross_entropy_stats, *_DIFFERENTIABLE)
@numeric_guard
def _linear_cross_entropy_stats_rule(
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
    stats, grads = _stats(arrays, options, need, cotangent)
    return stats, {n: g for n, g, w in zip(_DIFFERENTIABLE, grads, need) if w}
