"""Array-library detection and dtype helpers shared by every public function.

Every public function starts with :func:`namespace`, which turns Python scalars,
lists and tuples into NumPy arrays, leaves real arrays untouched (converting a
PyTorch tensor again would detach it from autograd) and returns the Array API
namespace that all further computation goes through.  PyTorch and JAX are never
imported here: ``array_api_compat`` recognises their arrays without importing them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "compute_dtype",
    "device",
    "index_dtype",
    "is_floating",
    "is_integer",
    "is_numpy",
    "is_torch",
    "namespace",
    "numeric_guard",
    "restore",
    "to_bool",
    "upcast",
]


def _as_array(x: Any, name: str) -> Any:
    """Return ``x`` itself if it is an array, else a NumPy array of it.

    NumPy subclasses become plain ``ndarray`` views (``np.matrix`` would keep
    two dimensions through every reduction); masked arrays are refused, as
    their mask would be silently dropped.
    """
    if isinstance(x, np.ndarray) and type(x) is not np.ndarray:
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(
                f"{name} is a masked array (numpy.ma): its mask would be ignored, so it is "
                f"not accepted; pass a plain array instead, e.g. for class indices "
                f"{name}.filled(ignore_index) (masked entries then count for nothing)"
            )
        return x.view(np.ndarray)
    if x is None or array_api_compat.is_array_api_obj(x):
        return x
    return np.asarray(x)


def _label(names: Sequence[str], i: int) -> str:
    return names[i] if i < len(names) else f"argument {i}"


def namespace(*arrays: Any, names: Sequence[str] = (), required: int = 0) -> tuple[Any, list[Any]]:
    """Return ``(xp, arrays)``: the common namespace and the inputs as arrays.

    ``None`` entries pass through unchanged (optional arguments such as
    ``weight``), except among the first ``required`` arrays.  Mixing array
    libraries (a NumPy target with a PyTorch input) is allowed when the
    non-matching ones are plain NumPy arrays or Python data: they are moved
    to the library and device of the first real array, as PyTorch users
    often pass a list or NumPy array as target.  Arrays of that library on
    another device are an error.  ``names`` label the arrays in messages.
    """
    for i, a in enumerate(arrays[:required]):
        if a is None:
            raise TypeError(f"{_label(names, i)} must be an array, got None")
    converted = [_as_array(a, _label(names, i)) for i, a in enumerate(arrays)]
    present = [a for a in converted if a is not None]
    real = [i for i, a in enumerate(converted) if a is not None and not is_numpy(a)]
    if not real:
        return array_api_compat.array_namespace(*present), converted
    first = real[0]
    primary = converted[first]
    xp = array_api_compat.array_namespace(primary)
    dev = array_api_compat.device(primary)
    out = []
    for i, a in enumerate(converted):
        if a is not None and is_numpy(a):
            a = xp.asarray(a, device=dev)
        elif a is not None and i != first and _same_library(a, xp) and _elsewhere(a, dev):
            raise ValueError(
                f"{_label(names, i)} is on device {device(a)} but "
                f"{_label(names, first)} is on {dev}: move it there first, e.g. "
                f"{_label(names, i)}.to({_label(names, first)}.device)"
            )
        out.append(a)
    array_api_compat.array_namespace(*[a for a in out if a is not None])
    return xp, out


def _elsewhere(a: Any, dev: Any) -> bool:
    """True if ``a`` is on a device other than ``dev``; a traced JAX array (inside
    ``jit``) has no device of its own, so it is on no other device."""
    other = device(a)
    return other is not None and dev is not None and other != dev


def _same_library(a: Any, xp: Any) -> bool:
    try:
        return array_api_compat.array_namespace(a) is xp
    except TypeError:  # not an array of a known library: array_namespace says so below
        return False


def is_numpy(x: Any) -> bool:
    """True for a NumPy array (or NumPy scalar)."""
    return array_api_compat.is_numpy_array(x)


def device(x: Any) -> Any:
    """The device of ``x`` (``"cpu"`` for NumPy)."""
    return array_api_compat.device(x)


def index_dtype(xp: Any) -> Any:
    """The library's default integer dtype for indexing (the Array API's
    ``default_dtypes()["indexing"]``): int64 for NumPy and PyTorch, int32 for
    JAX unless ``jax_enable_x64`` is set, where asking for int64 would warn
    and truncate."""
    info = getattr(xp, "__array_namespace_info__", None)
    return xp.int64 if info is None else info().default_dtypes()["indexing"]


def is_torch(x: Any) -> bool:
    """True for a PyTorch tensor (without importing PyTorch)."""
    return array_api_compat.is_torch_array(x)


def _numpy_bfloat16(dtype: Any) -> bool:
    """True for ml_dtypes' bfloat16 in a NumPy array (a dtype NumPy itself lacks)."""
    return isinstance(dtype, np.dtype) and dtype.kind == "V" and dtype.name == "bfloat16"


def _numpy_extension(dtype: Any) -> bool:
    """True for a NumPy dtype that is neither a number nor a bool (ml_dtypes' float8, ...)."""
    return isinstance(dtype, np.dtype) and dtype.kind == "V"


def is_floating(xp: Any, x: Any) -> bool:
    """True if ``x`` has a real floating-point dtype (ml_dtypes' bfloat16 included)."""
    if _numpy_extension(x.dtype):
        return _numpy_bfloat16(x.dtype)
    return xp.isdtype(x.dtype, "real floating")


def is_integer(xp: Any, x: Any) -> bool:
    """True if ``x`` has a (signed or unsigned) integer dtype."""
    return not _numpy_extension(x.dtype) and xp.isdtype(x.dtype, "integral")


def _is_half(xp: Any, dtype: Any) -> bool:
    # the standard has no half-precision dtypes; libraries that do name them so
    # (NumPy compares any float64 dtype equal to None, so test presence first)
    if _numpy_bfloat16(dtype):
        return True
    return any(hasattr(xp, name) and dtype == getattr(xp, name) for name in ("float16", "bfloat16"))


def compute_dtype(xp: Any, dtype: Any) -> Any:
    """The dtype in which to compute for inputs of ``dtype``.

    float16 and bfloat16 are computed (and accumulated) in float32; every other
    floating dtype in itself.
    """
    return xp.float32 if _is_half(xp, dtype) else dtype


def upcast(xp: Any, x: Any) -> Any:
    """``x`` in its compute dtype (float32 for half precision), else ``x`` itself."""
    dtype = compute_dtype(xp, x.dtype)
    return x if dtype == x.dtype else xp.astype(x, dtype)


def to_bool(x: Any) -> bool | None:
    """A concrete Python bool from a 0-d boolean array, or ``None`` if ``x`` is
    traced (inside ``jax.jit`` a value-dependent check cannot run, so it is skipped)."""
    try:
        return bool(x)
    except Exception:  # jax ConcretizationTypeError and friends
        return None


def numeric_guard(fn):
    """Decorator: silence NumPy's floating-point warnings inside ``fn``.

    The functions are written so that every infinity they produce is the
    mathematically right answer (``log 0 = -inf`` in a masked branch, a KL
    divergence against a zero probability); NumPy would still warn about the
    intermediate, which under ``-W error`` would turn a correct result into an
    exception.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def restore(xp: Any, y: Any, dtype: Any) -> Any:
    """``y`` cast back to the caller's ``dtype`` (after a float32 computation)."""
    return y if y.dtype == dtype else xp.astype(y, dtype)
