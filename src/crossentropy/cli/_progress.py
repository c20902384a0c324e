"""A dependency-free progress bar on stderr, drawn only on a terminal.

On a terminal the bar redraws in place (at most ten times a second).  When
stderr is a file or a pipe nothing is written, so that logs and captured
output hold only the results; ``enabled=False`` (``--quiet``, ``--json``)
turns the bar off on a terminal too.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["Progress"]


class Progress:
    """Count ``total`` steps, showing ``desc``, a bar, the count and ``key=value`` fields.

    Use as a context manager, or call :meth:`close`.  Every method is a no-op
    when ``enabled`` is false or ``stream`` is not a terminal.
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
    ) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.count = 0
        self.fields: dict[str, Any] = {}
        self.start = time.perf_counter()
        self._last_draw = -1.0
        self._closed = False
        try:
            tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            tty = False
        self.enabled = enabled and tty

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
        if now - self._last_draw >= 0.1:
            self._write("\r" + self.line() + "\x1b[K")
            self._last_draw = now

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
        self._write("\r" + self.line() + "\x1b[K\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
