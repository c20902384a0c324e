r"""Losses that sum a function of each class's log-probability: focal, poly-1, generalized CE.

For logits :math:`x`, log-probabilities :math:`l = \log\operatorname{softmax}(x)`
and target weights :math:`\tau` (the class probabilities, or the weighted
one-hot row of a class index), the loss of a row is

.. math:: \ell = \sum_c \tau_c\, f(l_c), \qquad
          \frac{\partial \ell}{\partial x_j} = u_j - p_j \sum_c u_c,
          \quad u_c = \tau_c f'(l_c)

because :math:`\partial l_c / \partial x_j = \delta_{cj} - p_j`.  Each loss
gives :math:`f` and :math:`f'` (:class:`LogProbTerm`); this module does the
rest once: the row sums, the ``'mean'`` denominator (PyTorch's: the summed
weight of the counted class-index targets, or the number of probability rows)
and the gradient.  Classes with :math:`\tau_c = 0` contribute nothing (so a
``-inf`` logit with no target mass is fine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .mathops import log_softmax, one_hot
from .namespace import restore
from .prepared import ClassCall, to_caller_layout
from .reduction import grad_scale, reduce

__all__ = ["LogProbTerm", "evaluate_log_prob_loss"]


@dataclass(frozen=True)
class LogProbTerm:
    """:math:`f(l)` and :math:`f'(l)`, elementwise on log-probabilities ``l``."""

    value: Callable[[Any, Any], Any]  # (xp, l) -> f(l)
    slope: Callable[[Any, Any], Any]  # (xp, l) -> f'(l)


def _target_weights(b: ClassCall) -> tuple[Any, Any]:
    """``(tau, denominator)``: the (..., C) target weights and the ``'mean'`` denominator."""
    xp = b.xp
    if b.probs:
        tau = b.target if b.weight is None else b.target * b.weight
        n = 1
        for s in tau.shape[:-1]:
            n *= s
        return tau, float(n)
    tau = one_hot(xp, b.index, b.n_classes, b.x.dtype) * b.w_t[..., None]
    return tau, xp.sum(b.w_t)


def evaluate_log_prob_loss(
    b: ClassCall,
    term: LogProbTerm,
    wrt: tuple[str, ...],
    rows: Any = None,
    cotangent: Any = None,
) -> tuple[Any, dict]:
    """The reduced loss :math:`\\sum_c \\tau_c f(l_c)` and its gradient w.r.t. ``"input"``
    (of ``sum(cotangent * value)`` with a ``cotangent``).

    ``rows`` (optional, the batch shape) marks the rows that count; the others
    give no loss, no gradient and no count in ``'mean'`` (the ``where=`` masks).
    Rows whose class index is ``ignore_index`` give 0 whatever their logits.
    """
    xp = b.xp
    x = b.x if b.probs else xp.where(b.valid[..., None], b.x, xp.zeros_like(b.x))
    logp = log_softmax(xp, x, -1)
    tau, denom = _target_weights(b)
    if rows is not None:
        tau = xp.where(rows[..., None], tau, xp.zeros_like(tau))
        if b.probs:
            denom = xp.sum(xp.astype(rows, b.x.dtype))
    used = tau != 0
    zero = xp.zeros_like(logp)
    loss = xp.sum(xp.where(used, tau * term.value(xp, logp), zero), axis=-1)
    value = restore(xp, reduce(xp, loss, b.reduction, denom), b.dtype)
    grads = {}
    if "input" in wrt:
        u = xp.where(used, tau * term.slope(xp, logp), zero)
        g = u - xp.exp(logp) * xp.sum(u, axis=-1, keepdims=True)
        s = grad_scale(xp, loss, b.reduction, denom)
        if cotangent is not None:
            s = s * xp.expand_dims(xp.astype(cotangent, loss.dtype), axis=-1)
        grads["input"] = to_caller_layout(b, s * g)
    return value, grads
