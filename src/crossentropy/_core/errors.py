"""The exception and warning types the library raises (re-exported by :mod:`crossentropy`)."""

from __future__ import annotations

__all__ = ["DTypeError", "ProbabilitiesAsLogitsWarning", "TargetIndexError"]


class DTypeError(TypeError, ValueError):
    """An array has the wrong kind of dtype (integer where floats are expected,
    or the reverse).  Subclasses both ``TypeError`` and ``ValueError``."""

    __module__ = "crossentropy"


class TargetIndexError(IndexError, ValueError):
    """A class-index target lies outside ``[0, C)`` and is not ``ignore_index``.
    Subclasses both ``IndexError`` (as PyTorch) and ``ValueError``."""

    __module__ = "crossentropy"


class ProbabilitiesAsLogitsWarning(UserWarning):
    """Rows passed as logits already look like probabilities.

    ``cross_entropy`` applies ``log_softmax`` itself; feeding it the output of
    ``softmax`` squashes every logit into [0, 1] and the loss stops learning.
    """

    __module__ = "crossentropy"
