"""The types of the public signatures, for annotating code that calls this library.

* ``ArrayT`` -- the type variable of the functions whose result is in the
  array library of their first argument: ``numpy.ndarray`` in (or a Python
  number or nested list) gives ``numpy.ndarray`` out, ``torch.Tensor`` gives
  ``torch.Tensor``, ``jax.Array`` gives ``jax.Array``, any other Array API
  array an ``ArrayAPIArray``.
* ``Array`` -- any of those arrays; ``ArrayLike`` -- what NumPy
  converts: numbers, NumPy scalars, nested sequences.
* ``Reduction`` -- ``'none' | 'mean' | 'sum'``, the ``reduction=`` of
  every loss; ``KLReduction`` adds ``'batchmean'`` (``kl_div``).

Examples
--------
>>> import numpy as np
>>> import crossentropy as ce
>>> from crossentropy.typing import Reduction
>>> def mean_or_sum(logits: np.ndarray, labels: np.ndarray, how: Reduction) -> float:
...     return float(ce.cross_entropy(logits, labels, reduction=how))
>>> mean_or_sum(np.zeros((2, 4)), np.array([0, 3]), "sum")    # 2 log 4
2.772588722239781
"""

from ._core.reduction import KLReduction, Reduction
from ._core.types import Array, ArrayAPIArray, ArrayLike, ArrayT

__all__ = ["Array", "ArrayAPIArray", "ArrayLike", "ArrayT", "KLReduction", "Reduction"]
