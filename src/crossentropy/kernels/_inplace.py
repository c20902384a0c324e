"""``cross_entropy_value_and_grad``: the value and gradient, written into memory the caller keeps."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core.namespace import namespace, restore
from .._core.options import CrossEntropyOptions
from .._core.prepared import prepare_class_call, rebind
from .._core.softmax_ce import evaluate_cross_entropy
from ._launch import host_arrays, host_buffer, run, tensors
from .cross_entropy import cross_entropy
from .native import enabled, strided

__all__ = ["cross_entropy_value_and_grad"]


def cross_entropy_value_and_grad(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    axis: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    out: Any = None,
    overwrite_input: bool = False,
) -> tuple[Any, Any]:
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
    if overwrite_input:
        if out is not None:
            raise ValueError("pass either out= or overwrite_input=True, not both")
        out = input.detach() if hasattr(input, "detach") else input
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
        buffer = _checked_buffer(input, out, host is not None)
        if buffer is not None and _writes_directly(call, input, out, buffer):
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


def _checked_buffer(input: Any, out: Any, on_host: bool) -> Any:
    """``out`` (or its NumPy view for a host call), after checking its shape,
    dtype and writability; ``None`` if the kernel cannot write into it."""
    _, (inp,) = namespace(input)
    if tuple(out.shape) != tuple(inp.shape) or out.dtype != inp.dtype:
        raise ValueError(
            f"out must have input's shape {tuple(inp.shape)} and dtype {inp.dtype}, "
            f"got shape {tuple(out.shape)} and dtype {out.dtype}"
        )
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out (or input, with overwrite_input=True) is read-only")
    return host_buffer(out) if on_host else out


def _writes_directly(call: Any, input: Any, out: Any, buffer: Any) -> bool:
    """True if the kernel may write the gradient into ``buffer``: its dtype is the
    compute dtype, it is the input itself or shares no memory with it, and
    autograd does not watch it."""
    _, (inp,) = namespace(input)
    return (
        enabled()
        and call.x.dtype == buffer.dtype
        and (_same_memory(inp, out) or not _may_overlap(inp, out))
        and (isinstance(out, np.ndarray) or not out.requires_grad)
    )


def _same_memory(a: Any, b: Any) -> bool:
    sa, sb = strided(a), strided(b)
    return sa is not None and sb is not None and (sa.ptr, sa.strides) == (sb.ptr, sb.strides)


def _may_overlap(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.may_share_memory(a, b))
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
