"""What every objective of the chunk engine does with a vocabulary block.

An objective (:mod:`._softmax`: cross-entropy; :mod:`._divergence`:
distillation) makes each ``(block, rows)`` logits block with one GEMM
(:func:`logits_block`), turns it into its gradient with respect to the logits,
and hands that to :func:`add_products`, which adds its part of the three
gradients while it is still in cache: ``dinput.T += W_block.T @ G``,
``dW_block += G @ (row * x)`` and ``db_block += G @ row``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat

__all__ = [
    "ChunkOut",
    "Grads",
    "add_products",
    "cast",
    "logits_block",
    "spans",
    "take_rows",
    "zeros_rows",
]


def cast(xp: Any, a: Any, dtype: Any) -> Any:
    """``a`` in ``dtype`` (``a`` itself if it has it)."""
    return a if a.dtype == dtype else xp.astype(a, dtype)


def spans(n: int, step: int) -> list[tuple[int, int]]:
    """``[(0, step), (step, 2 step), ...]`` up to ``n``."""
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def take_rows(xp: Any, a: Any, rows: Any) -> Any:
    """Rows ``rows`` (a slice or an index array) of ``a``."""
    return a[rows, ...] if isinstance(rows, slice) else xp.take(a, rows, axis=0)


def zeros_rows(c: Any, n: int) -> Any:
    """``(n,)`` zeros in the compute dtype, on the input's device."""
    return c.xp.zeros((n,), dtype=c.cdtype, device=array_api_compat.device(c.x))


@dataclass
class Grads:
    """Gradient accumulators (``None`` for those not wanted)."""

    dx: Any  # (N, D) caller's dtype (mutable libraries) or list of row chunks
    dw: list | None  # per vocabulary block, (block, D) views or arrays, accumulation dtype
    dw_full: Any  # the (V, D) array the views belong to (mutable libraries)
    db: Any  # per vocabulary block, (block,) accumulation dtype
    dt: Any  # (N, V) probability targets' gradient (mutable libraries) or list of row chunks


@dataclass
class ChunkOut:
    """What an objective returns for a chunk of counted rows."""

    loss: Any  # (rows,) per-row losses
    extras: dict  # name -> (rows,) per-row statistics (may be empty)
    dx: Any = None  # (rows, D) rows of the input gradient, or None
    dt: Any = None  # (rows, V) rows of the target gradient, or None


def logits_block(c: Any, w: Any, bias: Any, xt: Any, span: tuple, out: Any) -> Any:
    """``w[j0:j1] @ xt + bias[j0:j1]``: a ``(block, rows)`` logits block by one GEMM.

    ``xt`` is the ``(D, rows)`` transposed input chunk in the GEMM dtype
    (already divided by the temperature), ``bias`` ``None`` or in the compute
    dtype (divided too), ``out`` the part of a reused buffer the block goes to
    (or ``None``).
    """
    j0, j1 = span
    b = c.ops.mm(cast(c.xp, w[j0:j1, :], c.gdtype), xt, out)
    if bias is not None:
        b += bias[j0:j1, None]
    return b


def add_products(
    c: Any, grads: Grads, k: int, span: tuple, g: Any, xs: Any, row: Any, dxt: Any
) -> Any:
    """Add block ``k``'s gradient ``g`` (``(block, rows)``, gradient with respect
    to its logits before the per-row factor ``row``) into the three products.

    ``xs`` is ``row * x`` of the chunk (``(rows, D)``, GEMM dtype); ``dxt`` the
    chunk's ``(D, rows)`` input gradient before ``row`` (or ``None``), returned
    updated.
    """
    xp, ops = c.xp, c.ops
    j0, j1 = span
    gg = cast(xp, g, c.gdtype)
    if dxt is not None:  # dx.T += W_block.T @ G_block
        dxt = ops.addmm_(dxt, cast(xp, c.w[j0:j1, :], c.gdtype).T, gg)
    if grads.dw is not None:  # dW_block += G_block @ (row * x)
        grads.dw[k] = ops.addmm_(grads.dw[k], gg, xs)
    if grads.db is not None:
        grads.db[k] = grads.db[k] + xp.matmul(g, row)
    return dxt
