"""``eval --hidden``: a language model's predictions from its hidden states and output layer.

:func:`open_hidden` opens the hidden states for block reading (as any
predictions file) and loads the output layer; the :class:`HiddenSource` it
returns yields the logits ``hidden @ head.T + bias`` one block of rows at a
time, so that ``eval`` reports on them exactly as on a logits file, without the
``(tokens, vocabulary)`` logits ever being written or held.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from ._util import CLIError
from .readers import Source, display_name, load_matrix, open_predictions

__all__ = [
    "HIDDEN_BLOCK_ELEMENTS",
    "HiddenSource",
    "check_labels",
    "hidden_names",
    "open_hidden",
    "reworded",
]

#: logits per block (rows x vocabulary, float64): 64 MiB, 65 tokens at V = 128000.  Larger
#: than eval's own blocks: each block reads the whole output layer once.
HIDDEN_BLOCK_ELEMENTS = 1 << 23


class HiddenSource(Source):
    """The logits of a linear output layer on hidden states read in blocks of rows."""

    def __init__(self, hidden: Source, head: np.ndarray, bias: np.ndarray | None) -> None:
        super().__init__(hidden.path, hidden.n_rows, head.shape[0], np.dtype(np.float64))
        self.hidden, self.head_t, self.bias = hidden, np.ascontiguousarray(head.T), bias

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        for block in self.hidden.blocks(rows):
            logits = np.asarray(block, dtype=np.float64) @ self.head_t
            if self.bias is not None:
                logits += self.bias
            yield logits

    def close(self) -> None:
        self.hidden.close()


#: how eval's messages about PREDICTIONS and TARGETS read with --hidden, --head and --labels
_RENAMES = (
    ("of PREDICTIONS", "of HEAD"),  # --top-k larger than the number of classes
    ("PREDICTIONS (logits) has", "the logits HIDDEN @ HEAD.T have"),  # NaN rows
    ("PREDICTIONS", "HIDDEN"),
    ("TARGETS", "LABELS"),
)


@contextlib.contextmanager
def reworded(*replacements: tuple[str, str]) -> Iterator[None]:
    """``CLIError`` raised within this context, its message with each ``(old, new)``
    replaced in turn."""
    try:
        yield
    except CLIError as e:
        message = str(e)
        for old, new in replacements:
            message = message.replace(old, new)
        raise type(e)(message) from None


def hidden_names(active: bool = True) -> contextlib.AbstractContextManager:
    """A context in which (if ``active``) ``CLIError`` messages name eval's inputs as
    ``--hidden``, ``--head`` and ``--labels`` give them, not PREDICTIONS and TARGETS."""
    return reworded(*_RENAMES) if active else contextlib.nullcontext()


def check_labels(source: HiddenSource, labels: np.ndarray) -> None:
    """``CLIError`` unless there is one label per token (and at least one token)."""
    n, d = source.n_rows, source.hidden.n_classes
    name = display_name(source.path)
    if n == 0:
        raise CLIError(f"HIDDEN: {name} holds no tokens (shape (0, {d}))")
    if len(labels) != n:
        raise CLIError(
            f"shape mismatch: HIDDEN {name} has {n} tokens ({n} x {d}) but LABELS has "
            f"{len(labels)} labels; they must have one label per token"
        )


def open_hidden(hidden: str, head: str, bias: str | None) -> HiddenSource:
    """Open ``hidden`` (``(tokens, D)``) for block reading and load the output layer
    ``head`` (``(V, D)``) and ``bias`` (``(V,)``); ``CLIError`` if they do not fit."""
    with reworded(("(rows, classes)", "(tokens, features)"), *_RENAMES):
        source = open_predictions(hidden)
    try:
        w, b = _head(head, bias, source)
    except CLIError:
        source.close()
        raise
    return HiddenSource(source, w, b)


def _head(head: str, bias: str | None, source: Source) -> tuple[np.ndarray, np.ndarray | None]:
    """The output layer's weight and bias, checked against the hidden states."""
    with reworded(("(rows, classes)", "(vocabulary, features)")):
        w = load_matrix(head, "HEAD")
    if w.shape[1] != source.n_classes:
        raise CLIError(
            f"shape mismatch: HIDDEN {display_name(source.path)} has {source.n_classes} features "
            f"per token ({source.n_rows} x {source.n_classes}) but HEAD has shape {w.shape}; "
            f"HEAD must be the (vocabulary, {source.n_classes}) weight of the output layer"
        )
    if bias is None:
        return w, None
    with reworded(("a (rows, classes) matrix", "one value per class of HEAD")):
        b = load_matrix(bias, "BIAS")
    if b.shape[0] != 1 or b.shape[1] != w.shape[0]:
        raise CLIError(
            f"shape mismatch: BIAS must hold one value per class of HEAD ({w.shape[0]}), "
            f"got shape {b.shape if b.shape[0] != 1 else (b.shape[1],)}"
        )
    return w, b[0]
