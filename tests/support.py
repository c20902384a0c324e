"""Helpers shared by the test modules: the :class:`Backend` wrapper, oracles and ``assert_close``.

Every backend test takes the ``xp`` fixture (a :class:`Backend`, see ``conftest.py``),
builds its inputs in NumPy float64, moves them with ``xp.asarray`` and compares the
result, converted back with ``xp.to_numpy``, against an oracle computed in float64
(PyTorch's own function, or a naive NumPy formula).  Import with
``from tests.support import assert_close, torch_oracle``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pytest

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None


@dataclass
class Backend:
    """One array library as the tests see it."""

    name: str
    xp: Any  # the module users pass arrays of (numpy, array_api_strict, torch, jax.numpy)

    def asarray(self, a: Any, dtype: str | None = None) -> Any:
        """A NumPy array (or Python data) as this backend's array, optionally cast."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype) if dtype != "bfloat16" else a
        if self.name == "numpy":
            return a
        if self.name == "torch":
            import torch

            # ascontiguousarray turns a 0-d array into shape (1,): restore the shape
            t = torch.from_numpy(np.ascontiguousarray(a).reshape(a.shape)).clone()
            return t.to(torch.bfloat16) if dtype == "bfloat16" else t
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(a)
        return self.xp.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.name == "torch":
            return a.detach().float().numpy() if str(a.dtype) == "torch.bfloat16" else a.detach().numpy()
        if self.name == "array_api_strict":
            return np.asarray(a._array)
        return np.asarray(a)

    def dtype(self, name: str) -> Any:
        if self.name == "torch":
            import torch

            return getattr(torch, name)
        return getattr(self.xp, name)

    def owns(self, a: Any) -> bool:
        """True if ``a`` is an array of this backend."""
        checks = {
            "numpy": array_api_compat.is_numpy_array,
            "torch": array_api_compat.is_torch_array,
            "jax": array_api_compat.is_jax_array,
            "array_api_strict": lambda x: type(x).__module__.startswith("array_api_strict"),
        }
        return checks[self.name](a)


def backend_params() -> list[Any]:
    params = [pytest.param("numpy", id="numpy"), pytest.param("array_api_strict", id="strict")]
    params.append(
        pytest.param("torch", id="torch", marks=pytest.mark.skipif(not HAVE_TORCH, reason="torch"))
    )
    if HAVE_JAX:
        params.append(pytest.param("jax", id="jax"))
    return params


def make_backend(name: str) -> Backend:
    if name == "numpy":
        return Backend(name, np)
    if name == "array_api_strict":
        import array_api_strict

        return Backend(name, array_api_strict)
    if name == "torch":
        import torch

        return Backend(name, torch)
    import jax.numpy as jnp

    return Backend(name, jnp)


@contextlib.contextmanager
def jax_x64(enabled: bool = True) -> Iterator[None]:
    """JAX's 64-bit types on (or off) inside the block only.

    ``jax_enable_x64`` is process-global; its context manager sets it for this
    thread until the block ends, so that tests of JAX's default (x64 off) and
    of float64 inputs run in one process in any order.
    """
    import jax

    context = getattr(jax, "enable_x64", None)
    if context is None:  # JAX before 0.6
        from jax.experimental import disable_x64, enable_x64

        context = lambda on: enable_x64() if on else disable_x64()  # noqa: E731
    with context(enabled):
        yield


def assert_close(
    actual: Any,
    expected: Any,
    *,
    backend: Backend | None = None,
    dtype: str | None = None,
    rtol: float = 1e-9,
    atol: float = 1e-12,
) -> None:
    """Values, shape, and (when given) the array library and dtype of ``actual``."""
    if backend is not None:
        assert backend.owns(actual), f"expected a {backend.name} array, got {type(actual)}"
        if dtype is not None:
            assert actual.dtype == backend.dtype(dtype), f"dtype {actual.dtype} != {dtype}"
        actual = backend.to_numpy(actual)
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def torch_oracle(fn: str, *args: Any, **kwargs: Any) -> np.ndarray:
    """``torch.nn.functional.<fn>`` in float64 on NumPy inputs, as a NumPy array.

    Floating arrays become float64 tensors, integer arrays int64 tensors.
    """
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    def conv(a: Any) -> Any:
        if isinstance(a, np.ndarray):
            if np.issubdtype(a.dtype, np.floating):
                return torch.from_numpy(a.astype(np.float64))
            return torch.from_numpy(a.astype(np.int64))
        return a

    out = getattr(F, fn)(*[conv(a) for a in args], **{k: conv(v) for k, v in kwargs.items()})
    return out.detach().numpy()


def torch_grad(fn: str, argnum: int, *args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(value, gradient of value.sum())`` of ``torch.nn.functional.<fn>`` w.r.t. ``args[argnum]``, float64."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    def conv(a: Any, grad: bool = False) -> Any:
        if isinstance(a, np.ndarray):
            if np.issubdtype(a.dtype, np.floating):
                return torch.tensor(a.astype(np.float64), requires_grad=grad)
            return torch.from_numpy(a.astype(np.int64))
        return a

    targs = [conv(a, i == argnum) for i, a in enumerate(args)]
    out = getattr(F, fn)(*targs, **{k: conv(v) for k, v in kwargs.items()})
    out.sum().backward()
    return out.detach().numpy(), targs[argnum].grad.numpy()


def finite_difference(f: Any, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite-difference gradient of the scalar ``f(x).sum()`` w.r.t. float64 ``x``."""
    x = np.array(x, dtype=np.float64, order="C")  # reshape(-1) below must be a view
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float(np.sum(f(x)))
        flat[i] = old - eps
        down = float(np.sum(f(x)))
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def run_python(*args: str, timeout: float = 120.0) -> Any:
    """Run ``python *args`` (``"-c", code`` or ``"-m", module, ...``) in a fresh
    interpreter that imports this ``crossentropy`` and ``tests``, from the
    repository's root; return the ``subprocess.CompletedProcess``.  A crash (a
    negative return code, -11 for a segmentation fault) fails the caller's
    assertion, not the test run."""
    import os
    import pathlib
    import subprocess
    import sys

    import crossentropy

    src = str(pathlib.Path(crossentropy.__file__).parent.parent)
    root = str(pathlib.Path(__file__).parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, root]))
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=root
    )
