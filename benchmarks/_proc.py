"""What the Linux kernel says about this process and the machine, for the benchmarks.

Memory from ``/proc/self/status`` (``VmRSS`` now, ``VmHWM`` the peak since the
last :func:`reset_peak`), CPU seconds of the whole machine and of this process,
so that a benchmark can report how much of the machine other processes used
while it ran.
"""

from __future__ import annotations

import os


def status(key: str) -> int:
    """A ``/proc/self/status`` size field in bytes, e.g. ``status("VmHWM")``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_peak() -> None:
    """Make ``VmHWM`` start again from the current resident size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def own_seconds() -> float:
    """CPU seconds of this process (user + system)."""
    t = os.times()
    return t.user + t.system


def available_memory() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (0 if unknown)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
