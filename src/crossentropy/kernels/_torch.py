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
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from .._core.options import CrossEntropyOptions
from .._core.prepared import ClassCall
from .._core.reduction import reduce
from .._core.softmax_ce import cross_entropy_rows
from ._launch import package, run, tensors

__all__ = ["attach_gradient", "autograd_cross_entropy"]


@functools.cache
def _function() -> Any:
    """The ``torch.autograd.Function`` (built on first use: PyTorch is imported lazily)."""
    import torch

    class _CrossEntropy(torch.autograd.Function):
        """Fused cross-entropy of ``x`` (the input, or the class-last view of a
        batch of tensors): the kernel's value, its gradient saved."""

        @staticmethod
        def forward(ctx: Any, x: Any, call: tuple) -> Any:
            prepare, value, g_full, axis, class_last, per_row = call
            ctx.save_for_backward(x)  # no copy: guards against in-place changes
            ctx.prepare = prepare  # () -> (ClassCall, options), for a recomputation
            ctx.grad = g_full
            ctx.axis = axis  # the class axis of g_full (the caller's layout), moved
            ctx.class_last = class_last  # last when x is the call's class-last view
            ctx.per_row = per_row
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
                g = tensors(run(*ctx.prepare(), True))[1]
            axis = ctx.axis
            if ctx.class_last and axis != g.ndim - 1:
                g, axis = torch.movedim(g, axis, -1), g.ndim - 1
            if ctx.per_row:
                return g.mul_(grad_value.unsqueeze(axis)), None
            if grad_value.is_cpu and grad_value.item() == 1.0:  # loss.backward()
                return g, None
            return g.mul_(grad_value), None

    return _CrossEntropy


def _differentiable_grad(ctx: Any, x: Any, grad_value: Any) -> Any:
    """``grad_value`` times the gradient with respect to ``x``, computed by
    autograd through the portable path with ``create_graph=True``."""
    import torch

    b, options = ctx.prepare()

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
    class_last = x is None
    x = b.x if x is None else x
    call = (lambda: (b, options), value, g_full, b.axis, class_last, b.reduction == "none")
    value = _function().apply(x, call)
    return package(b, wrt, value, g_full, dt_full)


def attach_gradient(x: Any, value: Any, g: Any, per_row: bool, prepare: Callable) -> Any:
    """``value`` (the loss of the 2-D class-last tensor ``x``) as an autograd node
    whose backward hands over ``g``, the gradient the kernel computed with it;
    ``prepare()`` gives the ``(ClassCall, options)`` to compute it again with.

    ``x`` must be a plain tensor with storage (its ``data_ptr`` was read): the
    node is made by ``torch._C._FunctionBase.apply`` directly, without the
    Python wrapper of ``Function.apply``, whose work (unwrapping tensors of
    finished ``torch.func`` transforms) does not apply to it and costs as
    much as the rest of a small call."""
    return _plain_apply()(x, (prepare, value, g, 1, False, per_row))


@functools.cache
def _plain_apply() -> Callable:
    import torch

    return super(torch.autograd.Function, _function()).apply
