"""``cross_entropy_value_and_grad``: the value and gradient, written into memory the caller keeps."""

from __future__ import annotations

import math
from typing import Any, cast

import array_api_compat
import numpy as np

from .._core.namespace import is_torch, namespace, numeric_guard, restore
from .._core.options import CrossEntropyOptions
from .._core.prepared import prepare_class_call, rebind
from .._core.reduction import Reduction
from .._core.softmax_ce import evaluate_cross_entropy
from .._core.types import Array, ArrayLike, ArrayT
from .._core.validate import check_ignore_index
from ._launch import host_arrays, host_buffer, run, tensors
from .cross_entropy import cross_entropy
from .native import enabled

__all__ = ["cross_entropy_value_and_grad"]


@numeric_guard
def cross_entropy_value_and_grad(
    input: ArrayT | ArrayLike,
    target: Array | ArrayLike,
    weight: Array | ArrayLike | None = None,
    ignore_index: int | None = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    axis: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    out: ArrayT | None = None,
    overwrite_input: bool = False,
) -> tuple[ArrayT, ArrayT]:
    r"""``value_and_grad(cross_entropy)(...)`` with control over the gradient's memory.

    The naive equivalent is ``ce.value_and_grad(ce.cross_entropy)(input, target,
    ...)`` followed by ``out[...] = grad``; here the kernel writes the gradient
    straight into ``out``, so the only logits-sized memory is the one the
    caller provides.

    Parameters
    ----------
    input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss, softcap
        As for :func:`crossentropy.cross_entropy`.
    out : array, optional, keyword-only
        Receives the gradient: ``input``'s shape, dtype and array library
        (a NumPy array or a PyTorch CPU tensor), writable.
    overwrite_input : bool, default False, keyword-only
        Write the gradient over ``input`` (then ``out`` must be omitted).  The
        logits are lost; the memory peak is that of the per-row loss.

    Returns
    -------
    (value, grad)
        ``value`` exactly as :func:`crossentropy.cross_entropy` returns it;
        ``grad`` of shape and dtype of ``input``: ``out``, ``input`` itself
        (``overwrite_input``) or a new array.

    Raises
    ------
    ValueError
        ``out`` of the wrong shape or dtype, ``out`` together with
        ``overwrite_input``, or a read-only ``out``/``input``; and whatever
        :func:`crossentropy.cross_entropy` raises.

    Notes
    -----
    When the kernels do not apply (disabled, another array library) the
    portable path computes the gradient and it is then copied into ``out``.
    A PyTorch ``input`` is written through ``input.detach()``: autograd is not
    told, as with any in-place update under ``torch.no_grad()``.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> x = np.array([[2.0, 1.0, 0.1]])
    >>> loss, g = ce.kernels.cross_entropy_value_and_grad(x, np.array([0]), overwrite_input=True)
    >>> round(float(loss), 4), g is x
    (0.417, True)
    >>> x.round(4)                                  # softmax - one-hot, in place
    array([[-0.341 ,  0.2424,  0.0986]])
    """
    ignore_index = check_ignore_index(ignore_index)
    if overwrite_input:
        if out is not None:
            raise ValueError("pass either out= or overwrite_input=True, not both")
        # an array (the gradient is written into it), hence of input's type
        out = cast("ArrayT", input.detach() if hasattr(input, "detach") else input)
    host = host_arrays(input, target, weight, ignore_index)
    call = prepare_class_call(
        *(host or (input, target, weight)),
        reduction=reduction,
        ignore_index=ignore_index,
        axis=axis,
        probabilities=True,
    )
    options = CrossEntropyOptions.checked(label_smoothing, z_loss, softcap)
    if out is not None:
        buffer = _checked_buffer(input, out, host is not None, {"target": target, "weight": weight})
        if buffer is not None and _writes_directly(call, out, buffer):
            result = run(call, options, True, out=buffer)
            if result is not None:
                value = result[0] if host is None else tensors(result)[0]
                return restore(call.xp, value, call.dtype) if host is None else value, out
    fast = cross_entropy(call, options, ("input",), source=input if host else None)
    if fast is None:
        if host is not None:
            call = rebind(call, input, target, weight)
        fast = evaluate_cross_entropy(call, options, ("input",))
    value, grads = fast
    if out is None:
        return value, grads["input"]
    out[...] = grads["input"]
    return value, out


def _checked_buffer(input: Any, out: Any, on_host: bool, others: dict) -> Any:
    """``out`` (or its NumPy view for a host call), after checking its type, shape,
    dtype, writability and memory; ``None`` if the kernel cannot write into it.
    ``others`` are the other arguments by name (target, weight), which ``out``
    must not overlap."""
    _, (inp,) = namespace(input, names=("input",), required=1)
    what = "input, with overwrite_input=True," if out is input or _same_memory(out, inp) else "out"
    if not _same_library(out, inp):
        raise TypeError(
            f"out must be an array of input's library ({type(inp).__name__}), "
            f"got {type(out).__name__}"
        )
    if tuple(out.shape) != tuple(inp.shape) or out.dtype != inp.dtype:
        raise ValueError(
            f"out must have input's shape {tuple(inp.shape)} and dtype {inp.dtype}, "
            f"got shape {tuple(out.shape)} and dtype {out.dtype}"
        )
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError(f"{what.removesuffix(',')} is read-only")
    strides, shape = _strides(out), tuple(out.shape)
    if math.prod(shape) and _self_overlapping(strides, shape):
        if any(s == 0 and n > 1 for n, s in zip(shape, strides)):
            kind = "a zero stride (an expanded or broadcast view, "
        else:
            kind = "elements that share memory ("
        raise ValueError(
            f"{what.removesuffix(',')} has {kind}shape {shape}, strides {strides}): several "
            f"gradient entries would share one memory location; pass a buffer of its own, "
            f"e.g. out=np.empty_like(input)"
        )
    if what == "out" and _overlap(out, inp):
        raise ValueError("out overlaps input without being input itself: pass a separate buffer")
    for name, a in others.items():
        if a is not None and _overlap(out, a):
            raise ValueError(
                f"{what} shares memory with {name}, which the gradient would overwrite "
                f"while it is read; pass a separate buffer"
            )
    return host_buffer(out) if on_host else out


def _writes_directly(call: Any, out: Any, buffer: Any) -> bool:
    """True if the kernel may write the gradient into ``buffer``: its dtype is the
    compute dtype, and autograd does not watch it."""
    return (
        enabled()
        and call.x.dtype == buffer.dtype
        and (isinstance(out, np.ndarray) or not out.requires_grad)
    )


def _same_library(out: Any, inp: Any) -> bool:
    if isinstance(inp, np.ndarray):
        return isinstance(out, np.ndarray)
    if is_torch(inp):
        return is_torch(out)
    return type(out) is type(inp) and not array_api_compat.is_jax_array(out)


def _strides(a: Any) -> tuple:
    """Element strides of a NumPy array or PyTorch tensor (other libraries: none known)."""
    if isinstance(a, np.ndarray):
        return tuple(s // a.itemsize for s in a.strides)
    return tuple(a.stride()) if is_torch(a) else (1,) * a.ndim


def _self_overlapping(strides: tuple, shape: tuple) -> bool:
    """True unless the layout provably gives every element its own memory: taken
    from the smallest stride up, each axis steps past everything the axes before it
    span.  (A few exotic interleaved layouts that do not overlap are refused too.)"""
    span = 1  # elements covered so far, from the first one
    for stride, n in sorted((abs(s), n) for s, n in zip(strides, shape) if n > 1):
        if stride < span:
            return True
        span += stride * (n - 1)
    return False


def _address(a: Any) -> tuple | None:
    """``(device, pointer, item size, byte strides)`` of a NumPy array or PyTorch
    tensor (any dtype), or ``None``."""
    if isinstance(a, np.ndarray):
        return "cpu", a.__array_interface__["data"][0], a.itemsize, a.strides
    if is_torch(a):
        size = a.element_size()
        return str(a.device), a.data_ptr(), size, tuple(s * size for s in a.stride())
    return None


def _same_memory(a: Any, b: Any) -> bool:
    """True if ``a`` and ``b`` are the same elements of the same memory."""
    ea, eb = _address(a), _address(b)
    return ea is not None and ea == eb and tuple(a.shape) == tuple(b.shape)


def _extent(a: Any) -> tuple | None:
    """``(device, first byte, one past the last byte)`` of a non-empty NumPy array
    or PyTorch tensor, or ``None``."""
    address = _address(a)
    if address is None or math.prod(a.shape) == 0:
        return None
    where, ptr, size, strides = address
    lo = ptr + sum((n - 1) * s for n, s in zip(a.shape, strides) if s < 0)
    hi = ptr + sum((n - 1) * s for n, s in zip(a.shape, strides) if s > 0) + size
    return where, lo, hi


def _overlap(a: Any, b: Any) -> bool:
    """True if the memory spans of ``a`` and ``b`` intersect (they may share memory)."""
    ea, eb = _extent(a), _extent(b)
    return ea is not None and eb is not None and ea[0] == eb[0] and ea[1] < eb[2] and eb[1] < ea[2]
