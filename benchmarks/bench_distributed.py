"""Vocabulary-parallel losses on 1, 2 and 4 processes: memory per rank, time, bytes sent.

    python benchmarks/bench_distributed.py               # N=2048, V=128000, D=1024, P = 1 2 4
    python benchmarks/bench_distributed.py --quick       # N=512, V=32000, D=256
    python benchmarks/bench_distributed.py --procs 1 2   # fewer process counts
    python benchmarks/bench_distributed.py --only linear --chunk-size 224

Two cases, float32, forward + backward:

* ``vocab_parallel_cross_entropy``: each of the P ranks holds an ``(N, V/P)``
  shard of the logits and gets its gradient;
* ``vocab_parallel_linear_cross_entropy``: each rank holds the replicated
  ``(N, D)`` hidden states and a ``(V/P, D)`` shard of the output layer, and
  gets both gradients.

Each (case, P) runs in P fresh processes (``torch.multiprocessing``, gloo on
the loopback, a free port, ``torch.set_num_threads(1)`` and one kernel thread
per process); they are killed after ``--timeout`` seconds.  P=1 is the same
function with a single-rank group; the ``(reference)`` rows run
``crossentropy.cross_entropy`` / ``linear_cross_entropy`` in one process.
Every function is warmed up on a tiny problem first, so one-time allocations
are not counted.

Columns, per rank (the worst rank is printed):

* ``peak Δ``: the resident-set high-water mark during the first call
  (``VmHWM`` after writing ``5`` to ``/proc/self/clear_refs``) minus the
  resident size before it; the inputs exist before that baseline;
* ``extra``: ``peak Δ`` minus the bytes of the gradients the call hands back
  (what any implementation must hold); each ``÷ P=1`` is the ratio to the
  single-rank value of the same function;
* ``time``: forward + backward of the slowest rank (a barrier before each
  repetition), the median of ``reps`` repetitions: up to ``--repeat``, no
  further one once it would pass ``--budget`` seconds;
* ``sent (measured)``: the bytes each rank puts into collectives during one
  call, counted by wrapping ``torch.distributed.all_reduce``,
  ``all_gather`` (tensor bytes: ``numel * element_size``) and
  ``all_gather_object`` (pickled size) in the worker; ``O(N) formula``: the
  same from the algorithm, for comparison (without the validation exchange);
* ``load``: the share of the machine that other processes used meanwhile
  (the machine may be shared: rerun when it is high).

With more processes than cores the processes share the cores: the time does
not fall like 1/P then.  Nothing is asserted: this prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pickle
import platform
import socket
import statistics
import sys
import tempfile
import time

import _proc  # benchmarks/_proc.py

MiB = 2**20
KiB = 2**10
GiB = 2**30


class _Counter:
    """Wraps the collectives of ``torch.distributed`` and adds up what this rank sends.

    Only the names in ``torch.distributed`` are replaced: ``all_gather_object``
    calls the module-level ``all_gather`` of ``distributed_c10d`` itself, so
    its internal transfers are not counted twice.
    """

    def __init__(self) -> None:
        import torch.distributed as dist

        self.on = False
        self.bytes: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        for name, size in (
            ("all_reduce", lambda args, kw: _tensor_bytes(args[0])),
            ("all_gather", lambda args, kw: _tensor_bytes(args[1])),
            ("all_gather_object", lambda args, kw: len(pickle.dumps(args[1]))),
        ):
            setattr(dist, name, self._wrap(name, getattr(dist, name), size))

    def _wrap(self, name, original, size):
        def counted(*args, **kwargs):
            if self.on:
                self.bytes[name] = self.bytes.get(name, 0) + size(args, kwargs)
                self.calls[name] = self.calls.get(name, 0) + 1
            return original(*args, **kwargs)

        return counted


def _tensor_bytes(t) -> int:
    return t.numel() * t.element_size()


# -- the cases ----------------------------------------------------------------------


def _widths(v: int, world: int) -> list[int]:
    """Consecutive shard widths of a vocabulary of ``v`` (the first ones one wider)."""
    return [v // world + (r < v % world) for r in range(world)]


def _inputs(case: dict, n: int, d: int, v: int, rank: int, world: int):
    """This rank's tensors (float32): its shard, and what every rank shares."""
    import torch

    width = _widths(v, world)[rank]
    shared = torch.Generator().manual_seed(0)
    own = torch.Generator().manual_seed(1 + rank)
    target = torch.randint(0, v, (n,), generator=shared)
    if case["fn"] == "ce":
        shard = (2 * torch.randn(n, width, generator=own)).requires_grad_()
        return (shard,), target
    h = torch.randn(n, d, generator=shared).requires_grad_()
    w = (torch.randn(width, d, generator=own) / d**0.5).requires_grad_()
    return (h, w), target


def _runner(case: dict, tensors: tuple, target):
    """One forward + backward; returns the gradients the call hands back."""
    import crossentropy as ce
    from crossentropy.distributed import (
        vocab_parallel_cross_entropy,
        vocab_parallel_linear_cross_entropy,
    )

    fn, plain, chunk = case["fn"], case["impl"] == "plain", case.get("chunk_size")
    if fn == "ce":
        (x,) = tensors
        if plain:
            loss = lambda: ce.cross_entropy(x, target)  # noqa: E731
        else:
            loss = lambda: vocab_parallel_cross_entropy(x, target)  # noqa: E731
    else:
        h, w = tensors
        if plain:
            loss = lambda: ce.linear_cross_entropy(h, w, target, chunk_size=chunk)  # noqa: E731
        else:
            loss = lambda: vocab_parallel_linear_cross_entropy(  # noqa: E731
                h, w, target, chunk_size=chunk
            )

    def run():
        for t in tensors:
            t.grad = None
        loss().backward()
        return [t.grad for t in tensors]

    return run


def _worker(rank: int, world: int, port: int, case: dict, out_dir: str) -> None:
    """One rank of one case: measure, and write the numbers to ``out_dir``."""
    import torch
    import torch.distributed as dist

    import crossentropy as ce

    torch.set_num_threads(1)
    ce.kernels.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=case["timeout"]),
    )
    counter = _Counter()
    n, d, v = case["n"], case["d"], case["v"]
    # warm-up on a tiny problem: library and process-group set-up is not the case's memory
    small = _inputs(case, 16, 8, 64 * world, rank, world)
    _runner(case, *small)()
    del small
    tensors, target = _inputs(case, n, d, v, rank, world)
    run = _runner(case, tensors, target)
    gc.collect()

    times, peak, held = [], None, None
    dist.barrier()
    busy0, own0, wall0 = _proc.busy_seconds(), _proc.own_seconds(), time.perf_counter()
    for rep in range(case["repeat"]):
        for t in tensors:
            t.grad = None
        gc.collect()
        dist.barrier()
        base = _proc.status("VmRSS")
        _proc.reset_peak()
        counter.on = rep == 0
        t0 = time.perf_counter()
        grads = run()
        times.append(time.perf_counter() - t0)
        counter.on = False
        if rep == 0:
            peak = _proc.status("VmHWM") - base
            held = sum(_tensor_bytes(g) for g in grads)
        del grads
        # every rank takes the same decision: another repetition if it fits the budget
        spent = torch.tensor([time.perf_counter() - wall0, times[-1]], dtype=torch.float64)
        dist.all_reduce(spent, op=dist.ReduceOp.MAX)  # not counted: the counter is off
        if float(spent[0] + spent[1]) > case["budget"]:
            break
    dist.barrier()
    wall = time.perf_counter() - wall0
    result = {
        "rank": rank,
        "times": times,
        "peak": peak,
        "held": held,
        "bytes": counter.bytes,
        "calls": counter.calls,
        "own": _proc.own_seconds() - own0,
        "busy": _proc.busy_seconds() - busy0,
        "wall": wall,
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


# -- the driver ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_case(case: dict, world: int, timeout: float) -> dict:
    """Spawn ``world`` fresh processes for ``case``; kill them after ``timeout`` seconds."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="bench_distributed_") as out_dir:
        context = mp.start_processes(
            _worker,
            args=(world, _free_port(), case, out_dir),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    return {"error": f"timed out after {timeout:.0f} s"}
        except Exception as e:  # a worker raised or died: the others are stopped by join
            last = (str(e).strip().splitlines() or ["?"])[-1]
            return {"error": f"{type(e).__name__}: {last[:120]}"}
        finally:
            for p in context.processes:  # only the processes started here
                if p.is_alive():
                    p.kill()
                    p.join()
        ranks = []
        for r in range(world):
            with open(os.path.join(out_dir, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
    steps = [max(r["times"][i] for r in ranks) for i in range(len(ranks[0]["times"]))]
    cpus = os.cpu_count() or 1
    others = ranks[0]["busy"] - sum(r["own"] for r in ranks)
    return {
        "time": statistics.median(steps),
        "reps": len(steps),
        "peak": max(r["peak"] for r in ranks),
        "extra": max(r["peak"] - r["held"] for r in ranks),
        "bytes": max(sum(r["bytes"].values()) for r in ranks),
        "by_op": ranks[0]["bytes"],
        "calls": ranks[0]["calls"],
        "load": max(0.0, others / (ranks[0]["wall"] * cpus)),
    }


def _formula(case: dict) -> tuple[int, str]:
    """The bytes one rank sends per call by the algorithm (float32 statistics)."""
    n, d = case["n"], case["d"]
    if case["fn"] == "ce":
        # all-reduce MAX of N maxima, all-reduce SUM of (sum-exp, target logit)
        return 4 * 3 * n, "4·3N"
    # per chunk the same 3 statistics; then the all-reduce of input's (N, D) gradient
    return 4 * n * (3 + d), "4·N·(3+D)"


def _fmt_bytes(b: float | None) -> str:
    if b is None:
        return "—"
    if b >= GiB:
        return f"{b / GiB:.2f} GiB"
    if b >= MiB:
        return f"{b / MiB:.2f} MiB" if b < 10 * MiB else f"{b / MiB:.0f} MiB"
    if b >= KiB:
        return f"{b / KiB:.1f} KiB"
    return f"{b:.0f} B"


def _fmt_sent(r: dict) -> str:
    parts = [f"{op} {r['calls'][op]}× {_fmt_bytes(b)}" for op, b in sorted(r["by_op"].items()) if b]
    return f"{r['bytes']:,} B ({'; '.join(parts)})" if parts else "0 B"


def _ratio(value: float, single: float) -> str:
    return f"{value / single:.2f}" if single > 0 else "—"


_NAMES = {
    ("ce", "plain"): "cross_entropy",
    ("ce", "parallel"): "vocab_parallel_cross_entropy",
    ("linear", "plain"): "linear_cross_entropy",
    ("linear", "parallel"): "vocab_parallel_linear_cross_entropy",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=512, V=32000, D=256")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4], help="process counts")
    parser.add_argument("--repeat", type=int, default=3, help="at most this many repetitions")
    parser.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="seconds of repetitions per (case, P): no further one once it would pass this",
    )
    parser.add_argument("--tokens", type=int, default=None, help="N (default 2048, quick 512)")
    parser.add_argument("--vocab", type=int, default=None, help="V (default 128000, quick 32000)")
    parser.add_argument("--hidden", type=int, default=None, help="D (default 1024, quick 256)")
    parser.add_argument("--only", choices=["ce", "linear"], default=None, help="one case only")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="rows per chunk of the linear case (default: its 112 MiB buffer's)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per (case, P)")
    args = parser.parse_args(argv)
    if any(p < 1 for p in args.procs) or args.repeat < 1:
        parser.error("--procs and --repeat must be at least 1")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error("--chunk-size must be at least 1")

    n = args.tokens or (512 if args.quick else 2048)
    v = args.vocab or (32000 if args.quick else 128000)
    d = args.hidden or (256 if args.quick else 1024)
    import torch

    cpus = os.cpu_count()
    chunk = "" if args.chunk_size is None else f", linear chunk_size={args.chunk_size}"
    print(
        f"# vocabulary-parallel benchmark, {datetime.date.today()}, "
        f"{platform.processor() or platform.machine()}, {cpus} cores, torch {torch.__version__}, "
        f"gloo on loopback, 1 thread per process, float32{chunk}; time: median of up to "
        f"{args.repeat} repetitions within {args.budget:.0f} s"
    )
    print(
        f"\nThis machine has {cpus} cores: with more processes than cores they share them, "
        "so the time does not fall like 1/P here."
    )
    started = time.perf_counter()
    for fn in ("ce", "linear"):
        if args.only and args.only != fn:
            continue
        shape = f"N={n}, V={v}" + ("" if fn == "ce" else f", D={d}")
        held = "logits shard (N, V/P)" if fn == "ce" else "weight shard (V/P, D)"
        print(f"\n## {_NAMES[fn, 'parallel']}, {shape}, {held}\n")
        print(
            "| function | P | peak Δ / rank | ÷ P=1 | extra / rank | ÷ P=1 | time | reps | "
            "sent / rank / step (measured) | O(N) formula | load |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
        single = None
        runs = [("plain", 1)] + [("parallel", p) for p in args.procs]
        for impl, world in runs:
            case = {
                "fn": fn,
                "impl": impl,
                "n": n,
                "d": d,
                "v": v,
                "repeat": args.repeat,
                "budget": args.budget,
                "chunk_size": args.chunk_size,
                "timeout": args.timeout,
            }
            name = _NAMES[fn, impl] + (" (reference)" if impl == "plain" else "")
            row = f"| {name} | {world} |"
            r = _run_case(case, world, args.timeout)
            if "error" in r:
                print(row + f" {r['error']} |" + " |" * 8, flush=True)
                continue
            if impl == "parallel" and world == 1:
                single = r
            ratios = ["—", "—"]
            if impl == "parallel" and single is not None:
                ratios = [_ratio(r[k], single[k]) for k in ("peak", "extra")]
            formula = "—"
            if impl == "parallel":
                b, text = _formula(case)
                formula = f"{b:,} B ({text})"
            print(
                row + f" {_fmt_bytes(r['peak'])} | {ratios[0]} | {_fmt_bytes(r['extra'])} |"
                f" {ratios[1]} | {r['time']:.3g} s | {r['reps']} | {_fmt_sent(r)} | {formula} |"
                f" {r['load']:.0%} |",
                flush=True,
            )
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
