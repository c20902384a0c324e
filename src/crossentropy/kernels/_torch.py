"""PyTorch CPU tensors through the fused kernel, with autograd.

The kernel computes the loss and, in the same pass, the gradient of the
reduced loss; the Function records the value and saves that gradient, and its
backward only scales the saved gradient by the incoming one
(and returns it untouched for the usual ``loss.backward()``).  A backward with
``create_graph=True`` (double backward, Hessian-vector products, gradient
penalties) instead recomputes the gradient on the portable path, as a
function of the input that autograd can differentiate again.  The kernel reads
the tensors in place: ``data_ptr`` and strides, no copies.  A batch prepared
on NumPy views of the tensors (``host_arrays``) is differentiated with respect
to the caller's ``input`` itself, in its own layout; a batch of tensors with
respect to its class-last view.  The Function class is built on first use, so
importing this module does not import PyTorch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import array_api_compat
import numpy as np

from .._core.options import CrossEntropyOptions
from .._core.prepared import ClassCall
from .._core.reduction import reduce
from .._core.softmax_ce import cross_entropy_rows
from ._launch import package, run, tensors

__all__ = ["autograd_cross_entropy"]


@functools.cache
def _function() -> Any:
    """The ``torch.autograd.Function`` (built on first use: PyTorch is imported lazily)."""
    import torch

    class _CrossEntropy(torch.autograd.Function):
        """Fused cross-entropy of ``x`` (the input, or the class-last view of a
        batch of tensors): the kernel's value, its gradient saved."""

        @staticmethod
        def forward(ctx: Any, x: Any, call: tuple) -> Any:
            b, options, value, g_full = call
            ctx.save_for_backward(x)  # no copy: guards against in-place changes
            ctx.call = (b, options)
            ctx.grad = g_full
            ctx.axis = b.axis  # the class axis of g_full (the caller's layout), moved
            ctx.class_last = not isinstance(b.x, np.ndarray)  # last when x is b.x
            ctx.per_row = b.reduction == "none"
            return value

        @staticmethod
        def backward(ctx: Any, grad_value: Any) -> tuple[Any, None]:
            if torch.is_grad_enabled():  # create_graph=True: a gradient with its own graph
                (x,) = ctx.saved_tensors
                ctx.grad = None
                return _differentiable_grad(ctx, x, grad_value), None
            # hand the saved gradient over (autograd then adopts it instead of copying);
            # a second backward (retain_graph=True) recomputes it
            g, ctx.grad = ctx.grad, None
            if g is None:
                (x,) = ctx.saved_tensors  # raises if x was modified in place since the forward
                g = tensors(run(*ctx.call, True))[1]
            axis = ctx.axis
            if ctx.class_last and axis != g.ndim - 1:
                g, axis = torch.movedim(g, axis, -1), g.ndim - 1
            if ctx.per_row:
                return g.mul_(grad_value.unsqueeze(axis)), None
            if bool(grad_value == 1):
                return g, None
            return g.mul_(grad_value), None

    return _CrossEntropy


def _differentiable_grad(ctx: Any, x: Any, grad_value: Any) -> Any:
    """``grad_value`` times the gradient with respect to ``x``, computed by
    autograd through the portable path with ``create_graph=True``."""
    import torch

    b, options = ctx.call

    def tensor(a: Any) -> Any:  # NumPy views of the caller's tensors, as tensors again
        return a if a is None or isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))

    rows = x if ctx.class_last or b.axis == x.ndim - 1 else torch.movedim(x, b.axis, -1)
    tb = dataclasses.replace(
        b,
        xp=array_api_compat.array_namespace(x),
        x=rows,
        target=tensor(b.target),
        weight=tensor(b.weight),
        class_weight=tensor(b.class_weight),
    )
    loss, denom, _, _ = cross_entropy_rows(tb, options, False)
    value = reduce(tb.xp, loss, tb.reduction, denom)
    (g,) = torch.autograd.grad(value, x, grad_value.to(value.dtype), create_graph=True)
    return g


def autograd_cross_entropy(
    b: ClassCall,
    options: CrossEntropyOptions,
    wrt: tuple[str, ...],
    x: Any = None,
) -> tuple[Any, dict] | None:
    """``evaluate_cross_entropy(b, options, wrt)`` for a call whose input needs a gradient: the
    value is an autograd node; the gradients in ``wrt`` (computed in the same
    pass) are plain tensors.  ``x`` is the input tensor of a batch prepared on
    NumPy views (default: the batch's own class-last view).  ``None`` if the
    kernel does not apply."""
    result = run(b, options, True, target_grad="target" in wrt)
    if result is None:
        return None
    value, g_full, dt_full = tensors(result)
    x = b.x if x is None else x
    value = _function().apply(x, (b, options, value, g_full))
    return package(b, wrt, value, g_full, dt_full)
