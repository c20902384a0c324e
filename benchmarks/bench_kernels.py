"""Fused CPU kernels vs PyTorch eager vs naive NumPy: time, memory, bandwidth limit.

Run from the repository root::

    python benchmarks/bench_kernels.py           # medians of 7 runs
    python benchmarks/bench_kernels.py --quick   # 3 runs, no portable-path column

Everything runs side by side in one process, contestants interleaved within
each repetition; times are medians.  Per shape (float32 logits):

* ``fwd``: the mean loss alone; ``fwd+bwd``: loss and gradient with respect to
  the logits (``value_and_grad`` for NumPy, ``loss.backward()`` for PyTorch);
  ``out=`` and ``overwrite``: ours writing the gradient into a reused buffer or
  over the logits (:func:`crossentropy.kernels.cross_entropy_value_and_grad`).
* ``limit``: one multithreaded pass over the logits measured in the same run,
  reading them (``fwd``), or reading them and writing a same-size buffer,
  freshly allocated (``fwd+bwd``: every function that returns a new gradient
  pays its page faults) or reused (``out=``, ``overwrite``).
* ``peak MiB``: the peak memory the call allocates above the level before it
  (tracemalloc, exact, for NumPy; for PyTorch, which tracemalloc does not see,
  the process's peak resident memory, ``VmHWM`` after resetting it).

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import native

SHAPES = [(65536, 10), (16384, 1000), (4096, 32000), (1024, 256000)]
MiB = 1 << 20


# -- measuring ---------------------------------------------------------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def peak_extra_mib(
    fn: Callable[..., object], setup: Callable[[], object] | None = None, numpy: bool = True
) -> float:
    """Peak memory allocated by ``fn()`` above the level before it, in MiB.

    NumPy reports its allocations to tracemalloc, which is exact; PyTorch does
    not, so for tensors the process's peak resident memory (``VmHWM`` after a
    reset) is used (``nan`` where /proc cannot be written)."""
    state = setup() if setup else None
    gc.collect()
    if numpy:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            result = fn() if state is None else fn(state)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        del result, state
        return peak / MiB
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return float("nan")
    base = _rss_kib("VmRSS")
    result = fn() if state is None else fn(state)
    peak = _rss_kib("VmHWM")
    del result, state
    return max(peak - base, 0) / 1024


def medians(cases: dict, repeat: int) -> dict:
    """Median seconds per case; each case is ``(setup or None, fn)``; the cases
    take turns within each repetition."""
    times = {name: [] for name in cases}
    for setup, fn in cases.values():  # warm-up (first call, page cache)
        fn(setup()) if setup else fn()
    for _ in range(repeat):
        for name, (setup, fn) in cases.items():
            state = setup() if setup else None
            t0 = time.perf_counter()
            fn(state) if setup else fn()
            times[name].append(time.perf_counter() - t0)
            del state
    return {name: statistics.median(ts) for name, ts in times.items()}


# -- contestants -------------------------------------------------------------------


def naive_forward(x: np.ndarray, y: np.ndarray) -> float:
    m = x.max(axis=1, keepdims=True)
    z = x - m
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def naive_value_and_grad(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    value = float(np.mean(np.log(s[:, 0]) - (x[rows, y] - m[:, 0])))
    e /= s
    e[rows, y] -= 1
    e /= len(y)
    return value, e


COPY_MODES = {0: "memcpy", 1: "plain stores", 2: "non-temporal stores"}


def bandwidth(x: np.ndarray, threads: int) -> dict:
    """Cases timing one pass over ``x`` at the memory system's speed, with our
    threads: a read, and copies into a fresh or a reused buffer by each method
    (the limit is the fastest of them)."""
    buf = np.ones_like(x)
    ptr, n = x.ctypes.data, x.nbytes

    def fresh(mode):
        def run():
            b = np.empty_like(x)
            native.extension.copy(ptr, b.ctypes.data, n, threads, mode)
            return b

        return run

    cases = {"limit read": (None, lambda: native.extension.copy(ptr, 0, n, threads))}
    for mode in COPY_MODES:
        cases[f"limit copy-fresh {mode}"] = (None, fresh(mode))
        cases[f"limit copy-reused {mode}"] = (
            None,
            lambda mode=mode: native.extension.copy(ptr, buf.ctypes.data, n, threads, mode),
        )
    return cases


def limits(t: dict) -> dict:
    """The fastest pass of each kind among the measured methods."""
    out = {"limit read": t["limit read"]}
    for kind in ("copy-fresh", "copy-reused"):
        out[f"limit {kind}"] = min(t[f"limit {kind} {m}"] for m in COPY_MODES)
    return out


def numpy_table(shape: tuple, repeat: int, threads: int, with_reference: bool) -> list[dict]:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, shape[1], shape[0])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    vg = ce.value_and_grad(ce.cross_entropy)
    out = np.empty_like(x)

    def torch_fwd():
        with torch.no_grad():
            return F.cross_entropy(xt, yt)

    def torch_fwd_bwd():
        xg = xt.detach().requires_grad_(True)
        F.cross_entropy(xg, yt).backward()
        return xg.grad

    def reference(fn):
        def run():
            with kernels.disabled():
                return fn()

        return run

    cases = {
        "ours fwd": (None, lambda: ce.cross_entropy(x, y)),
        "ours fwd+bwd": (None, lambda: vg(x, y)),
        "ours out=": (None, lambda: kernels.cross_entropy_value_and_grad(x, y, out=out)),
        "ours overwrite": (
            lambda: x.copy(),
            lambda xc: kernels.cross_entropy_value_and_grad(xc, y, overwrite_input=True),
        ),
        "torch fwd": (None, torch_fwd),
        "torch fwd+bwd": (None, torch_fwd_bwd),
        "naive fwd": (None, lambda: naive_forward(x, y)),
        "naive fwd+bwd": (None, lambda: naive_value_and_grad(x, y)),
        **bandwidth(x, threads),
    }
    if with_reference:
        cases["portable fwd"] = (None, reference(lambda: ce.cross_entropy(x, y)))
        cases["portable fwd+bwd"] = (None, reference(lambda: vg(x, y)))
    t = medians(cases, repeat)
    t.update(limits(t))
    mem = {
        name: peak_extra_mib(fn, setup, numpy=not name.startswith("torch"))
        for name, (setup, fn) in cases.items()
        if not name.startswith("limit")
    }
    rows = []
    for kind, ours, limit in [
        ("fwd", "ours fwd", "limit read"),
        ("fwd+bwd", "ours fwd+bwd", "limit copy-fresh"),
        ("fwd+bwd out=", "ours out=", "limit copy-reused"),
        ("fwd+bwd overwrite", "ours overwrite", "limit copy-reused"),
    ]:
        base = "fwd" if kind == "fwd" else "fwd+bwd"
        rows.append(
            {
                "shape": shape,
                "pass": kind,
                "ours": t[ours],
                "torch": t[f"torch {base}"],
                "naive": t[f"naive {base}"],
                "portable": t.get(f"portable {base}"),
                "limit": t[limit],
                "mem_ours": mem[ours],
                "mem_torch": mem[f"torch {base}"],
                "mem_naive": mem[f"naive {base}"],
                "logits_mib": x.nbytes / MiB,
            }
        )
    return rows


def torch_table(shape: tuple, repeat: int, threads: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, shape[1], shape[0])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def fwd(f):
        def run():
            with torch.no_grad():
                return f(xt, yt)

        return run

    def fwd_bwd(f):
        def run():
            xg = xt.detach().requires_grad_(True)
            f(xg, yt).backward()
            return xg.grad

        return run

    cases = {
        "ours fwd": (None, fwd(ce.cross_entropy)),
        "ours fwd+bwd": (None, fwd_bwd(ce.cross_entropy)),
        "torch fwd": (None, fwd(F.cross_entropy)),
        "torch fwd+bwd": (None, fwd_bwd(F.cross_entropy)),
        **bandwidth(x, threads),
    }
    t = medians(cases, repeat)
    t.update(limits(t))
    mem = {
        n: peak_extra_mib(fn, numpy=False)
        for n, (_, fn) in cases.items()
        if not n.startswith("limit")
    }
    return [
        {
            "shape": shape,
            "pass": kind,
            "ours": t[f"ours {kind}"],
            "torch": t[f"torch {kind}"],
            "naive": None,
            "portable": None,
            "limit": t[limit],
            "mem_ours": mem[f"ours {kind}"],
            "mem_torch": mem[f"torch {kind}"],
            "mem_naive": None,
            "logits_mib": x.nbytes / MiB,
        }
        for kind, limit in [("fwd", "limit read"), ("fwd+bwd", "limit copy-fresh")]
    ]


# -- printing ----------------------------------------------------------------------


def _ms(t: float | None) -> str:
    return "" if t is None else f"{t * 1e3:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or b is None else f"{a / b:.1f}x"


def _mib(m: float | None) -> str:
    return "" if m is None else f"{m:.1f}" if m < 10 else f"{m:.0f}"


def print_table(title: str, rows: list[dict], with_reference: bool) -> None:
    head = [
        "shape", "pass", "ours ms", "torch ms", "torch/ours", "naive ms", "naive/ours",
    ]  # fmt: skip
    if with_reference:
        head += ["portable ms", "portable/ours"]
    head += ["limit ms", "ours/limit", "logits MiB", "peak MiB ours", "torch", "naive"]
    table = []
    for r in rows:
        line = [
            "x".join(map(str, r["shape"])),
            r["pass"],
            _ms(r["ours"]),
            _ms(r["torch"]),
            _ratio(r["torch"], r["ours"]),
            _ms(r["naive"]),
            _ratio(r["naive"], r["ours"]),
        ]
        if with_reference:
            line += [_ms(r["portable"]), _ratio(r["portable"], r["ours"])]
        line += [
            _ms(r["limit"]),
            _ratio(r["ours"], r["limit"]),
            _mib(r["logits_mib"]),
            _mib(r["mem_ours"]),
            _mib(r["mem_torch"]),
            _mib(r["mem_naive"]),
        ]
        table.append(line)
    widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(head)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")


def import_time() -> float:
    """Median seconds of ``import crossentropy`` in a fresh interpreter (no torch)."""
    code = (
        "import time; t = time.perf_counter(); import crossentropy; print(time.perf_counter() - t)"
    )
    runs = [
        float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(5)
    ]
    return statistics.median(runs)


def first_call(disable: bool) -> float:
    """Seconds of the first ``value_and_grad(cross_entropy)`` call in a fresh
    interpreter, kernels on or off: nothing is compiled at run time (the
    extension is built at install time); both pay the same lazy imports."""
    code = (
        "import time, numpy as np, crossentropy as ce\n"
        "x = np.ones((64, 100), np.float32); y = np.zeros(64, np.int64)\n"
        "t = time.perf_counter(); ce.value_and_grad(ce.cross_entropy)(x, y)\n"
        "print(time.perf_counter() - t)"
    )
    env = dict(os.environ, CROSSENTROPY_DISABLE_KERNELS="1" if disable else "0")
    runs = [
        float(subprocess.check_output([sys.executable, "-c", code], text=True, env=env))
        for _ in range(3)
    ]
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions, no portable column")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: CPUs)")
    args = parser.parse_args(argv)
    import torch

    threads = args.threads or kernels.get_num_threads()
    repeat = args.repeat or (3 if args.quick else 7)
    torch.set_num_threads(threads)
    kernels.set_num_threads(threads)
    with_reference = not args.quick
    info = kernels.info()
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {platform.machine()}, nproc={os.cpu_count()}, load average {load}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"kernels: {info}, threads={threads} (torch too), repeat={repeat}, medians")
    print(
        f"import crossentropy: {import_time() * 1e3:.0f} ms; first call: "
        f"{first_call(False) * 1e3:.0f} ms with kernels, {first_call(True) * 1e3:.0f} ms without"
    )
    if not kernels.available():
        print("the C extension is not built: nothing to compare")
        return
    rows, trows = [], []
    for shape in SHAPES:
        rows += numpy_table(shape, repeat, threads, with_reference)
        gc.collect()
        trows += torch_table(shape, repeat, threads)
        gc.collect()
    print_table("NumPy arrays, float32 (ours: crossentropy with its kernels)", rows, with_reference)
    print_table(
        "PyTorch CPU tensors, float32 (ours: crossentropy's autograd.Function)", trows, False
    )


if __name__ == "__main__":
    main()
