"""Warnings attributed to the caller's line, however deep inside the library they arise.

``warnings.warn(..., stacklevel=n)`` needs the number of frames between the
warning and the user's code, which differs by entry point (``cross_entropy``,
a loss object, a ``torch.nn.Module`` whose ``__call__`` runs PyTorch's
frames first).  :func:`warn_at_caller` skips every frame in this package and
in PyTorch instead: Python then shows the warning at the user's line, and
its once-per-location filter counts each of the user's call sites apart.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn_at_caller"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _skipped() -> tuple[str, ...]:
    """Path prefixes of the frames that are not the caller's: this package, and
    PyTorch when it is imported (``Module.__call__`` sits between a loss object
    and the line that called it)."""
    prefixes = [_PACKAGE]
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "__file__", None):
        prefixes.append(os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
    return tuple(prefixes)


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn(message, category)`` at the first frame outside the library."""
    prefixes = _skipped()
    if sys.version_info >= (3, 12):
        warnings.warn(message, category, skip_file_prefixes=prefixes)
        return
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(prefixes):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
