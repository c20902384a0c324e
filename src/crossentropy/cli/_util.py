"""Helpers shared by the subcommands: errors, the sum tolerance, formatting."""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "SUM_TOLERANCE",
    "CLIError",
    "UsageError",
    "add_help_example",
    "fmt",
    "need",
    "table",
]

# How far from 1 a row of probabilities may sum (and how far from 0 the logsumexp of a
# row of log-probabilities may lie): numbers typed by hand are rounded, so
# [0.001, 0.001, 0.001, 0.999] sums to 1.002 and is accepted.
SUM_TOLERANCE = 0.01


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


def need(module: str, who: str) -> Any:
    """Import an optional dependency of ``who`` (scikit-learn, matplotlib), or say how to
    install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CLIError(
            f"{who} needs {module.split('.')[0]}, which is not installed; install the "
            f'command-line extras with: pip install "crossentropy[cli]"'
        ) from None


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
