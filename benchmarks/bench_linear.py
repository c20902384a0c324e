"""linear_cross_entropy side by side: naive, PyTorch's chunked path, ours, and the GEMM ceiling.

    python benchmarks/bench_linear.py                 # N=8192, D=1024, V=32000 and 128000
    python benchmarks/bench_linear.py --quick         # N=2048, one repetition
    python benchmarks/bench_linear.py --skip-naive-large

Every case is the loss *and* its gradients with respect to ``input`` and
``linear_weight`` (forward + backward), run in a fresh subprocess so that its
peak memory can be read from the kernel: ``extra`` is the peak resident set
size during the first call minus the resident size before it, minus the bytes
of the returned gradients (what any implementation must hand back).  Each
library is warmed up on a tiny problem first, so its one-time allocations are
not counted.

``GEMM ceiling`` times the three products the gradient needs, alone, at full
size (``h @ W.T``, ``G @ W``, ``G.T @ h`` with a stand-in ``G``), in the same
library and dtype: no implementation that does them with the same BLAS can be
faster.  ``ratio`` is a case's time over the ceiling of its library and dtype.

Times are the best of the repetitions; ``load`` is the share of the machine
that other processes used during them (the machine may be shared: rerun when
it is high).  Nothing is asserted: this prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time

import _proc  # benchmarks/_proc.py

GiB = 2**30
MiB = 2**20


# -- the cases ----------------------------------------------------------------------


def _inputs(lib: str, dtype: str, n: int, d: int, v: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32)
    w *= 1 / np.sqrt(d)
    t = rng.integers(0, v, size=n)
    if lib == "numpy":
        return h, w, t
    import torch

    th, tw = torch.from_numpy(h), torch.from_numpy(w)
    if dtype != "float32":
        th, tw = th.to(getattr(torch, dtype)), tw.to(getattr(torch, dtype))
    return th.requires_grad_(), tw.requires_grad_(), torch.from_numpy(t)


def _runner(case: dict, h, w, t):
    """A function doing one forward + backward; returns the gradients (dh, dW)."""
    impl = case["impl"]
    if case["lib"] == "numpy":
        if impl == "ours":
            import crossentropy as ce
            from crossentropy.linear import linear_cross_entropy

            vg = ce.value_and_grad(linear_cross_entropy, (0, 1))
            return lambda: vg(h, w, t)[1]
        if impl == "gemm":

            def gemms():
                logits = h @ w.T  # stands in for G in the two backward products
                dh = logits @ w
                dw = logits.T @ h
                return dh, dw

            return gemms
        if impl == "naive":
            import crossentropy as ce

            def naive():
                logits = h @ w.T
                _, g = ce.value_and_grad(ce.cross_entropy)(logits, t)
                del logits
                return g @ w, g.T @ h

            return naive
        raise ValueError(impl)

    import torch
    import torch.nn.functional as F

    def backward(loss_fn):
        def run():
            h.grad = w.grad = None
            loss_fn().backward()
            return h.grad, w.grad

        return run

    if impl == "ours":
        from crossentropy.linear import linear_cross_entropy

        return backward(lambda: linear_cross_entropy(h, w, t))
    if impl == "naive":
        return backward(lambda: F.cross_entropy(h @ w.T, t))
    if impl == "torch-chunked":
        opts = torch.nn.LinearCrossEntropyOptions(**case.get("options", {}))
        return backward(lambda: F.linear_cross_entropy(h, w, t, options=opts))
    if impl == "gemm":

        def gemms():
            with torch.no_grad():
                logits = h @ w.T
                dh = logits @ w
                dw = logits.T @ h
            return dh, dw

        return gemms
    raise ValueError(impl)


def _worker(case: dict) -> dict:
    """Run one case in this (fresh) process and return its measurements."""
    n, d, v = case["n"], case["d"], case["v"]
    if case["lib"] == "torch":
        import torch

        torch.manual_seed(0)
    # warm-up on a tiny problem: library initialisation is not the case's memory
    small = _inputs(case["lib"], case["dtype"], 64, 32, 256)
    _runner(case, *small)()
    del small
    h, w, t = _inputs(case["lib"], case["dtype"], n, d, v)
    run = _runner(case, h, w, t)
    gc.collect()
    times, extra = [], None
    busy0, own0, wall0 = _proc.busy_seconds(), _proc.own_seconds(), time.perf_counter()
    for rep in range(case["repeat"]):
        gc.collect()
        base = _proc.status("VmRSS")
        _proc.reset_peak()
        t0 = time.perf_counter()
        grads = run()
        times.append(time.perf_counter() - t0)
        if rep == 0 and case["impl"] != "gemm":
            nbytes = sum(
                g.nbytes if hasattr(g, "nbytes") else g.numel() * g.element_size() for g in grads
            )
            extra = _proc.status("VmHWM") - base - nbytes
        del grads
    wall = time.perf_counter() - wall0
    others = (_proc.busy_seconds() - busy0) - (_proc.own_seconds() - own0)
    load = max(0.0, others / (wall * os.cpu_count()))
    return {"time": min(times), "times": times, "extra": extra, "load": load}


# -- the driver ---------------------------------------------------------------------


def _cases(n: int, d: int, v: int, repeat: int) -> list[dict]:
    base = {"n": n, "d": d, "v": v, "repeat": repeat}
    cases = []
    for lib, dtype in (("numpy", "float32"), ("torch", "float32"), ("torch", "bfloat16")):
        cases.append({**base, "lib": lib, "dtype": dtype, "impl": "gemm", "label": "GEMM ceiling"})
        cases.append({**base, "lib": lib, "dtype": dtype, "impl": "naive", "label": "naive"})
        if lib == "torch":
            for label, options in (
                ("torch chunked (auto)", {}),
                ("torch chunked (aspect_ratio)", {"chunking_method": "aspect_ratio"}),
            ):
                cases.append(
                    {
                        **base,
                        "lib": lib,
                        "dtype": dtype,
                        "impl": "torch-chunked",
                        "options": options,
                        "label": label,
                    }  # fmt: skip
                )
        cases.append({**base, "lib": lib, "dtype": dtype, "impl": "ours", "label": "ours"})
    return cases


def _naive_bytes(case: dict) -> int:
    """A rough bound of the naive case's memory: (N, V) float32 arrays, ~3 for
    PyTorch (logits, their gradient, a softmax) and ~8 for the NumPy reference."""
    return (8 if case["lib"] == "numpy" else 3) * case["n"] * case["v"] * 4


def _run_case(case: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(case)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {out.returncode}: {last[:120]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt_mem(extra: int | None) -> str:
    if extra is None:
        return "—"
    return f"{extra / GiB:.2f} GiB" if extra >= GiB else f"{extra / MiB:.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=2048 and one repetition")
    parser.add_argument("--skip-naive-large", action="store_true", help="skip naive at V=128000")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per case (best kept)")
    parser.add_argument("--tokens", type=int, default=None, help="N (default 8192, quick 2048)")
    parser.add_argument("--vocab", type=int, nargs="*", default=[32000, 128000])
    parser.add_argument("--only", default=None, help="run only cases whose label contains this")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    n = args.tokens or (2048 if args.quick else 8192)
    d = 1024
    repeat = args.repeat or (1 if args.quick else 2)
    import torch

    print(
        f"# linear_cross_entropy benchmark, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"nproc={os.cpu_count()}, torch {torch.__version__}, N={n}, D={d}, best of {repeat}"
    )
    for v in args.vocab:
        print(f"\n## N={n}, D={d}, V={v}\n")
        print(
            "| library | dtype | implementation | time | ratio to GEMM ceiling | extra memory | load |"
        )
        print("|---|---|---|---:|---:|---:|---:|")
        ceiling: dict = {}
        for case in _cases(n, d, v, repeat):
            key = (case["lib"], case["dtype"])
            if args.only and args.only not in case["label"] and case["impl"] != "gemm":
                continue
            row = f"| {case['lib']} | {case['dtype']} | {case['label']} |"
            if case["impl"] == "naive" and (
                (args.skip_naive_large and v >= 128000)
                or _naive_bytes(case) > _proc.available_memory() - 2 * GiB
            ):
                need = _naive_bytes(case) / GiB
                print(
                    row
                    + f" skipped (needs ~{need:.0f} GiB; {_proc.available_memory() / GiB:.1f} GiB available) | | | |"
                )
                continue
            r = _run_case(case, args.timeout)
            if "error" in r:
                print(row + f" {r['error']} | | | |", flush=True)
                continue
            if case["impl"] == "gemm":
                ceiling[key] = r["time"]
            ratio = f"{r['time'] / ceiling[key]:.2f}" if key in ceiling else "—"
            print(
                row + f" {r['time']:.2f} s | {ratio} | {_fmt_mem(r['extra'])} | {r['load']:.0%} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
