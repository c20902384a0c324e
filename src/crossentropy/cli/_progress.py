"""A dependency-free progress bar on stderr.

On a terminal the bar redraws in place (at most ten times a second); when
stderr is a file or a pipe it writes one line when the run ends (and, for long
runs, a line every ``log_every`` seconds), so that logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress"]


class Progress:
    """Count ``total`` steps, showing ``desc``, a bar, the count and ``key=value`` fields.

    Use as a context manager, or call :meth:`close`.  ``enabled=False`` makes
    every method a no-op (``--quiet``).
    """

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        unit: str = "",
        enabled: bool = True,
        stream: IO[str] | None = None,
        width: int = 24,
        log_every: float = 10.0,
    ) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.log_every = log_every
        self.count = 0
        self.fields: dict[str, Any] = {}
        self.start = time.perf_counter()
        self._last_draw = -1.0
        self._last_log = self.start
        self._closed = False
        try:
            self._tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self._tty = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, **fields: Any) -> None:
        """Advance by ``n`` steps and set the fields shown after the count."""
        if not self.enabled:
            return
        self.count = min(self.count + n, self.total) if self.total else self.count + n
        self.fields.update(fields)
        now = time.perf_counter()
        if self._tty and now - self._last_draw >= 0.1:
            self._write("\r" + self.line() + "\x1b[K")
            self._last_draw = now
        elif not self._tty and now - self._last_log >= self.log_every:
            self._write(self.line() + "\n")
            self._last_log = now

    def line(self) -> str:
        """The current state as one line of text."""
        frac = self.count / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.desc} [{bar}] {self.count}/{self.total}{unit}"]
        parts += [f"{k}={_fmt(v)}" for k, v in self.fields.items()]
        parts.append(f"{time.perf_counter() - self.start:.1f}s")
        return "  ".join(parts)

    def close(self) -> None:
        """Draw the final state once and end the line."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        self._write(("\r" + self.line() + "\x1b[K" if self._tty else self.line()) + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
