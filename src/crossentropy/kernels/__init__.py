"""Fast CPU paths behind the same API: fused, multithreaded, vectorized kernels.

``crossentropy.cross_entropy`` and ``crossentropy.value_and_grad(cross_entropy)``
take these kernels automatically for NumPy arrays and PyTorch CPU tensors in
float32/float64 (float16 is computed in float32), and fall back to the portable
Array API code for every other library, device or layout.  Results agree with
the portable path to rounding (about 1e-6 relative in float32, 1e-12 in float64).

The kernels live in an optional C extension built at install time; without a
compiler the library still installs and runs on the portable path
(:func:`available` says which).  ``CROSSENTROPY_DISABLE_KERNELS=1`` or
``with crossentropy.kernels.disabled():`` forces the portable path;
``CROSSENTROPY_NUM_THREADS`` or :func:`set_num_threads` sets the threads.

:func:`cross_entropy_value_and_grad` adds what a fixed signature cannot:
``out=`` to reuse a gradient buffer and ``overwrite_input=True`` to write the
gradient over the logits, as fused LLM losses do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._native import available, disabled, enabled, get_num_threads, set_num_threads

__all__ = [
    "available",
    "cross_entropy_value_and_grad",
    "disabled",
    "enabled",
    "get_num_threads",
    "info",
    "set_num_threads",
]


def info() -> dict:
    """What was built: ``{'available': bool, 'isa': str, 'cpus': int, 'threads': int}``."""
    from . import _native

    out = {"available": available(), "threads": get_num_threads()}
    if _native._ce is not None:
        out.update(_native._ce.info())
    return out


def _same_memory(a: Any, b: Any) -> bool:
    from ._native import strided

    sa, sb = strided(a), strided(b)
    return sa is not None and sb is not None and (sa.ptr, sa.strides) == (sb.ptr, sb.strides)


def _may_overlap(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.may_share_memory(a, b))
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


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
    from .._namespace import namespace
    from ..grad import value_and_grad
    from ..losses import classification as _cls
    from ._cross_entropy import host_buffer, host_views, run, tensors

    if overwrite_input:
        if out is not None:
            raise ValueError("pass either out= or overwrite_input=True, not both")
        out = input.detach() if hasattr(input, "detach") else input
    args = (input, target, weight, ignore_index, reduction, label_smoothing)
    options = {"axis": axis, "z_loss": z_loss, "softcap": softcap}
    if out is None:
        return value_and_grad(_cls.cross_entropy)(*args, **options)

    _xp, (inp,) = namespace(input)
    if tuple(out.shape) != tuple(inp.shape) or out.dtype != inp.dtype:
        raise ValueError(
            f"out must have input's shape {tuple(inp.shape)} and dtype {inp.dtype}, "
            f"got shape {tuple(out.shape)} and dtype {out.dtype}"
        )
    if isinstance(out, np.ndarray) and not out.flags.writeable:
        raise ValueError("out (or input, with overwrite_input=True) is read-only")

    # PyTorch CPU tensors: checked, prepared and written through NumPy views
    host = host_views(input, target, weight, ignore_index)
    buffer = out if host is None else host_buffer(out)
    if buffer is None:
        host, buffer = None, out
    arrays = (input, target, weight) if host is None else host
    b = _cls._prepare("cross_entropy", *arrays, ignore_index, reduction, axis, True)
    eps = _cls.check_label_smoothing(label_smoothing)
    zl, cap = _cls.check_z_loss_softcap(z_loss, softcap)
    direct = (
        enabled()
        and b.x.dtype == buffer.dtype
        and (_same_memory(inp, out) or not _may_overlap(inp, out))
        and (isinstance(out, np.ndarray) or not out.requires_grad)
    )
    result = run(b, eps, zl, cap, True, out=buffer) if direct else None
    if result is not None:
        if host is not None:
            return tensors(result)[0], out
        return _cls.restore(b.xp, result[0], b.dtype), out
    value, grad = value_and_grad(_cls.cross_entropy)(*args, **options)
    out[...] = grad
    return value, out
