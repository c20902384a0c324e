"""Helpers shared by the subcommands: errors, parsing number lists, formatting."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CLIError",
    "UsageError",
    "add_help_example",
    "fmt",
    "load_matrix",
    "parse_rows",
    "table",
]


class CLIError(Exception):
    """A problem with the user's data: printed as ``crossentropy CMD: error: ...``, exit 1."""

    code = 1


class UsageError(CLIError):
    """A problem with how the command was called: exit 2, like argparse's own errors."""

    code = 2


def add_help_example(description: str, examples: str) -> dict:
    """``argparse`` keyword arguments: a description and an ``Examples:`` epilog."""
    return {
        "description": description,
        "epilog": "examples:\n" + examples,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def _float(token: str, what: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise UsageError(f"{what}: {token!r} is not a number") from None


def parse_rows(tokens: Sequence[str], what: str) -> np.ndarray:
    """Numbers typed on the command line as a float64 ``(rows, C)`` matrix.

    Rows are separated by ``/`` (``2 1 0.1 / 0.5 2.5 0.3``); a single token
    that is not a number is read as a file (see :func:`load_matrix`).
    """
    tokens = list(tokens)
    if len(tokens) == 1 and not _is_number(tokens[0]):
        return load_matrix(tokens[0], what)
    rows: list[list[float]] = [[]]
    for tok in tokens:
        if tok == "/":
            rows.append([])
        else:
            rows[-1].extend(_float(t, what) for t in tok.replace(",", " ").split())
    if any(len(r) == 0 for r in rows):
        raise UsageError(f"{what}: empty row (check the '/' separators)")
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise UsageError(
            f"{what}: every row needs the same number of classes, got rows of lengths "
            f"{[len(r) for r in rows]}"
        )
    return np.array(rows, dtype=np.float64)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def load_matrix(path: str, what: str) -> np.ndarray:
    """A small ``(rows, C)`` float64 matrix from ``.npy``, ``.npz`` (first array) or text/CSV."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what}: {path!r} is neither a list of numbers nor a file")
    try:
        if p.suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                a = z[z.files[0]]
        else:
            a = np.loadtxt(p, delimiter="," if p.suffix == ".csv" else None, ndmin=2)
    except (ValueError, OSError, IndexError) as e:
        raise CLIError(f"{what}: cannot read {path!r}: {e}") from None
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise CLIError(f"{what}: {path!r} must hold a (rows, classes) matrix, got shape {a.shape}")
    return a


def fmt(v: float, digits: int = 4) -> str:
    """A number with ``digits`` decimals, or in scientific notation when that hides it."""
    v = float(v) + 0.0  # -0.0 -> 0.0
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0 or 10 ** (-digits) <= abs(v) < 1e7:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}e}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A plain-text table: columns right-aligned unless ``align[i] == 'l'``."""
    cols = len(header)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(cols)]
    lines = []
    for r in [header, *rows]:
        cells = []
        for i in range(cols):
            left = i < len(align) and align[i] == "l"
            cells.append(str(r[i]).ljust(widths[i]) if left else str(r[i]).rjust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    rule = "  ".join(("-" if h else " ") * w for h, w in zip(header, widths))
    lines.insert(1, rule.rstrip())
    return "\n".join(lines)
