"""The array types of the public signatures, for type checkers.

``ArrayT`` is the type variable of the functions whose result is in the array
library of their first argument: a NumPy array in gives ``numpy.ndarray`` out,
a ``torch.Tensor`` gives a ``torch.Tensor``, a ``jax.Array`` a ``jax.Array``,
and any other Array API array (CuPy, Dask, array-api-strict) an
``ArrayAPIArray``.  Python numbers, NumPy scalars and nested sequences
(``ArrayLike``) are converted with NumPy, so they give ``numpy.ndarray``
too: a type checker takes the first constraint when the argument fixes none.
An argument typed ``Any`` gives ``Any``.

``Array`` is any of those arrays, for the arguments that do not decide the
result's type (targets, weights, masks).  PyTorch and JAX are imported only by
type checkers, never at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import jax
    import torch

__all__ = ["Array", "ArrayAPIArray", "ArrayLike", "ArrayT"]


class ArrayAPIArray(Protocol):
    """An array of any other library that implements the Array API standard."""

    @property
    def shape(self) -> tuple[int | None, ...]: ...

    @property
    def ndim(self) -> int: ...

    @property
    def dtype(self) -> Any: ...

    def __array_namespace__(self, /, *, api_version: str | None = None) -> Any: ...

    def __getitem__(self, key: Any, /) -> Any: ...

    def __setitem__(self, key: Any, value: Any, /) -> None: ...


ArrayT = TypeVar("ArrayT", NDArray[Any], "torch.Tensor", "jax.Array", ArrayAPIArray)
"""The array type a function returns: that of its first argument (NumPy for array-likes)."""

# Union (not |): the members named by strings exist only for type checkers
Array = Union[NDArray[Any], "torch.Tensor", "jax.Array", ArrayAPIArray]  # noqa: UP007
"""An array of any supported library."""

ArrayLike = complex | np.generic | Sequence[Any]
"""What NumPy converts to an array: a number, a NumPy scalar, nested sequences of them."""
