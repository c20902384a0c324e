"""A vocabulary shard as the per-row math sees it: an offset, a width and collectives.

When the classes are split over processes (tensor parallelism), each process
computes on its slice ``[offset, offset + width)`` of ``n_classes`` and combines
per-row statistics with the others through the callables held here.  The
reference math (:mod:`.softmax_ce`, and the chunk engine of
:mod:`crossentropy.linear`) takes an optional :class:`VocabShard`; the
collectives themselves (``torch.distributed``) are bound by
:mod:`crossentropy.distributed`, so nothing here imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["VocabShard"]


@dataclass(frozen=True)
class VocabShard:
    """This process's slice ``[offset, offset + width)`` of a vocabulary of
    ``n_classes`` entries, and the collectives that combine per-row statistics.

    ``all_max(m)`` returns the element-wise maximum of ``m`` over the
    processes; ``all_sum(*rows)`` the sums of several per-row arrays at once
    (``None`` entries pass through); ``all_sum_input_grad(g)`` adds up the
    partial gradients of a replicated input.  The per-row code calls
    ``all_max`` once and ``all_sum`` once per block of rows.
    """

    offset: int
    width: int
    n_classes: int
    weight_sum: Any  # the sum of the whole class-weight vector, or n_classes
    all_max: Callable[[Any], Any]
    all_sum: Callable[..., tuple]
    all_sum_input_grad: Callable[[Any], Any]
