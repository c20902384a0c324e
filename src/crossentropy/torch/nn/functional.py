"""``torch.nn.functional`` with this library's losses: ``import crossentropy.torch.nn.functional as F``.

The losses and softmax functions below have PyTorch's signatures (positional
order, the deprecated ``size_average``/``reduce``, ``dim``), and call
:mod:`crossentropy`'s functions; every other name (``F.relu``,
``F.one_hot``) is PyTorch's.

Examples
--------
>>> import torch
>>> import crossentropy.torch.nn.functional as F
>>> x = torch.tensor([[2.0, 1.0, 0.1]])
>>> round(F.cross_entropy(x, torch.tensor([0])).item(), 4)        # -log softmax(x)[0]
0.417
>>> F.relu(torch.tensor([-1.0, 2.0]))                             # PyTorch's
tensor([0., 2.])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as _torch_functional

from ... import losses, special
from ...linear import linear_cross_entropy as _linear_cross_entropy

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "kl_div",
    "linear_cross_entropy",
    "log_softmax",
    "mse_loss",
    "multi_margin_loss",
    "nll_loss",
    "softmax",
]


def __getattr__(name: str) -> Any:
    """Every other name is PyTorch's: ``F.relu`` is ``torch.nn.functional.relu``."""
    try:
        return getattr(_torch_functional, name)
    except AttributeError:
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}, and neither has torch.nn.functional"
        ) from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_torch_functional)))


def _reduction(size_average: Any, reduce: Any, reduction: str) -> str:
    """PyTorch's reading of the deprecated ``size_average``/``reduce`` (it warns)."""
    if size_average is None and reduce is None:
        return reduction
    return torch.nn._reduction.legacy_get_string(size_average, reduce)


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    axis: int | None = None,
    dim: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> Any:
    """:func:`crossentropy.cross_entropy` with ``torch.nn.functional.cross_entropy``'s signature."""
    return losses.cross_entropy(
        input,
        target,
        weight,
        ignore_index,
        _reduction(size_average, reduce, reduction),
        label_smoothing,
        axis=axis,
        dim=dim,
        z_loss=z_loss,
        softcap=softcap,
    )


def nll_loss(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    dim: int | None = None,
) -> Any:
    """:func:`crossentropy.nll_loss` with ``torch.nn.functional.nll_loss``'s signature."""
    reduction = _reduction(size_average, reduce, reduction)
    return losses.nll_loss(input, target, weight, ignore_index, reduction, axis=axis, dim=dim)


def binary_cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Any:
    """:func:`crossentropy.binary_cross_entropy` with PyTorch's signature."""
    reduction = _reduction(size_average, reduce, reduction)
    return losses.binary_cross_entropy(input, target, weight, reduction)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Any:
    """:func:`crossentropy.binary_cross_entropy_with_logits` with PyTorch's signature."""
    reduction = _reduction(size_average, reduce, reduction)
    return losses.binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight)


def kl_div(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Any:
    """:func:`crossentropy.kl_div` with ``torch.nn.functional.kl_div``'s signature."""
    return losses.kl_div(input, target, _reduction(size_average, reduce, reduction), log_target)


def mse_loss(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Any:
    """:func:`crossentropy.mse_loss` with ``torch.nn.functional.mse_loss``'s signature."""
    return losses.mse_loss(input, target, _reduction(size_average, reduce, reduction))


def multi_margin_loss(
    input: Any,
    target: Any,
    p: int = 1,
    margin: float = 1.0,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> Any:
    """:func:`crossentropy.multi_margin_loss` with PyTorch's signature."""
    reduction = _reduction(size_average, reduce, reduction)
    return losses.multi_margin_loss(input, target, p, margin, weight, reduction)


def linear_cross_entropy(
    input: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
) -> Any:
    """:func:`crossentropy.linear_cross_entropy` with PyTorch 2.13's signature:
    ``ignore_index=None`` (no target ignored) by default; ``options`` (PyTorch's
    chunking) is accepted and not used, the chunks being chosen here."""
    return _linear_cross_entropy(
        input,
        linear_weight,
        target,
        linear_bias=linear_bias,
        weight=weight,
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


def softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    """:func:`crossentropy.softmax` with ``torch.nn.functional.softmax``'s signature
    (``dim=None`` and ``dtype`` are PyTorch's code: its implicit axis, its cast)."""
    if dim is None or dtype is not None:
        return _torch_functional.softmax(input, dim, _stacklevel + 1, dtype)
    return special.softmax(input, dim=dim)


def log_softmax(input: Any, dim: int | None = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    """:func:`crossentropy.log_softmax` with ``torch.nn.functional.log_softmax``'s
    signature (``dim=None`` and ``dtype`` are PyTorch's code)."""
    if dim is None or dtype is not None:
        return _torch_functional.log_softmax(input, dim, _stacklevel + 1, dtype)
    return special.log_softmax(input, dim=dim)
