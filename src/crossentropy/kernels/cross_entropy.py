"""The fast path of ``cross_entropy``: one fused pass for the value and the gradient.

:func:`cross_entropy` is the one entry point: it takes a prepared
:class:`~crossentropy._core.prepared.ClassCall` (class axis last, a view) and
returns what the reference
:func:`~crossentropy._core.softmax_ce.evaluate_cross_entropy` returns, or
``None`` when the kernels do not apply (another array library, a GPU tensor,
float16 compute, a layout they cannot read in place, kernels disabled), so that
the caller runs the reference instead.

PyTorch CPU tensors in float32/float64 are validated and prepared as NumPy
views of their memory (:func:`host_arrays` gives the views, the caller prepares
the call on them, and passes its tensor ``input`` as ``source``): every PyTorch
operation costs a dispatch and, on a busy machine, a wake-up of its thread
pool, which on small tensors takes longer than the whole kernel.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from .._core.options import CrossEntropyOptions
from .._core.prepared import ClassCall
from . import native, xla
from ._launch import host_arrays, package, run, tensors
from ._torch import autograd_cross_entropy

__all__ = ["cross_entropy", "host_arrays"]


def _torch_graph(b: ClassCall) -> bool | None:
    """For a tensor call: True if autograd must see the call, None if only the
    reference path can build that graph (weights or targets that need gradients)."""
    import torch

    if not torch.is_grad_enabled():
        return False
    if (b.weight is not None and b.weight.requires_grad) or (b.probs and b.target.requires_grad):
        return None
    return bool(b.x.requires_grad)


def cross_entropy(
    b: ClassCall, options: CrossEntropyOptions, wrt: tuple[str, ...], source: Any = None
) -> tuple[Any, dict] | None:
    """``(value, {name: gradient})`` of cross-entropy through the kernel, as the
    reference ``evaluate_cross_entropy(b, options, wrt)`` returns it, or ``None``
    if the kernel does not apply.

    ``source`` is the caller's PyTorch tensor ``input`` when ``b`` was prepared
    on the NumPy views of :func:`host_arrays`: the results are then tensors, the
    value an autograd node when ``source`` needs a gradient.
    """
    if not native.enabled() or (options.temperature != 1 and "target" in wrt):
        return None  # the kernel scales the target's gradient as the input's
    if source is not None:
        import torch

        if torch.is_grad_enabled() and source.requires_grad:
            return autograd_cross_entropy(b, options, wrt, x=source)
    elif array_api_compat.is_torch_array(b.x):
        graph = _torch_graph(b)
        if graph is None:
            return None
        if graph:
            return autograd_cross_entropy(b, options, wrt)
    elif array_api_compat.is_jax_array(b.x):
        if options.temperature != 1 or options.normalizer is not None:
            return None  # the custom call takes neither: the portable path
        return xla.cross_entropy(b, options, wrt)
    elif not isinstance(b.x, np.ndarray):
        return None
    result = run(b, options, "input" in wrt, target_grad="target" in wrt)
    if result is None:
        return None
    return package(b, wrt, *(result if source is None else tensors(result)))
