"""``torch.nn`` with this library's losses: ``import crossentropy.torch.nn as nn``.

The loss classes below subclass PyTorch's own (``CrossEntropyLoss`` is a
``torch.nn.CrossEntropyLoss``), so they take PyTorch's constructor arguments
(``size_average``/``reduce`` included), keep ``weight`` and ``pos_weight`` as
buffers (``.to()``, ``.double()``, ``.cuda()`` and ``state_dict`` carry them),
and fit wherever PyTorch's do (``nn.Sequential``, ``isinstance`` checks);
only ``forward`` differs: it calls :mod:`crossentropy`'s function.  Some take
more than PyTorch's: ``axis``/``dim`` (the class axis), ``z_loss`` and
``softcap`` for ``CrossEntropyLoss``.  Every other name is PyTorch's
(``nn.Linear``, ``nn.Module``, ``nn.init``), so that a script needs one
changed import; ``nn.functional`` is :mod:`crossentropy.torch.nn.functional`.

Without PyTorch, :mod:`crossentropy.nn` has the same classes for NumPy and
any array library.

Examples
--------
>>> import torch
>>> import crossentropy.torch.nn as nn
>>> criterion = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 1.0]))
>>> criterion.double().weight.dtype          # a buffer: moved with the module
torch.float64
>>> logits = torch.tensor([[2.0, 1.0, 0.1]], dtype=torch.float64)
>>> round(criterion(logits, torch.tensor([0])).item(), 4)     # -log softmax(x)[0]
0.417
"""

from __future__ import annotations

from typing import Any

import torch

from ... import losses, special
from ..._core.aliases import axis_or_dim
from ...linear import linear_cross_entropy
from . import functional

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HingeLoss",
    "KLDivLoss",
    "LinearCrossEntropyLoss",
    "LogSoftmax",
    "MSELoss",
    "MultiMarginLoss",
    "NLLLoss",
    "Softmax",
    "functional",
]


def __getattr__(name: str) -> Any:
    """Every other name is PyTorch's: ``nn.Linear`` is ``torch.nn.Linear``."""
    try:
        return getattr(torch.nn, name)
    except AttributeError:
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}, and neither has torch.nn"
        ) from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(torch.nn)))


def _tensor(a: Any) -> Any:
    """``a`` as a tensor (a buffer must be one), ``None`` kept."""
    return a if a is None or isinstance(a, torch.Tensor) else torch.as_tensor(a)


class _Options:
    """A torch-like ``repr``: the options that differ from their defaults."""

    _defaults: dict[str, Any] = {}

    def extra_repr(self) -> str:
        return ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k, default in self._defaults.items()
            if getattr(self, k) != default
        )


class CrossEntropyLoss(_Options, torch.nn.CrossEntropyLoss):
    """:func:`crossentropy.cross_entropy` as a ``torch.nn.CrossEntropyLoss``.

    PyTorch's arguments, then keyword-only ``axis`` (or ``dim``, the class
    axis), ``z_loss`` and ``softcap`` (see :func:`crossentropy.cross_entropy`).
    """

    _defaults = {
        "ignore_index": -100,
        "reduction": "mean",
        "label_smoothing": 0.0,
        "axis": None,
        "z_loss": 0.0,
        "softcap": None,
    }

    def __init__(
        self,
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
    ) -> None:
        super().__init__(
            _tensor(weight), size_average, ignore_index, reduce, reduction, label_smoothing
        )
        self.axis = axis_or_dim(axis, dim)
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input: Any, target: Any) -> Any:
        return losses.cross_entropy(
            input,
            target,
            self.weight,
            self.ignore_index,
            self.reduction,
            self.label_smoothing,
            axis=self.axis,
            z_loss=self.z_loss,
            softcap=self.softcap,
        )


class NLLLoss(_Options, torch.nn.NLLLoss):
    """:func:`crossentropy.nll_loss` as a ``torch.nn.NLLLoss`` (on log-probabilities)."""

    _defaults = {"ignore_index": -100, "reduction": "mean", "axis": None}

    def __init__(
        self,
        weight: Any = None,
        size_average: Any = None,
        ignore_index: int = -100,
        reduce: Any = None,
        reduction: str = "mean",
        *,
        axis: int | None = None,
        dim: int | None = None,
    ) -> None:
        super().__init__(_tensor(weight), size_average, ignore_index, reduce, reduction)
        self.axis = axis_or_dim(axis, dim)

    def forward(self, input: Any, target: Any) -> Any:
        return losses.nll_loss(
            input, target, self.weight, self.ignore_index, self.reduction, axis=self.axis
        )


class BCELoss(_Options, torch.nn.BCELoss):
    """:func:`crossentropy.binary_cross_entropy` as a ``torch.nn.BCELoss``."""

    _defaults = {"reduction": "mean"}

    def __init__(
        self, weight: Any = None, size_average: Any = None, reduce: Any = None, reduction="mean"
    ) -> None:
        super().__init__(_tensor(weight), size_average, reduce, reduction)

    def forward(self, input: Any, target: Any) -> Any:
        return losses.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Options, torch.nn.BCEWithLogitsLoss):
    """:func:`crossentropy.binary_cross_entropy_with_logits` as a ``torch.nn.BCEWithLogitsLoss``."""

    _defaults = {"reduction": "mean"}

    def __init__(
        self,
        weight: Any = None,
        size_average: Any = None,
        reduce: Any = None,
        reduction: str = "mean",
        pos_weight: Any = None,
    ) -> None:
        super().__init__(_tensor(weight), size_average, reduce, reduction, _tensor(pos_weight))

    def forward(self, input: Any, target: Any) -> Any:
        return losses.binary_cross_entropy_with_logits(
            input, target, self.weight, self.reduction, self.pos_weight
        )


class KLDivLoss(_Options, torch.nn.KLDivLoss):
    """:func:`crossentropy.kl_div` as a ``torch.nn.KLDivLoss``."""

    _defaults = {"reduction": "mean", "log_target": False}

    def forward(self, input: Any, target: Any) -> Any:
        return losses.kl_div(input, target, self.reduction, self.log_target)


class MSELoss(_Options, torch.nn.MSELoss):
    """:func:`crossentropy.mse_loss` as a ``torch.nn.MSELoss``."""

    _defaults = {"reduction": "mean"}

    def forward(self, input: Any, target: Any) -> Any:
        return losses.mse_loss(input, target, self.reduction)


class MultiMarginLoss(_Options, torch.nn.MultiMarginLoss):
    """:func:`crossentropy.multi_margin_loss` as a ``torch.nn.MultiMarginLoss``."""

    _defaults = {"p": 1, "margin": 1.0, "reduction": "mean"}

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight: Any = None,
        size_average: Any = None,
        reduce: Any = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(p, margin, _tensor(weight), size_average, reduce, reduction)

    def forward(self, input: Any, target: Any) -> Any:
        return losses.multi_margin_loss(
            input, target, self.p, self.margin, self.weight, self.reduction
        )


class HingeLoss(_Options, torch.nn.Module):
    """:func:`crossentropy.hinge_loss` (binary, labels ±1) as a module; PyTorch has none."""

    _defaults = {"margin": 1.0, "reduction": "mean"}

    def __init__(self, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.margin = margin
        self.reduction = reduction

    def forward(self, input: Any, target: Any) -> Any:
        return losses.hinge_loss(input, target, self.margin, self.reduction)


class Softmax(torch.nn.Softmax):
    """:func:`crossentropy.softmax` along ``dim`` as a ``torch.nn.Softmax``
    (``dim=None`` is PyTorch's deprecated implicit choice, PyTorch's code)."""

    def forward(self, input: Any) -> Any:
        if self.dim is None:
            return super().forward(input)
        return special.softmax(input, dim=self.dim)


class LogSoftmax(torch.nn.LogSoftmax):
    """:func:`crossentropy.log_softmax` along ``dim`` as a ``torch.nn.LogSoftmax``
    (``dim=None`` is PyTorch's deprecated implicit choice, PyTorch's code)."""

    def forward(self, input: Any) -> Any:
        if self.dim is None:
            return super().forward(input)
        return special.log_softmax(input, dim=self.dim)


class LinearCrossEntropyLoss(getattr(torch.nn, "LinearCrossEntropyLoss", torch.nn.Module)):
    """:func:`crossentropy.linear_cross_entropy` as a ``torch.nn.LinearCrossEntropyLoss``
    (PyTorch 2.13): the output layer ``self.linear`` and the loss, never forming
    the logits.  PyTorch's ``options`` (its chunking) are not used: the chunks
    are chosen as in :func:`crossentropy.linear_cross_entropy`.  With
    ``out_features`` (PyTorch's K-dimensional classes) the forward is PyTorch's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not hasattr(torch.nn, "LinearCrossEntropyLoss"):
            raise NotImplementedError(
                f"LinearCrossEntropyLoss needs PyTorch 2.13 or newer (this is {torch.__version__}); "
                "crossentropy.linear_cross_entropy works with any version"
            )
        super().__init__(*args, **kwargs)

    def forward(self, input: Any, target: Any) -> Any:
        if self.out_features:
            return super().forward(input, target)
        return linear_cross_entropy(
            input,
            self.linear.weight,
            target,
            linear_bias=self.linear.bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )
