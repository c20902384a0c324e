"""The PyTorch ``autograd.Function`` of the fused linear losses (built on first use).

One Function serves ``linear_cross_entropy`` (and its per-token statistics)
and ``linear_distillation_loss``: a :class:`Spec` says how to prepare the call
and what to return besides the loss.  Its differentiable arguments are the
head's ``input``, ``linear_weight`` and ``linear_bias`` and the ``target``
(class probabilities only); the rest (class weights, a teacher's head) is
constant.

float32/float64 CPU tensors are computed on NumPy views of their memory (the
NumPy engine: NumPy's BLAS, its in-place block operations and fused kernels;
no copy), and the results handed back as tensors: PyTorch's many small
operations on a block each start its thread pool, which on a busy machine
costs more than the block's arithmetic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core.namespace import is_torch, numeric_guard
from ._engine import cotangent_rows, evaluate, reduced_value

__all__ = ["Spec", "needs_autograd", "torch_function", "value_and_grads"]


@dataclass(frozen=True)
class Spec:
    """How to run one call: ``prepare(input, linear_weight, linear_bias, target,
    *rest)`` validates the arrays into a ``LinearCall``, ``finish(c, loss, extras)``
    returns the outputs ``(value, *statistics)`` (the statistics never
    differentiable)."""

    prepare: Callable[..., Any]
    finish: Callable[..., tuple] = lambda c, loss, extras: (reduced_value(c, loss),)
    host: bool = True  # CPU tensors may run on NumPy views (not with a shard's collectives)


def needs_autograd(*arrays: Any) -> bool:
    """True if PyTorch autograd must see the call (grad mode on, a tensor requiring grad)."""
    tensors = [a for a in arrays if a is not None and is_torch(a)]
    if not tensors:
        return False
    import torch

    return torch.is_grad_enabled() and any(a.requires_grad for a in tensors)


def _detach(a: Any) -> Any:
    return a.detach() if is_torch(a) else a


def _host(spec: Spec, arrays: tuple) -> tuple | None:
    """NumPy views of ``arrays`` when they are PyTorch CPU tensors that NumPy reads
    as they are (float32/float64 floats, integer or boolean targets; ``None``
    and NumPy arrays pass), else ``None``."""
    if not spec.host or not any(a is not None and is_torch(a) for a in arrays):
        return None
    import torch

    views = []
    for a in arrays:
        if a is None or isinstance(a, np.ndarray):
            views.append(a)
            continue
        if not is_torch(a) or a.device.type != "cpu" or a.layout != torch.strided:
            return None
        if a.is_neg() or a.is_conj() or a.dtype in (torch.float16, torch.bfloat16):
            return None
        if a.is_complex():
            return None
        views.append(a.detach().numpy())
    return tuple(views)


def _tensors(values: Any) -> Any:
    """NumPy results (arrays, scalars, in tuples or lists) as PyTorch tensors."""
    if isinstance(values, (tuple, list)):
        return type(values)(_tensors(v) for v in values)
    if isinstance(values, (np.ndarray, np.generic)):
        import torch

        return torch.from_numpy(np.asarray(values))
    return values


@numeric_guard
def value_and_grads(
    spec: Spec, arrays: tuple, need: tuple, cotangent: Any = None
) -> tuple[tuple, tuple]:
    """``(outputs, (dinput, dlinear_weight, dlinear_bias, dtarget))`` without
    PyTorch autograd, the gradients flagged in ``need`` (else ``None``); with
    ``cotangent`` (the loss's shape), those of ``sum(cotangent * loss)``."""
    host = _host(spec, arrays)
    c = spec.prepare(*(host or (_detach(a) for a in arrays)))
    if host and is_torch(cotangent):
        cotangent = cotangent.detach().cpu().numpy()
    row_scale = cotangent_rows(c, cotangent) if any(need) else None
    loss, grads, extras = evaluate(c, need, row_scale)
    outputs = spec.finish(c, loss, extras)
    return (_tensors(outputs), _tensors(grads)) if host else (outputs, grads)


@functools.cache
def torch_function() -> Any:
    """The ``torch.autograd.Function`` (built on first use: PyTorch is imported lazily)."""
    import torch
    from torch.autograd.function import once_differentiable

    class FusedLinearLoss(torch.autograd.Function):
        """Scalar reductions: gradients computed in the forward and handed over
        in the backward (once: they are scaled in place).  ``'none'``: the
        backward recomputes the blocks with the upstream gradient per row."""

        @staticmethod
        def forward(
            ctx: Any,
            spec: Any,
            input: Any,
            linear_weight: Any,
            linear_bias: Any,
            target: Any,
            *rest: Any,
        ) -> Any:
            arrays = (input, linear_weight, linear_bias, target, *rest)
            host = _host(spec, arrays)
            c = spec.prepare(*(host or arrays))
            ctx.reduction = c.reduction
            need = tuple(ctx.needs_input_grad[1:5])
            if c.reduction == "none":
                loss, _, extras = evaluate(c, (False,) * 4)
                ctx.save_for_backward(*arrays)
                ctx.spec = spec
            else:
                loss, grads, extras = evaluate(c, need)
                ctx.grads = list(_tensors(grads) if host else grads)
            outputs = spec.finish(c, loss, extras)
            outputs = _tensors(outputs) if host else outputs
            ctx.mark_non_differentiable(*outputs[1:])
            return outputs

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad_output: Any, *_statistics: Any) -> tuple:
            grads: Any
            if ctx.reduction == "none":
                saved = ctx.saved_tensors
                host = _host(ctx.spec, saved)
                c = ctx.spec.prepare(*(host or saved))
                row_scale = grad_output.reshape(-1)
                row_scale = row_scale.numpy() if host else row_scale
                if c.kept is not None:
                    row_scale = row_scale[c.kept]
                row_scale = c.xp.astype(row_scale, c.cdtype)
                _, grads, _ = evaluate(c, tuple(ctx.needs_input_grad[1:5]), row_scale)
                grads = _tensors(grads) if host else grads
                rest = len(saved) - 4
            else:
                grads = ctx.grads
                if grads is None:
                    raise RuntimeError(
                        "fused linear loss: backward through the same scalar loss twice; "
                        "its gradients are computed in the forward and handed over once. "
                        "Use reduction='none' and sum, which recomputes them in each backward."
                    )
                ctx.grads = None
                if not bool(grad_output == 1):
                    grads = [None if g is None else g.mul_(grad_output) for g in grads]
                rest = len(ctx.needs_input_grad) - 5
            return (None, *grads, *([None] * rest))

    return FusedLinearLoss
