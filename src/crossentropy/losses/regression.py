"""Mean squared error."""

from __future__ import annotations

from typing import Any

from .._core.namespace import numeric_guard
from .._core.prepared import finish_pair, prepare_pair_call
from .._core.rules import defines_grad
from ..jax_rules import jax_rule
from ..kernels.custom_ops import torch_call, traced_as

__all__ = ["mse_loss"]


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Any:
    r"""Mean squared error between ``input`` and ``target``.

    The usual baseline against cross-entropy: on probabilities after a
    sigmoid or softmax it trains classifiers more slowly than cross-entropy (its gradient vanishes
    where the sigmoid saturates); ``crossentropy demo`` measures that.

    Parameters
    ----------
    input : array_like, floating, any shape
    target : array_like, floating, same shape as ``input``
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Returns
    -------
    array
        Scalar, or ``input``'s shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        Shape mismatch (PyTorch broadcasts with a warning; here it is an
        error) or invalid ``reduction``.
    DTypeError
        Integer ``input`` or ``target``.

    Notes
    -----
    .. math:: \ell = (x - y)^2, \qquad \partial\ell/\partial x = 2 (x - y)

    PyTorch: ``torch.nn.functional.mse_loss``.

    Examples
    --------
    Two sets of predictions for three samples against one-hot labels: the
    squared errors summed over the classes of each sample, and the second
    set's mean over the samples:

    >>> import numpy as np
    >>> import crossentropy as ce
    >>> onehot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> pred1 = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
    >>> pred2 = np.array([[0.1, 0.2, 0.7], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]])
    >>> ce.mse_loss(pred1, onehot, reduction="none").sum(axis=1).round(2)
    array([0.54, 0.54, 1.34])
    >>> round(float(ce.mse_loss(pred2, onehot, reduction="sum")) / 3, 2)
    0.34
    """
    routed = torch_call("mse_loss", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    return _mse_rule(input, target, reduction)[0]


@jax_rule
@traced_as(mse_loss, "elements")
@defines_grad(mse_loss, "input", "target")
@numeric_guard
def _mse_rule(
    input: Any,
    target: Any,
    reduction: str = "mean",
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    p = prepare_pair_call("mse_loss", input, target, reduction)
    diff = p.x - p.t
    return finish_pair(
        p,
        diff * diff,
        wrt,
        {"input": lambda: 2 * diff, "target": lambda: -2 * diff},
        cotangent=cotangent,
    )
