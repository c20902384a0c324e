"""The kernels' threads: a persistent pool of their own, or PyTorch's OpenMP threads.

Without PyTorch the kernels keep worker threads between calls (a call of a few
microseconds can then use more than one core); once PyTorch tensors reach them
they run on PyTorch's OpenMP runtime instead.  Either way a call's result must
not depend on the threads, callers on several Python threads must each get
their own result, a forked child must compute (not hang) and a process must
exit with its workers idle.  Each case runs in a fresh interpreter, so that the
mode under test is the only one the process has seen.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.support import run_python

# the shapes cross the pool's thresholds: 4096 elements (the pool), 16384 (OpenMP),
# 131072 (every thread, waking sleeping workers); odd row counts split unevenly
SETUP = """
import os, sys, threading
import numpy as np
MODE = {mode!r}
if MODE == "openmp":
    import torch
import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import native
if MODE == "openmp":
    assert native.use_torch_threads(), "PyTorch's OpenMP runtime was not found"
SHAPES = [(40, 100), (64, 100), (256, 100), (33, 1000), (1031, 100), (2048, 100), (17, 9000),
          (4096, 10), (300, 7)]
vg = ce.value_and_grad(ce.cross_entropy)

def batch(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape).astype(dtype)
    t = rng.integers(0, shape[1], shape[0])
    t[::5] = -100
    return x, t

def compute(x, t, threads, **kw):
    kernels.set_num_threads(threads)
    try:
        return vg(x, t, label_smoothing=0.05, **kw)
    finally:
        kernels.set_num_threads(None)
"""


def _run(mode: str, body: str, timeout: float = 120.0) -> str:
    code = textwrap.dedent(SETUP.format(mode=mode)) + textwrap.dedent(body)
    done = run_python("-c", code, timeout=timeout)
    assert done.returncode == 0, f"exit status {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


MODES = ["own", "openmp"]


@pytest.mark.parametrize("mode", MODES)
def test_results_do_not_depend_on_threads(mode):
    out = _run(
        mode,
        """
        checked = 0
        for dtype in ("float32", "float64"):
            for shape in SHAPES:
                x, t = batch(1, shape, dtype)
                for reduction in ("none", "mean"):
                    v1, g1 = compute(x, t, 1, reduction=reduction)
                    for threads in (2, 3, 8, 300):  # 300: beyond the kernels' 256
                        for _ in range(3):  # the pool awake, then reused
                            v, g = compute(x, t, threads, reduction=reduction)
                            np.testing.assert_array_equal(v, v1)
                            np.testing.assert_array_equal(g, g1)
                            checked += 1
        print(checked, native.info()["thread pool"])
        """,
    )
    count, pool = out.split()
    assert int(count) == 2 * 9 * 2 * 4 * 3  # dtypes, shapes, reductions, threads, repeats
    assert pool == mode


@pytest.mark.parametrize("mode", MODES)
def test_callers_on_several_threads_get_their_own_results(mode):
    # one caller owns the pool at a time; the others run on threads of their own
    out = _run(
        mode,
        """
        cases = [batch(seed, SHAPES[seed % len(SHAPES)], "float32") for seed in range(8)]
        expected = [compute(x, t, 1) for x, t in cases]
        failures = []
        def worker(k):
            try:
                for i in range(60):
                    j = (k + i) % len(cases)
                    v, g = vg(*cases[j], label_smoothing=0.05)
                    np.testing.assert_array_equal(v, expected[j][0])
                    np.testing.assert_array_equal(g, expected[j][1])
            except Exception as e:  # reported by the main thread
                failures.append(repr(e))
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for th in threads: th.start()
        for th in threads: th.join()
        print(len(failures), failures[:1])
        """,
    )
    assert out.startswith("0 "), out


@pytest.mark.parametrize("mode", MODES)
def test_forked_child_computes_with_threads_of_its_own(mode):
    # libgomp's threads, and the pool's workers, do not survive fork: the child
    # must neither wait for them nor use a pool state copied mid-call
    out = _run(
        mode,
        """
        x, t = batch(3, (2048, 100), "float64")
        small = batch(4, (256, 100), "float64")
        big = compute(x, t, 1)
        light = compute(*small, 1)
        for _ in range(20):
            vg(x, t, label_smoothing=0.05); vg(*small, label_smoothing=0.05)
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(20):
                    v, g = vg(x, t, label_smoothing=0.05)
                    np.testing.assert_array_equal(g, big[1])
                    v, g = vg(*small, label_smoothing=0.05)
                    np.testing.assert_array_equal(g, light[1])
                os._exit(0 if native.info()["thread pool"] == "own" else 3)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        v, g = vg(x, t, label_smoothing=0.05)
        np.testing.assert_array_equal(g, big[1])
        print(os.waitstatus_to_exitcode(status))
        """,
        timeout=60,
    )
    assert out.strip() == "0"


@pytest.mark.parametrize("mode", MODES)
def test_process_exits_with_workers_awake(mode):
    # the last call leaves the workers spinning: exiting must neither hang nor crash
    out = _run(
        mode,
        """
        x, t = batch(5, (2048, 100), "float32")
        for _ in range(5):
            vg(x, t)
        print("exiting")
        sys.stdout.flush()
        """,
        timeout=30,
    )
    assert out.strip() == "exiting"


def test_signals_reach_the_main_thread():
    # the workers block every signal: a handler set by Python runs, once, in the main thread
    out = _run(
        "own",
        """
        import signal
        seen = []
        signal.signal(signal.SIGUSR1, lambda *a: seen.append(threading.current_thread().name))
        x, t = batch(6, (2048, 100), "float32")
        for _ in range(50):
            vg(x, t)
            os.kill(os.getpid(), signal.SIGUSR1)
        print(len(seen), set(seen))
        """,
    )
    assert out.strip() == "50 {'MainThread'}"


def test_child_of_a_pytorch_parent_that_never_used_the_kernels_threads():
    # the parent ran PyTorch's OpenMP operations only; libgomp's threads are gone in the
    # child, which must not wait for them at its first threaded call (it hung there once)
    out = _run(
        "plain",
        """
        import torch
        a = torch.randn(1000, 1000)
        for _ in range(3):
            (a @ a).sum()  # libgomp's threads exist now
        rng = np.random.default_rng(7)
        x = rng.normal(size=(2048, 100)); t = rng.integers(0, 100, 2048)
        expected = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(t))
        pid = os.fork()
        if pid == 0:  # no PyTorch operation here that would use its own OpenMP threads
            xt = torch.from_numpy(x).requires_grad_()
            loss = ce.cross_entropy(xt, torch.from_numpy(t))
            loss.backward()
            close = abs(float(loss) - float(expected)) <= 1e-12 * float(expected)
            ok = close and xt.grad is not None and native.info()["thread pool"] == "own"
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """,
        timeout=60,
    )
    assert out.strip() == "0"


def test_pytorch_thread_setting_caps_the_openmp_threads():
    # a DataLoader worker: forked before the kernels were imported, PyTorch's threads set
    # to 1; the kernels then attach to libgomp in the child and must use one thread
    code = textwrap.dedent(
        """
        import os
        import numpy as np, torch
        a = torch.randn(1000, 1000)
        for _ in range(3):
            (a @ a).sum()
        pid = os.fork()
        if pid == 0:
            torch.set_num_threads(1)
            import crossentropy as ce
            from crossentropy.kernels import native
            rng = np.random.default_rng(8)
            x = torch.from_numpy(rng.normal(size=(2048, 100))).requires_grad_()
            t = torch.from_numpy(rng.integers(0, 100, 2048))
            ce.cross_entropy(x, t).backward()
            os._exit(0 if native.info()["thread pool"] == "openmp" else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    done = run_python("-c", code, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "0", (done.stdout, done.stderr)
