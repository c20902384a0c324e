"""Kullback-Leibler divergence losses on log-probabilities: PyTorch's ``kl_div`` and the
generalized (convex) KL divergence for unnormalised measures."""

from __future__ import annotations

from typing import Any

from .._core.namespace import numeric_guard
from .._core.prepared import finish_pair, prepare_pair_call
from .._core.rules import defines_grad
from ..jax_rules import jax_rule
from ..kernels.custom_ops import torch_call, traced_as

__all__ = ["generalized_kl_div", "kl_div"]


def kl_div(input: Any, target: Any, reduction: str = "mean", log_target: bool = False) -> Any:
    r"""Kullback-Leibler divergence loss between log-probabilities and a target.

    Beware of the argument order: ``input`` is the *model's* log-probabilities
    :math:`\log q` and ``target`` the reference :math:`p`, so the result is
    :math:`D_{KL}(p \,\|\, q)`.

    Parameters
    ----------
    input : array_like, floating, any shape
        Log-probabilities of the model.
    target : array_like, floating, same shape as ``input``
        Probabilities (or log-probabilities when ``log_target``).
    reduction : {'mean', 'batchmean', 'sum', 'none'}, default 'mean'
        ``'batchmean'`` divides the sum by ``input.shape[0]`` and is the one
        that gives the mathematical KL divergence per sample; ``'mean'``
        averages over every element, as in PyTorch.
    log_target : bool, default False
        ``target`` holds log-probabilities.

    Returns
    -------
    array
        Scalar, or ``input``'s shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        Shape mismatch or invalid ``reduction``.
    DTypeError
        Integer ``input`` or ``target``.

    See Also
    --------
    crossentropy.info.kl_divergence : :math:`D_{KL}(p\|q)` from two probability vectors.

    Notes
    -----
    .. math:: \ell = p\,(\log p - x) \quad (0 \log 0 = 0), \qquad
              \ell = e^{t}\,(t - x) \ \text{with log\_target}

    The :math:`0 \log 0 = 0` rule holds at exact zeros; a negative or NaN
    target gives NaN, as PyTorch's ``xlogy(t, t)`` does.

    PyTorch: ``torch.nn.functional.kl_div``.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> p = np.array([[0.5, 0.5]]); q = np.array([[0.9, 0.1]])
    >>> round(float(ce.kl_div(np.log(q), p, reduction="batchmean")), 4)
    0.5108
    """
    routed = torch_call("kl_div", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    return _kl_div_rule(input, target, reduction, log_target)[0]


@jax_rule
@traced_as(kl_div, "elements")
@defines_grad(kl_div, "input", "target")
@numeric_guard
def _kl_div_rule(
    input: Any,
    target: Any,
    reduction: str = "mean",
    log_target: bool = False,
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    return _kl("kl_div", input, target, reduction, log_target, False, wrt, cotangent)


def _kl(
    fn: str,
    input: Any,
    target: Any,
    reduction: str,
    log_target: bool,
    generalized: bool,
    wrt: tuple[str, ...],
    cotangent: Any = None,
) -> tuple[Any, dict]:
    """The KL loss of ``kl_div``, plus ``e^x - p`` when ``generalized``."""
    p = prepare_pair_call(
        fn, input, target, reduction, allowed=("none", "mean", "batchmean", "sum")
    )
    xp, x, t = p.xp, p.x, p.t
    if log_target:
        et = xp.exp(t)
        loss = et * (t - x)
    else:
        # 0 log 0 = 0 at exact zeros only: a negative or NaN target gives NaN, as
        # PyTorch's xlogy(t, t) does
        positive = t > 0
        log_t = xp.log(xp.where(positive, t, xp.ones_like(t)))
        nan = xp.full_like(t, float("nan"))
        loss = xp.where(positive, t * (log_t - x), xp.where(t == 0, -t * x, nan))
    if generalized:
        loss = loss + xp.exp(x) - (et if log_target else t)
    denominator = None
    if p.reduction == "batchmean":
        p.reduction = "mean"
        denominator = x.shape[0] if x.ndim > 0 else 1

    def d_input() -> Any:
        g = -et if log_target else -t
        return g + xp.exp(x) if generalized else g

    def d_target() -> Any:
        # at p = 0 the derivative log p + 1 - x diverges; PyTorch reports NaN there, we 0;
        # NaN below 0 (and for NaN), where the loss is not defined
        if log_target:
            return et * (t - x + (0 if generalized else 1))
        g = log_t + (0 if generalized else 1) - x
        return xp.where(positive, g, xp.where(t == 0, 0 * x, nan))

    local = {"input": d_input, "target": d_target}
    return finish_pair(p, loss, wrt, local, denominator, cotangent=cotangent)


def generalized_kl_div(
    input: Any, target: Any, reduction: str = "mean", log_target: bool = False
) -> Any:
    r"""Generalized (convex) Kullback-Leibler divergence: KL for unnormalised measures.

    :func:`kl_div` plus :math:`q - p`, element by element: a Bregman
    divergence that stays non-negative when neither side sums to 1 (e.g.
    intensities, counts, non-negative matrix factorisation).

    Parameters
    ----------
    input : array_like, floating, any shape
        Log of the model's measure, :math:`\log q`.
    target : array_like, floating, same shape as ``input``
        The reference measure :math:`p \ge 0` (its log when ``log_target``).
    reduction : {'mean', 'batchmean', 'sum', 'none'}, default 'mean'
        As :func:`kl_div`.
    log_target : bool, default False
        ``target`` holds :math:`\log p`.

    Returns
    -------
    array
        Scalar, or ``input``'s shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        Shape mismatch or invalid ``reduction``.
    DTypeError
        Integer ``input`` or ``target``.

    Notes
    -----
    .. math:: \ell = p\,(\log p - x) - p + e^{x} \quad (0 \log 0 = 0), \qquad
              \partial\ell/\partial x = e^{x} - p

    Summed over a vector it is :math:`D_{KL}(p\|q) + \sum q - \sum p`, which
    is :func:`kl_div`'s sum when both sum to 1.  optax:
    ``optax.losses.generalized_kl_divergence(log_predictions, targets)``
    (formerly ``convex_kl_divergence``; summed over the last axis).

    Examples
    --------
    :math:`q = e^0 = 1` against :math:`p = 2`: :math:`2 \log 2 - 2 + 1`:

    >>> import crossentropy as ce
    >>> round(float(ce.generalized_kl_div([0.0], [2.0], reduction="sum")), 4)
    0.3863
    """
    return _generalized_kl_rule(input, target, reduction, log_target)[0]


@jax_rule
@defines_grad(generalized_kl_div, "input", "target")
@numeric_guard
def _generalized_kl_rule(
    input: Any,
    target: Any,
    reduction: str = "mean",
    log_target: bool = False,
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    return _kl("generalized_kl_div", input, target, reduction, log_target, True, wrt, cotangent)
