"""Helpers shared by the subcommands: errors, the sum tolerance, formatting."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = [
    "SUM_TOLERANCE",
    "CLIError",
    "Parser",
    "UsageError",
    "add_help_example",
    "check_base",
    "fmt",
    "json_safe",
    "need",
    "table",
    "to_json",
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


# A negative number, so that `--log-probs -2.3 -1e-5` and `--logits -inf 0` read as values:
# argparse itself recognises only -1 and -2.5 and takes -1e-5 or -inf for unknown options.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and that takes negative numbers as values.

    Subcommand parsers are made of the same class (argparse's default).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


def check_base(base: float | None) -> None:
    """A logarithm base: finite, positive and not 1 (``--base``)."""
    if base is not None and not (math.isfinite(base) and base > 0 and base != 1):
        raise UsageError(f"--base must be positive and not 1 (a finite number), got {base:g}")


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


def json_safe(v: Any) -> Any:
    """``v`` with NumPy values as Python ones and every infinite or NaN float as ``None``
    (JSON's ``null``)."""
    if hasattr(v, "tolist"):  # a NumPy array or scalar
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def to_json(obj: dict[str, Any]) -> str:
    """``obj`` as indented JSON, with infinities and NaN as ``null``."""
    return json.dumps(json_safe(obj), indent=2)
