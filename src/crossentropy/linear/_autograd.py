"""The PyTorch ``autograd.Function`` of ``linear_cross_entropy`` (built on first use)."""

from __future__ import annotations

import functools
from typing import Any

from .._core.namespace import is_torch
from ._engine import evaluate, reduced_value
from ._prepare import prepare_linear_call

__all__ = ["needs_autograd", "torch_function"]


def needs_autograd(*arrays: Any) -> bool:
    """True if PyTorch autograd must see the call (grad mode on, a tensor requiring grad)."""
    tensors = [a for a in arrays if a is not None and is_torch(a)]
    if not tensors:
        return False
    import torch

    return torch.is_grad_enabled() and any(a.requires_grad for a in tensors)


@functools.cache
def torch_function() -> Any:
    """The ``torch.autograd.Function`` (built on first use: PyTorch is imported lazily)."""
    import torch
    from torch.autograd.function import once_differentiable

    class LinearCrossEntropy(torch.autograd.Function):
        """Scalar reductions: gradients computed in the forward and handed over
        in the backward (once: they are scaled in place).  ``'none'``: the
        backward recomputes the blocks with the upstream gradient per row."""

        @staticmethod
        def forward(
            ctx: Any,
            input: Any,
            linear_weight: Any,
            linear_bias: Any,
            target: Any,
            weight: Any,
            spec: tuple,
        ) -> Any:
            c = prepare_linear_call(input, linear_weight, target, linear_bias, weight, *spec)
            ctx.reduction = c.reduction
            if c.reduction == "none":
                loss, _ = evaluate(c, (False, False, False))
                ctx.save_for_backward(input, linear_weight, linear_bias, target, weight)
                ctx.spec = spec
            else:
                loss, grads = evaluate(c, tuple(ctx.needs_input_grad[:3]))
                ctx.grads = list(grads)
            return reduced_value(c, loss)

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, grad_output: Any) -> tuple:
            grads: Any
            if ctx.reduction == "none":
                input, linear_weight, linear_bias, target, weight = ctx.saved_tensors
                c = prepare_linear_call(input, linear_weight, target, linear_bias, weight, *ctx.spec)
                row_scale = grad_output.reshape(-1)
                if c.kept is not None:
                    row_scale = row_scale[c.kept]
                row_scale = row_scale.to(c.cdtype)
                _, grads = evaluate(c, tuple(ctx.needs_input_grad[:3]), row_scale)
            else:
                grads = ctx.grads
                if grads is None:
                    raise RuntimeError(
                        "linear_cross_entropy: backward through the same scalar loss twice; "
                        "its gradients are computed in the forward and handed over once. "
                        "Use reduction='none' and sum, which recomputes them in each backward."
                    )
                ctx.grads = None
                if not bool(grad_output == 1):
                    grads = [None if g is None else g.mul_(grad_output) for g in grads]
            return (*grads, None, None, None)

    return LinearCrossEntropy
