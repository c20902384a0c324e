"""linear_cross_entropy and linear_distillation_loss side by side with naive versions,
PyTorch's chunked path and the GEMM ceiling.

    python benchmarks/bench_linear.py                 # N=8192, D=1024, V=32000 and 128000
    python benchmarks/bench_linear.py --quick         # N=2048, one repetition
    python benchmarks/bench_linear.py --skip-naive-large
    python benchmarks/bench_linear.py --loss distill --vocab 128000   # the distillation table only

The distillation cases (``--loss distill``; ``--divergences kl reverse_kl jsd``)
take a student and a teacher head of the same sizes: the loss and the
gradients of the student's input and weight.  Their naive version builds both
``(N, V)`` logits matrices in PyTorch (the teacher's without autograd), their
``log_softmax`` and the divergence; their GEMM ceiling is the four products
they need (both logits, and the student's two gradients).

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


def _inputs(lib: str, dtype: str, n: int, d: int, v: int, seed: int = 0, teacher: bool = False):
    """``(h, W, y)``, or with ``teacher`` ``(h, W, y, h_teacher, W_teacher)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32)
    w *= 1 / np.sqrt(d)
    t = rng.integers(0, v, size=n)
    extra = []
    if teacher:
        extra = [rng.standard_normal((n, d), dtype=np.float32)]
        extra.append(rng.standard_normal((v, d), dtype=np.float32) * np.float32(1.5 / np.sqrt(d)))
    if lib == "numpy":
        return (h, w, t, *extra)
    import torch

    th, tw = torch.from_numpy(h), torch.from_numpy(w)
    extra = [torch.from_numpy(a) for a in extra]
    if dtype != "float32":
        th, tw = th.to(getattr(torch, dtype)), tw.to(getattr(torch, dtype))
        extra = [a.to(getattr(torch, dtype)) for a in extra]
    return (th.requires_grad_(), tw.requires_grad_(), torch.from_numpy(t), *extra)


def _distill_runner(case: dict, h, w, t, ht, wt):
    """A function doing one forward + backward of the distillation loss; returns (dh, dW)."""
    impl, divergence = case["impl"], case["divergence"]
    if case["lib"] == "numpy":
        if impl == "ours":
            import crossentropy as ce

            vg = ce.value_and_grad(ce.linear_distillation_loss, (0, 1))
            return lambda: vg(h, w, ht, wt, divergence=divergence)[1]
        if impl == "gemm":

            def gemms():
                zs, zt = h @ w.T, ht @ wt.T  # zs stands in for the logits' gradient
                del zt
                return zs @ w, zs.T @ h

            return gemms
        raise ValueError(impl)

    import torch

    if impl == "gemm":

        def gemms():
            with torch.no_grad():
                zs, zt = h @ w.T, ht @ wt.T
                del zt
                return zs @ w, zs.T @ h

        return gemms
    if impl == "ours":
        import crossentropy as ce

        def loss():
            return ce.linear_distillation_loss(h, w, ht, wt, divergence=divergence)
    elif impl == "naive":

        def loss():
            return _naive_divergence(h @ w.T, ht, wt, divergence)
    else:
        raise ValueError(impl)

    def run():
        h.grad = w.grad = None
        loss().backward()
        return h.grad, w.grad

    return run


def _naive_divergence(zs, ht, wt, divergence: str, beta: float = 0.5):
    """The divergence on materialised logits (the teacher's without autograd), batch mean."""
    import math

    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        log_p = F.log_softmax(ht @ wt.T, dim=-1)
    log_q = F.log_softmax(zs, dim=-1)
    if divergence == "kl":
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    if divergence == "reverse_kl":
        return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    log_m = torch.logsumexp(torch.stack([log_q + math.log(1 - beta), log_p + math.log(beta)]), 0)
    kl_p = F.kl_div(log_m, log_p, reduction="batchmean", log_target=True)
    kl_q = F.kl_div(log_m, log_q, reduction="batchmean", log_target=True)
    return beta * kl_p + (1 - beta) * kl_q


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
    distill = "divergence" in case
    runner = _distill_runner if distill else _runner
    # warm-up on a tiny problem: library initialisation is not the case's memory
    small = _inputs(case["lib"], case["dtype"], 64, 32, 256, teacher=distill)
    runner(case, *small)()
    del small
    run = runner(case, *_inputs(case["lib"], case["dtype"], n, d, v, teacher=distill))
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


def _distill_cases(n: int, d: int, v: int, repeat: int, divergences: list[str]) -> list[dict]:
    base = {"n": n, "d": d, "v": v, "repeat": repeat, "dtype": "float32"}
    cases = []
    for lib in ("numpy", "torch"):
        cases.append({**base, "lib": lib, "impl": "gemm", "divergence": "kl",
                      "label": "GEMM ceiling (4 products)"})  # fmt: skip
        for divergence in divergences:
            if lib == "torch":
                cases.append({**base, "lib": lib, "impl": "naive", "divergence": divergence,
                              "label": f"naive {divergence}"})  # fmt: skip
            cases.append({**base, "lib": lib, "impl": "ours", "divergence": divergence,
                          "label": f"ours {divergence}"})  # fmt: skip
    return cases


def _naive_bytes(case: dict) -> int:
    """A rough bound of the naive case's memory: (N, V) float32 arrays, ~3 for
    PyTorch (logits, their gradient, a softmax) and ~8 for the NumPy reference;
    ~7 for the naive distillation (two logits, two log-softmaxes, the
    divergence's terms and the gradient), ~10 for its JSD (the mixture)."""
    if "divergence" in case:
        count = 10 if case["divergence"] == "jsd" else 7
    else:
        count = 8 if case["lib"] == "numpy" else 3
    return count * case["n"] * case["v"] * 4


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
    parser.add_argument(
        "--loss", choices=("ce", "distill", "all"), default="all",
        help="linear_cross_entropy (ce), linear_distillation_loss (distill) or both",
    )  # fmt: skip
    parser.add_argument(
        "--divergences", nargs="*", default=["kl", "reverse_kl", "jsd"],
        help="the distillation cases' divergences",
    )  # fmt: skip
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
        if args.loss in ("ce", "all"):
            print(f"\n## linear_cross_entropy, N={n}, D={d}, V={v}\n")
            _table(_cases(n, d, v, repeat), args)
        if args.loss in ("distill", "all"):
            print(f"\n## linear_distillation_loss, N={n}, D={d}, V={v}\n")
            _table(_distill_cases(n, d, v, repeat, args.divergences), args)
    return 0


def _table(cases: list[dict], args: argparse.Namespace) -> None:
    """Run ``cases`` one by one and print their rows as they finish."""
    print("| library | dtype | implementation | time | ratio to GEMM ceiling | extra memory | load |")
    print("|---|---|---|---:|---:|---:|---:|")
    ceiling: dict = {}
    for case in cases:
        key = (case["lib"], case["dtype"])
        if args.only and args.only not in case["label"] and case["impl"] != "gemm":
            continue
        row = f"| {case['lib']} | {case['dtype']} | {case['label']} |"
        if case["impl"] == "naive" and (
            (args.skip_naive_large and case["v"] >= 128000)
            or _naive_bytes(case) > _proc.available_memory() - 2 * GiB
        ):
            need = _naive_bytes(case) / GiB
            available = _proc.available_memory() / GiB
            print(row + f" skipped (needs ~{need:.0f} GiB; {available:.1f} GiB available) | | | |")
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


if __name__ == "__main__":
    sys.exit(main())
