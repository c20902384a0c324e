"""Kullback-Leibler divergence loss on log-probabilities (PyTorch's ``kl_div``)."""

from __future__ import annotations

from typing import Any

from .._core.namespace import numeric_guard
from .._core.prepared import finish_pair, prepare_pair_call
from .._core.rules import defines_grad
from ..kernels.custom_ops import torch_call, traced_as

__all__ = ["kl_div"]


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
) -> tuple[Any, dict]:
    p = prepare_pair_call(
        "kl_div", input, target, reduction, allowed=("none", "mean", "batchmean", "sum")
    )
    xp, x, t = p.xp, p.x, p.t
    if log_target:
        et = xp.exp(t)
        loss = et * (t - x)
    else:
        positive = t > 0
        log_t = xp.log(xp.where(positive, t, xp.ones_like(t)))
        loss = xp.where(positive, t * (log_t - x), -t * x)
    denominator = None
    if p.reduction == "batchmean":
        p.reduction = "mean"
        denominator = x.shape[0] if x.ndim > 0 else 1

    def d_input() -> Any:
        return -et if log_target else -t

    def d_target() -> Any:
        # at p = 0 the derivative log p + 1 - x diverges; PyTorch reports NaN there, we 0
        return et * (t - x + 1) if log_target else xp.where(positive, log_t + 1 - x, 0 * x)

    return finish_pair(p, loss, wrt, {"input": d_input, "target": d_target}, denominator)
