"""PyTorch's argument names accepted beside ours: ``dim=`` for ``axis=``.

PyTorch calls the axis of a reduction ``dim``; NumPy and the Array API call it
``axis``.  Every function that takes ``axis`` also takes ``dim`` (keyword-only,
last), so that ``softmax(x, dim=1)`` copied from PyTorch code runs unchanged.
:func:`axis_or_dim` is the one place the two are reconciled.
"""

from __future__ import annotations

from typing import Any

__all__ = ["axis_or_dim"]


def axis_or_dim(axis: Any, dim: Any, default: Any = None) -> Any:
    """The axis a caller asked for with ``axis=`` or with its PyTorch name ``dim=``.

    Returns ``axis`` if given, else ``dim`` if given, else ``default``.  Both
    given (even to the same value) raise ``TypeError``, as a repeated
    argument does in Python: they name the same thing.
    """
    if dim is None:
        return default if axis is None else axis
    if axis is not None:
        raise TypeError(
            f"got axis={axis!r} and dim={dim!r}: dim is PyTorch's name for axis; pass only one"
        )
    return dim
