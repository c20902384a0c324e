"""PyTorch-style loss classes: ``criterion = CrossEntropyLoss(); loss = criterion(pred, y)``.

Thin wrappers that store the options and call the functions of
:mod:`crossentropy`, so that code from PyTorch tutorials runs unchanged on
NumPy arrays (and still on tensors).  They hold no parameters and no state.
"""

from __future__ import annotations

from typing import Any

from . import losses, special
from ._core.aliases import axis_or_dim

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HingeLoss",
    "KLDivLoss",
    "LogSoftmax",
    "MSELoss",
    "MultiMarginLoss",
    "NLLLoss",
    "Softmax",
]


class _Module:
    """Callable holding keyword options for one function; ``forward`` is ``__call__``."""

    _fn: Any = None

    def __init__(self, **options: Any) -> None:
        self._options = options

    def __call__(self, *arrays: Any) -> Any:
        return type(self)._fn(*arrays, **self._options)

    forward = __call__

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("_options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._options.items() if v is not None)
        return f"{type(self).__name__}({args})"


class CrossEntropyLoss(_Module):
    """:func:`crossentropy.cross_entropy` as a loss object.

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.nn import CrossEntropyLoss
    >>> criterion = CrossEntropyLoss()
    >>> round(float(criterion(np.array([[2.0, 1.0, 0.1]]), np.array([0]))), 4)
    0.417
    """

    _fn = staticmethod(losses.cross_entropy)

    def __init__(
        self,
        weight=None,
        ignore_index=-100,
        reduction="mean",
        label_smoothing=0.0,
        *,
        axis=None,
        dim=None,
    ):
        super().__init__(
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            axis=axis_or_dim(axis, dim),
        )


class NLLLoss(_Module):
    """:func:`crossentropy.nll_loss` as a loss object (on log-probabilities)."""

    _fn = staticmethod(losses.nll_loss)

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", *, axis=None, dim=None):
        super().__init__(
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            axis=axis_or_dim(axis, dim),
        )


class BCELoss(_Module):
    """:func:`crossentropy.binary_cross_entropy` as a loss object (on probabilities)."""

    _fn = staticmethod(losses.binary_cross_entropy)

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(weight=weight, reduction=reduction)


class BCEWithLogitsLoss(_Module):
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a loss object."""

    _fn = staticmethod(losses.binary_cross_entropy_with_logits)

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(weight=weight, reduction=reduction, pos_weight=pos_weight)


class KLDivLoss(_Module):
    """:func:`crossentropy.kl_div` as a loss object."""

    _fn = staticmethod(losses.kl_div)

    def __init__(self, reduction="mean", log_target=False):
        super().__init__(reduction=reduction, log_target=log_target)


class MSELoss(_Module):
    """:func:`crossentropy.mse_loss` as a loss object."""

    _fn = staticmethod(losses.mse_loss)

    def __init__(self, reduction="mean"):
        super().__init__(reduction=reduction)


class MultiMarginLoss(_Module):
    """:func:`crossentropy.multi_margin_loss` as a loss object."""

    _fn = staticmethod(losses.multi_margin_loss)

    def __init__(self, p=1, margin=1.0, weight=None, reduction="mean"):
        super().__init__(p=p, margin=margin, weight=weight, reduction=reduction)


class HingeLoss(_Module):
    """:func:`crossentropy.hinge_loss` (binary, labels ±1) as a loss object."""

    _fn = staticmethod(losses.hinge_loss)

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(margin=margin, reduction=reduction)


class Softmax(_Module):
    """:func:`crossentropy.softmax` along ``dim`` (PyTorch's name for the axis).

    Examples
    --------
    >>> import numpy as np
    >>> from crossentropy.nn import Softmax
    >>> Softmax(dim=1)(np.array([[0.0, 0.0]]))
    array([[0.5, 0.5]])
    """

    _fn = staticmethod(special.softmax)

    def __init__(self, dim=-1):
        super().__init__(axis=dim)
        self.dim = dim

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim!r})"


class LogSoftmax(_Module):
    """:func:`crossentropy.log_softmax` along ``dim`` (PyTorch's name for the axis)."""

    _fn = staticmethod(special.log_softmax)

    def __init__(self, dim=-1):
        super().__init__(axis=dim)
        self.dim = dim

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim!r})"
