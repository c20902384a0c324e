"""``C = A @ B + beta * C`` in place, through the BLAS that NumPy already loaded.

NumPy's matmul has no ``C += A @ B``; its BLAS does.  NumPy's wheels ship
OpenBLAS with its CBLAS symbols, which ctypes reaches in the library NumPy
has already loaded (so the same threads run both).  Anything unexpected
(another BLAS, another layout) falls back to matmul + add.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["blas_layout", "cblas", "gemm"]

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@functools.cache
def cblas() -> dict:
    import ctypes
    import glob
    import os

    found: dict = {}
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, index in (
            ("scipy_cblas_", "64_", ctypes.c_int64),
            ("cblas_", "64_", ctypes.c_int64),
            ("scipy_cblas_", "", ctypes.c_int),
            ("cblas_", "", ctypes.c_int),
        ):
            for letter, dtype, real in (
                ("s", np.float32, ctypes.c_float),
                ("d", np.float64, ctypes.c_double),
            ):
                fn = getattr(lib, f"{prefix}{letter}gemm{suffix}", None)
                if fn is None or dtype in found:
                    continue
                ptr = ctypes.c_void_p
                fn.restype = None
                fn.argtypes = [index, index, index, index, index, index, real, ptr, index,
                               ptr, index, real, ptr, index]  # fmt: skip
                found[np.dtype(dtype)] = fn
        if found:
            break
    return found


def blas_layout(m: np.ndarray) -> tuple[int, int] | None:
    """``(transpose flag, leading dimension)`` of a matrix for row-major CBLAS."""
    s0, s1 = (st // m.itemsize for st in m.strides)
    rows, cols = m.shape
    if (s1 == 1 or cols == 1) and s0 >= max(1, cols) and s0 > 0:
        return _NO_TRANS, s0
    if (s0 == 1 or rows == 1) and s1 >= max(1, rows) and s1 > 0:
        return _TRANS, s1
    return None


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray, beta: float) -> bool:
    """``c = a @ b + beta * c`` by BLAS in place; False if it cannot (then nothing is done)."""
    if not (a.dtype == b.dtype == c.dtype) or min(a.shape + b.shape) == 0:
        return False
    fn = cblas().get(c.dtype)
    la, lb, lc = blas_layout(a), blas_layout(b), blas_layout(c)
    if fn is None or la is None or lb is None or lc is None or lc[0] != _NO_TRANS:
        return False
    (m, k), n = a.shape, b.shape[1]
    fn(_ROW_MAJOR, la[0], lb[0], m, n, k, 1.0, a.ctypes.data, la[1], b.ctypes.data, lb[1],
       beta, c.ctypes.data, lc[1])  # fmt: skip
    return True
