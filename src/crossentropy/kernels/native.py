"""The compiled extension and the plumbing that hands it arrays without copying.

Arrays reach the C code as a data pointer plus element strides, so a NumPy
array, a PyTorch CPU tensor or any strided view of either (the class axis
moved last, a K-dim input) is used in place.  Nothing here imports PyTorch:
tensors are recognised through array-api-compat.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
from collections.abc import Iterator
from typing import Any

import array_api_compat
import numpy as np

try:  # built by setup.py; optional (a compiled module, not part of the import graph)
    extension: Any = importlib.import_module(__package__ + "._ce")
except ImportError:  # pragma: no cover - depends on the build
    extension = None

__all__ = [
    "Strided",
    "available",
    "disabled",
    "enabled",
    "exp_sum",
    "get_num_threads",
    "info",
    "numpy_namespace",
    "rows_geometry",
    "set_num_threads",
    "strided",
    "strided_array",
]

_DISABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("kernels_disabled", default=False)
_THREADS: list[int] = []


def available() -> bool:
    """True if the compiled kernels were built and import."""
    return extension is not None


def enabled() -> bool:
    """True if calls may take the fast path: built, not disabled by
    ``CROSSENTROPY_DISABLE_KERNELS=1`` nor inside :func:`disabled`."""
    return extension is not None and not _DISABLED.get() and _environment_allows()


_ENV_NAME = "CROSSENTROPY_DISABLE_KERNELS"
# CPython's os.environ keeps its variables in the dict ``_data`` (keys encoded): read
# there, a variable that is not set costs a dict lookup, where ``os.environ.get``
# raises and catches a KeyError (0.7 µs, a tenth of a small call's budget)
_ENV_DATA = getattr(os.environ, "_data", None)
_ENCODE = getattr(os.environ, "encodekey", lambda name: None)
_THREADS_NAME = "CROSSENTROPY_NUM_THREADS"
_ENV_KEYS = {name: _ENCODE(name) for name in (_ENV_NAME, _THREADS_NAME)}


def _environ(name: str) -> str:
    """``os.environ.get(name, "")``, at a dict lookup's cost when ``name`` is not set."""
    if type(_ENV_DATA) is dict and _ENV_DATA.get(_ENV_KEYS[name]) is None:
        return ""
    return os.environ.get(name, "")


def _environment_allows() -> bool:
    """False if ``CROSSENTROPY_DISABLE_KERNELS`` is set to anything but ``""`` or ``"0"``."""
    return _environ(_ENV_NAME) in ("", "0")


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Context manager: every call inside it takes the portable reference path."""
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def info() -> dict:
    """What was built and how it runs: ``{'available': bool, 'threads': int, 'isa': str,
    'cpus': int, 'thread pool': str}``; the pool is ``'openmp'`` (PyTorch's OpenMP
    threads, once PyTorch tensors have reached the kernels) or ``'own'``."""
    out = {"available": available(), "threads": get_num_threads()}
    if extension is not None:
        out.update(extension.info())
    return out


@functools.cache
def use_torch_threads() -> bool:
    """Run the kernels' threads on PyTorch's OpenMP runtime (called once PyTorch
    tensors reach them): its threads, awake between PyTorch's operations, take
    parts of a call instead of threads of the kernels' own competing with them
    for the cores.  True if they do."""
    return extension is not None and bool(extension.use_openmp())


#: the most threads :func:`set_num_threads` accepts (the kernels use at most 256)
MAX_THREADS = 1 << 16


def get_num_threads() -> int:
    """Threads the kernels use: :func:`set_num_threads`, else
    ``CROSSENTROPY_NUM_THREADS`` (at most :data:`MAX_THREADS`), else the CPUs
    this process may run on."""
    if _THREADS:
        return _THREADS[0]
    env = _environ(_THREADS_NAME)
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads, an integer in ``[1, 65536]`` (``None``: back to the default)."""
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"number of threads must be an integer or None, got {n!r}")
        if not 1 <= n <= MAX_THREADS:
            raise ValueError(f"number of threads must be in [1, {MAX_THREADS}], got {n!r}")
    _THREADS.clear()
    if n is not None:
        _THREADS.append(int(n))


# -- arrays as (pointer, element strides) -----------------------------------------

_CODES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}
_OTHER_CODES = {np.dtype(np.int64): 2, np.dtype(np.bool_): 3, np.dtype(np.int32): 4}


class Strided:
    """An array's data pointer, shape and element strides, and the array itself
    (kept alive while the kernel runs)."""

    __slots__ = ("array", "ptr", "shape", "strides", "code")

    def __init__(self, array: Any, ptr: int, shape: tuple, strides: tuple, code: int) -> None:
        self.array, self.ptr, self.shape, self.strides, self.code = array, ptr, shape, strides, code


def _torch_code(t: Any) -> int | None:
    import torch

    codes = {torch.float32: 0, torch.float64: 1, torch.int64: 2, torch.bool: 3, torch.int32: 4}
    return codes.get(t.dtype)


def strided(a: Any) -> Strided | None:
    """A :class:`Strided` for a NumPy array or a PyTorch CPU tensor in place,
    or ``None`` if the kernels cannot read it as it is.

    ``code`` is 0 for float32, 1 for float64, 2 for int64, 3 for bool, 4 for int32.
    """
    if isinstance(a, np.ndarray):
        if not a.flags.aligned:
            return None
        dt = a.dtype
        code = _CODES.get(dt, _OTHER_CODES.get(dt))
        if code is None or dt.byteorder not in ("=", "|"):
            return None
        size = dt.itemsize
        if any(s % size for s in a.strides):
            return None
        ptr = a.__array_interface__["data"][0]
        return Strided(a, ptr, a.shape, tuple(s // size for s in a.strides), code)
    if array_api_compat.is_torch_array(a):
        if a.device.type != "cpu" or a.is_sparse or a.is_conj() or a.is_neg():
            return None
        code = _torch_code(a)
        if code is None:
            return None
        try:
            ptr = a.data_ptr()
        except RuntimeError:  # no storage: a tensor of a torch.func transform, say
            return None
        return Strided(a, ptr, tuple(a.shape), tuple(a.stride()), code)
    return None


def strided_array(a: Any) -> Strided:
    """:func:`strided` of an array that the kernels' own code allocated or copied
    (C-ordered, of a dtype they read), where ``None`` would be a bug."""
    s = strided(a)
    if s is None:
        raise TypeError(f"the kernels cannot read their own {type(a).__name__} buffer")
    return s


def rows_geometry(shape: tuple, strides: tuple, rows_first: bool) -> tuple | None:
    """``(O, D, s0, s1)`` such that row ``r = o * D + d`` of the leading axes
    ``shape`` (C order) starts at ``o * s0 + d * s1``; ``None`` if the leading
    axes do not fold into two.  With one axis, ``rows_first`` puts it in ``O``
    (rows kernel) rather than ``D`` (columns kernel)."""
    merged: list[list[int]] = []
    for n, s in zip(shape, strides):
        if n == 1:
            continue
        if merged and merged[-1][1] == s * n:
            merged[-1] = [merged[-1][0] * n, s]
        else:
            merged.append([n, s])
    if not merged:
        return (1, 1, 0, 0)
    if len(merged) == 1:
        n, s = merged[0]
        return (n, 1, s, 0) if rows_first else (1, n, 0, s)
    if len(merged) == 2:
        (o, s0), (d, s1) = merged
        return (o, d, s0, s1)
    return None


def numpy_namespace() -> Any:
    """The Array API namespace of NumPy arrays."""
    return array_api_compat.array_namespace(_EMPTY)


_EMPTY = np.empty(0)


# -- linear_cross_entropy's logits blocks -----------------------------------------


def exp_sum(block: Any, sums: Any) -> bool:
    """``block = exp(block)`` in place and ``sums += block.sum(axis=0)``, multithreaded.

    ``block`` is a ``(rows, cols)`` float32 or float64 NumPy array whose rows
    are contiguous (any row stride), ``sums`` a contiguous ``(cols,)`` array of
    the same dtype.  Returns ``False``, having done nothing, when the kernels
    are off or cannot take the arrays as they are (the caller then uses NumPy).
    """
    if not (enabled() and isinstance(block, np.ndarray) and isinstance(sums, np.ndarray)):
        return False
    code = _CODES.get(block.dtype)
    if code is None or block.ndim != 2 or sums.dtype != block.dtype:
        return False
    if sums.shape != block.shape[1:]:
        return False
    rows, cols = block.shape
    size = block.itemsize
    s0, s1 = block.strides
    if not (block.flags.aligned and block.flags.writeable and block.dtype.isnative):
        return False
    if (cols > 1 and s1 != size) or s0 % size or (rows > 1 and s0 < cols * size):
        return False
    if not (sums.flags.c_contiguous and sums.flags.writeable and sums.flags.aligned):
        return False
    ld = s0 // size if rows > 1 else cols
    extension.exp_sum(code, rows, cols, block.ctypes.data, ld, sums.ctypes.data, get_num_threads())
    return True
