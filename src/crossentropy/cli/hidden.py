"""``eval --hidden``: a language model's predictions from its hidden states and output layer.

:func:`open_hidden` opens the hidden states for block reading (as any
predictions file) and loads the output layer; the :class:`HiddenSource` it
returns yields the logits ``hidden @ head.T + bias`` one block of rows at a
time, so that ``eval`` reports on them exactly as on a logits file, without the
``(tokens, vocabulary)`` logits ever being written or held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ._util import CLIError
from .readers import Source, display_name, load_matrix, open_predictions

__all__ = ["HIDDEN_BLOCK_ELEMENTS", "HiddenSource", "open_hidden"]

#: logits per block (rows x vocabulary, float64): 64 MiB, 65 tokens at V = 128000.  Larger
#: than eval's own blocks: each block reads the whole output layer once.
HIDDEN_BLOCK_ELEMENTS = 1 << 23


class HiddenSource(Source):
    """The logits of a linear output layer on hidden states read in blocks of rows."""

    def __init__(self, hidden: Source, head: np.ndarray, bias: np.ndarray | None) -> None:
        super().__init__(hidden.path, hidden.n_rows, head.shape[0], np.dtype(np.float64))
        self.hidden, self.head_t, self.bias = hidden, np.ascontiguousarray(head.T), bias

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        for block in _renamed(lambda: self.hidden.blocks(rows)):
            logits = np.asarray(block, dtype=np.float64) @ self.head_t
            if self.bias is not None:
                logits += self.bias
            yield logits

    def close(self) -> None:
        self.hidden.close()


def _renamed(blocks: Callable[[], Iterator[np.ndarray]]) -> Iterator[np.ndarray]:
    """The hidden states' blocks, their read errors naming HIDDEN, not PREDICTIONS."""
    try:
        yield from blocks()
    except CLIError as e:
        raise type(e)(str(e).replace("PREDICTIONS", "HIDDEN")) from None


def open_hidden(hidden: str, head: str, bias: str | None) -> HiddenSource:
    """Open ``hidden`` (``(tokens, D)``) for block reading and load the output layer
    ``head`` (``(V, D)``) and ``bias`` (``(V,)``); ``CLIError`` if they do not fit."""
    try:
        source = open_predictions(hidden)
    except CLIError as e:
        raise type(e)(str(e).replace("PREDICTIONS", "HIDDEN")) from None
    w = load_matrix(head, "HEAD")
    if w.shape[1] != source.n_classes:
        source.close()
        raise CLIError(
            f"shape mismatch: HIDDEN {display_name(source.path)} has {source.n_classes} features "
            f"per token ({source.n_rows} x {source.n_classes}) but HEAD has shape {w.shape}; "
            f"HEAD must be the (vocabulary, {source.n_classes}) weight of the output layer"
        )
    b = None
    if bias is not None:
        b = load_matrix(bias, "BIAS")
        if b.shape[0] != 1 or b.shape[1] != w.shape[0]:
            source.close()
            raise CLIError(
                f"shape mismatch: BIAS must hold one value per class of HEAD ({w.shape[0]}), "
                f"got shape {b.shape if b.shape[0] != 1 else (b.shape[1],)}"
            )
        b = b[0]
    return HiddenSource(source, w, b)
