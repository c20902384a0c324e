"""crossentropy vs optax under ``jax.jit``: the loss, and ``jax.value_and_grad`` of it.

Run from the repository root::

    python benchmarks/bench_jax.py            # the table, 15 repetitions
    python benchmarks/bench_jax.py --quick    # 5 repetitions, no (4096, 32000)
    python benchmarks/bench_jax.py --sizes 4096x32000 --cases indices

Every row compares two jitted functions of float32 logits with JAX's default
settings (x64 off), mean over the rows in both:

* ``indices``: ``cross_entropy(x, y)`` against
  ``optax.losses.softmax_cross_entropy_with_integer_labels(x, y).mean()``;
* ``smoothing``: ``cross_entropy(x, y, label_smoothing=0.1)`` against
  ``softmax_cross_entropy(x, optax.smooth_labels(one_hot(y), 0.1)).mean()``;
* ``probabilities``: ``cross_entropy(x, p)`` against ``softmax_cross_entropy(x, p).mean()``;
* ``bce``: ``binary_cross_entropy_with_logits(x, t)`` against
  ``sigmoid_binary_cross_entropy(x, t).mean()``, on the same ``(N, C)`` shape.

``fwd`` times the loss, ``vg`` ``jax.value_and_grad`` with respect to the
logits.  The two contestants alternate within each repetition (which one goes
first alternates too), after a warm-up call that compiles; each timing blocks
until the result is ready (``block_until_ready``), covers enough calls to
last about 20 ms (one call from (4096, 32000)), and starts after one untimed
call of the same function, so that the timed calls run as in a loop of calls
of that function, on memory that its previous call just freed.  Both
contestants write a fresh result buffer on every call (512 MiB at
(4096, 32000)).  On a virtual machine that reports freed memory to its host
(Linux free page reporting), a call whose buffer lands on reported memory
pays for the host mapping it again; measured on a 2-core VM, ours takes
55-65 ms at (4096, 32000) back to back, 150-230 ms after 3 seconds idle, and
now and then as much within a run, so that the median ratio there varies from
run to run more than elsewhere.  The table gives the median over repetitions of the ratio
ours / optax (below 1: ours is faster), the ratio of the two fastest
timings (``best``: what each costs when nothing else runs, the steadier number
on a loaded machine) and optax's median time per call.  The two functions are
checked to agree first.  Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import crossentropy as ce
from crossentropy.kernels import xla

SIZES = [(64, 10), (256, 100), (32, 1000), (4096, 1000), (4096, 32000)]
CASES = ["indices", "smoothing", "probabilities", "bce"]
SMOOTHING = 0.1


def _pair(case: str, n_classes: int) -> tuple[Callable, Callable]:
    """(ours, optax) as functions of ``(x, target)``, each the mean loss."""
    if case == "indices":
        return (
            lambda x, y: ce.cross_entropy(x, y),
            lambda x, y: optax.losses.softmax_cross_entropy_with_integer_labels(x, y).mean(),
        )
    if case == "smoothing":

        def reference(x: jax.Array, y: jax.Array) -> jax.Array:
            labels = optax.smooth_labels(jax.nn.one_hot(y, n_classes), SMOOTHING)
            return optax.losses.softmax_cross_entropy(x, labels).mean()

        return lambda x, y: ce.cross_entropy(x, y, label_smoothing=SMOOTHING), reference
    if case == "probabilities":
        return (
            lambda x, p: ce.cross_entropy(x, p),
            lambda x, p: optax.losses.softmax_cross_entropy(x, p).mean(),
        )
    return (
        lambda x, t: ce.binary_cross_entropy_with_logits(x, t),
        lambda x, t: optax.losses.sigmoid_binary_cross_entropy(x, t).mean(),
    )


def _inputs(case: str, n: int, c: int) -> tuple[jax.Array, jax.Array]:
    kx, kt = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (n, c), dtype=jnp.float32)
    if case in ("indices", "smoothing"):
        return x, jax.random.randint(kt, (n,), 0, c)
    if case == "probabilities":
        return x, jax.nn.softmax(jax.random.normal(kt, (n, c), dtype=jnp.float32))
    return x, jax.random.bernoulli(kt, 0.3, (n, c)).astype(jnp.float32)


def _calls_per_timing(fn: Callable, args: tuple, seconds: float = 0.02) -> int:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    once = time.perf_counter() - start
    return max(1, min(1000, int(seconds / max(once, 1e-7))))


def _time(fn: Callable, args: tuple, calls: int) -> float:
    """Seconds per call of ``calls`` calls, after one untimed call (see the module's
    docstring)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def compare(
    ours: Callable, theirs: Callable, args: tuple, repeats: int
) -> tuple[float, float, float]:
    """``(median of ours / theirs, best of ours / best of theirs, median seconds of
    theirs)``, interleaved."""
    ours, theirs = jax.jit(ours), jax.jit(theirs)
    for fn in (ours, theirs):  # compile, and touch the memory once
        jax.block_until_ready(fn(*args))
        jax.block_until_ready(fn(*args))
    calls = min(_calls_per_timing(ours, args), _calls_per_timing(theirs, args))
    ratios, mine, times = [], [], []
    for r in range(repeats):
        if r % 2:
            b = _time(theirs, args, calls)
            a = _time(ours, args, calls)
        else:
            a = _time(ours, args, calls)
            b = _time(theirs, args, calls)
        ratios.append(a / b)
        mine.append(a)
        times.append(b)
    return statistics.median(ratios), min(mine) / min(times), statistics.median(times)


def _check(ours: Callable, theirs: Callable, args: tuple) -> None:
    """The two agree (values and gradients), so that the timings compare like with like."""
    for a, b in zip(jax.value_and_grad(ours)(*args), jax.value_and_grad(theirs)(*args)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1e3:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions, no (4096, 32000)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cases", nargs="*", default=CASES, choices=CASES)
    parser.add_argument("--sizes", nargs="*", default=None, help="e.g. 4096x32000")
    args = parser.parse_args()
    sizes = SIZES[:-1] if args.quick else SIZES
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    repeats = args.repeats or (5 if args.quick else 15)
    print(
        f"# crossentropy vs optax {optax.__version__} under jax.jit (jax {jax.__version__}), "
        f"float32, x64 {'on' if jax.config.jax_enable_x64 else 'off'}\n\n"
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"fused XLA kernel {'built' if xla.available() else 'not built'}; "
        f"median of {repeats} interleaved repetitions.\n"
    )
    print(
        "| (N, C) | loss | fwd ours/optax | vg ours/optax | best fwd | best vg "
        "| optax fwd | optax vg |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n, c in sizes:
        for case in args.cases:
            ours, theirs = _pair(case, c)
            data = _inputs(case, n, c)
            if n * c <= 1 << 22:
                _check(ours, theirs, data)
            fwd = compare(ours, theirs, data, repeats)
            vg = compare(jax.value_and_grad(ours), jax.value_and_grad(theirs), data, repeats)
            print(
                f"| ({n}, {c}) | {case} | {fwd[0]:.2f} | {vg[0]:.2f} | {fwd[1]:.2f} | "
                f"{vg[1]:.2f} | {_fmt_time(fwd[2])} | {_fmt_time(vg[2])} |",
                flush=True,
            )
            del data


if __name__ == "__main__":
    main()
