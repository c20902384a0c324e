"""Per-call time of cross-entropy on small batches: ours vs PyTorch eager vs ``torch.compile``.

Run from the repository root::

    python benchmarks/bench_overhead.py            # 25 rounds (about a minute)
    python benchmarks/bench_overhead.py --rounds 9

On a training loop's small batches the kernel takes microseconds and the cost
of a call is its Python overhead: this measures it.  Per shape (float32
logits, int64 labels):

* ``fwd``: the mean loss with autograd off; ``fwd+bwd``: the loss of logits
  that require a gradient, then ``loss.backward()`` (``.grad`` reset each call);
* contestants: ``crossentropy.cross_entropy`` on the tensors (eager), on NumPy
  arrays (``value_and_grad`` for ``fwd+bwd``), ``torch.nn.functional.cross_entropy``
  eager, and the same compiled (``torch.compile(fullgraph=True)``).

Every contestant runs in the same process, in rounds: each round times a block
of calls of each contestant in turn (so that a busy machine slows them alike),
and the table gives each one's median per-call time over the rounds and the
ratios of medians.  PyTorch runs with its default threads (``--threads``
sets them); the kernels run theirs on PyTorch's OpenMP threads, as they do
once PyTorch tensors reach them, and the calls of each block come back to back
(a training loop's next call comes later: see docs/kernels.md, Threads).
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import native

SHAPES = [(64, 10), (256, 100), (32, 1000)]
BLOCK_SECONDS = 2e-3  # each contestant's block of calls lasts about this long


def _calls_per_block(fn: Callable[[], object]) -> int:
    for _ in range(20):  # warm-up
        fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(2000, int(BLOCK_SECONDS / one)))


def per_call(
    cases: dict[str, Callable[[], object]], rounds: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Median seconds per call of each case over ``rounds`` interleaved rounds."""
    counts = {name: _calls_per_block(fn) for name, fn in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            n = counts[name]
            t0 = clock()
            for _ in range(n):
                fn()
            times[name].append((clock() - t0) / n)
    return {name: statistics.median(ts) for name, ts in times.items()}


def contestants(shape: tuple[int, int]) -> dict[str, dict[str, Callable[[], object]]]:
    """``{pass: {contestant: call}}`` for one shape."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, shape[1], shape[0])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    xg = xt.clone().requires_grad_()
    compiled = torch.compile(F.cross_entropy, fullgraph=True)
    value_and_grad = ce.value_and_grad(ce.cross_entropy)

    def backward(fn: Callable) -> Callable[[], object]:
        def run() -> object:
            xg.grad = None
            fn(xg, yt).backward()
            return xg.grad

        return run

    def no_grad(fn: Callable) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn(xt, yt)

        return run

    return {
        "fwd": {
            "ours": no_grad(ce.cross_entropy),
            "ours NumPy": lambda: ce.cross_entropy(x, y),
            "torch eager": no_grad(F.cross_entropy),
            "torch.compile": no_grad(compiled),
        },
        "fwd+bwd": {
            "ours": backward(ce.cross_entropy),
            "ours NumPy": lambda: value_and_grad(x, y),
            "torch eager": backward(F.cross_entropy),
            "torch.compile": backward(compiled),
        },
    }


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=25, help="interleaved rounds (default 25)")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch's threads")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time (default), or this process's CPU time, which other processes "
        "on a busy machine disturb less",
    )
    args = parser.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # PyTorch's, when compiling
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.machine()}, nproc={os.cpu_count()}, load average {load}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    native.use_torch_threads()  # what the first tensor call does: the pool it uses
    print(f"torch threads {torch.get_num_threads()}, kernels {kernels.info()}")
    print(
        f"{args.rounds} interleaved rounds of ~{BLOCK_SECONDS * 1e3:.0f} ms per contestant; "
        f"medians of {args.clock} time per call"
    )
    head = [
        "float32 logits", "pass", "ours (tensors)", "ours (NumPy)", "torch eager",
        "torch.compile", "ours / eager", "ours NumPy / eager", "ours / compile",
    ]  # fmt: skip
    rows = []
    for shape in SHAPES:
        for kind, cases in contestants(shape).items():
            t = per_call(cases, args.rounds, clock)
            ours, npy, eager, comp = (
                t[k] for k in ("ours", "ours NumPy", "torch eager", "torch.compile")
            )
            rows.append([
                f"{shape[0]} × {shape[1]}", kind, _us(ours), _us(npy), _us(eager), _us(comp),
                f"{ours / eager:.2f}", f"{npy / eager:.2f}", f"{ours / comp:.2f}",
            ])  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


if __name__ == "__main__":
    main()
