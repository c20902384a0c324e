"""The ``crossentropy`` command: ``demo``, ``explain``, ``entropy``/``kl``/``ce`` and ``eval``.

``main(argv)`` parses the arguments, runs one subcommand and returns its exit
status: 0 on success, 1 for bad data (a file with NaN rows, a vector that is
not a distribution), 2 for a wrong command line.  Errors are printed as
``crossentropy CMD: error: ...`` on stderr, never as a traceback.  Set
``CROSSENTROPY_DEBUG=1`` to see the traceback of an unexpected error.

Only the standard library and NumPy are imported here; the demo imports
scikit-learn and matplotlib when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from .. import __version__
from . import demo, dist, evaluate, explain
from ._util import CLIError, Parser
from .readers import standard_input

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
Cross-entropy, step by step: train and compare classifiers, explain a loss,
compute entropies and divergences, evaluate saved predictions.
"""

_EPILOG = """\
examples:
  crossentropy demo                                   # CE vs MSE vs hinge on handwritten digits
  crossentropy explain --logits 2.0 1.0 0.1 --target 0
  crossentropy entropy 0.1 0.1 0.1 0.7 --base 2
  crossentropy kl 0.5 0.5 -- 0.9 0.1
  crossentropy eval logits.npy labels.npy --per-class

Run 'crossentropy COMMAND --help' for a command's options.
"""

# subcommands whose positional vectors are separated by ``--`` (``kl P -- Q``)
_PAIRED = ("kl", "ce")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``crossentropy`` command."""
    parser = Parser(
        prog="crossentropy",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crossentropy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo.register(sub)
    explain.register(sub)
    dist.register(sub)
    evaluate.register(sub)
    return parser


def _split_pairs(argv: list[str]) -> list[str]:
    """In ``kl``/``ce``, turn the ``--`` between P and Q into the row separator ``/``.

    argparse would otherwise swallow the ``--`` and join P and Q into one list.
    """
    for i, tok in enumerate(argv):
        if not tok.startswith("-"):
            if tok in _PAIRED:
                return argv[: i + 1] + ["/" if t == "--" else t for t in argv[i + 1 :]]
            break
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crossentropy`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status instead of exiting, so that it can be called
    from Python and from tests.
    """
    args_list = _split_pairs(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # --help, --version, usage errors (already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    prog = f"crossentropy {args.command}"
    try:
        with warnings.catch_warnings(), standard_input():
            _warnings_are_errors()
            return int(args.run(args) or 0)
    except CLIError as e:
        _error(prog, str(e))
        return e.code
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `crossentropy eval ... | head`
        return 1
    except Exception as e:  # never a traceback, unless asked for
        if os.environ.get("CROSSENTROPY_DEBUG"):
            raise
        _error(prog, f"{type(e).__name__}: {e}")
        return 1


def _warnings_are_errors() -> None:
    """A warning (a NumPy overflow, a lost imaginary part) means a number the command
    did not check: it stops the command with a one-line error instead of printing a
    warning next to a doubtful result.  Deprecation notices are for developers: hidden."""
    warnings.simplefilter("error")
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.simplefilter("ignore", category)


def _error(prog: str, message: str) -> None:
    """One line on stderr: ``crossentropy CMD: error: MESSAGE``."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
