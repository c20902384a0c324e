"""The losses as PyTorch custom operators: ``torch.compile``, ``torch.export`` and autocast.

``torch.compile`` traces Python code; ours validates on NumPy views and calls a
C kernel, which it cannot trace (graph breaks, "attempted to trace numpy
function").  So a loss called on tensors while PyTorch compiles or exports
becomes one call of a custom operator, ``torch.ops.crossentropy.<name>``
(registered with ``torch.library.custom_op`` on first use), that the compiled
graph runs as it is:

* its implementation is the loss's gradient rule (:mod:`crossentropy._core.rules`)
  on the real tensors: the same validation, the same errors, the fused kernel
  on CPU, and in the same pass the gradients autograd will need;
* its fake implementation gives the output shapes from the input shapes alone;
* its autograd formula multiplies the saved gradients by the incoming one, with
  the helper operator ``crossentropy::scale_gradient``, which has no autograd
  formula itself: a second derivative raises instead of silently treating the
  saved gradient as a constant.

The options (``reduction``, ``ignore_index``, ...) travel as one JSON string, so
that every argument of the public function reaches the operator, those added
later included.  A call the operator cannot take (a gradient asked for an
argument the rule does not differentiate, such as ``weight``; per-row
gradients of ``linear_cross_entropy``) runs the ordinary code, which PyTorch
then compiles with a graph break.

Autocast: PyTorch runs its losses in float32 under ``torch.autocast`` (a
bfloat16 or float16 input gives a float32 loss); :func:`torch_call` does the
same here, in eager mode and while compiling, by casting the half-precision
floating arguments to float32 first.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from .._core.aliases import axis_or_dim
from .._core.rules import rule_of
from .._core.validate import class_axis

__all__ = ["compiled_softmax", "constant_while_tracing", "torch_call", "traced_as"]

#: name -> (public function, its rule, kind, differentiable argument names)
_TRACED: dict[str, tuple[Callable, Callable, str, tuple[str, ...]]] = {}
#: the operators defined so far, by name
_OPS: dict[str, Any] = {}
_NAMESPACE = "crossentropy"
_KINDS = ("classes", "elements", "linear")


def traced_as(function: Callable, kind: str) -> Callable[[Callable], Callable]:
    """Decorator of a registered gradient rule (above ``defines_grad``): ``function``,
    its public function, runs as the custom operator
    ``crossentropy::<function.__name__>`` while PyTorch compiles.

    ``kind`` says how the output's shape and the incoming gradient follow the
    input: ``"classes"`` (a class axis: ``'none'`` gives one loss per row),
    ``"elements"`` (``'none'`` gives one loss per element) or ``"linear"``
    (one loss per row of hidden states).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")

    def register(rule: Callable) -> Callable:
        name = function.__name__
        registered = rule_of(function)
        if registered is None or registered.rule is not rule:
            raise ValueError(f"traced_as({name}) must decorate the rule defines_grad registered")
        if name in _TRACED and _TRACED[name][0] is not function:
            raise ValueError(f"two functions named {name!r} cannot both be operators")
        _TRACED[name] = (function, rule, kind, registered.differentiable)
        return rule

    return register


def torch_call(name: str, arguments: dict) -> Any:
    """The loss ``name`` on ``arguments`` (the public function's own, by name) when
    PyTorch must see the call whole: under autocast (half-precision arguments
    cast to float32, then the function again) or while compiling (the custom
    operator, or the function itself run outside the graph when the operator
    cannot take the call).  ``None`` otherwise: the caller goes on as usual."""
    torch = sys.modules.get("torch")
    first = next(iter(arguments.values()))
    if torch is None or not isinstance(first, torch.Tensor):
        return None
    function, _, kind, differentiable = _TRACED[name]
    if _autocast(torch, first):
        cast = _cast_half(torch, arguments)
        if cast is not None:
            return function(**cast)
    if not torch.compiler.is_compiling():
        return None
    out = _as_operator(torch, name, arguments, kind, differentiable)
    if out is None:  # the ordinary code, which PyTorch runs outside the graph
        return torch.compiler.disable(function)(**arguments)
    return out


def compiled_softmax(kind: str, x: Any, axis: Any, keepdims: bool = False) -> Any:
    """While PyTorch compiles: ``torch.<kind>`` of the tensor ``x`` (``softmax``,
    ``log_softmax`` or ``logsumexp``), the same function, which the compiler
    fuses with its neighbours.  ``None`` otherwise (and for a non-floating ``x``,
    whose error the ordinary code raises)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor) or not torch.compiler.is_compiling():
        return None
    if not x.is_floating_point():
        return None
    if kind == "logsumexp":
        return torch.logsumexp(x, axis, keepdims)
    return getattr(torch, kind)(x, axis)


def _autocast(torch: Any, x: Any) -> bool:
    if x.is_cpu:
        return torch.is_autocast_enabled("cpu")
    return torch.is_autocast_enabled(x.device.type)


def _cast_half(torch: Any, arguments: dict) -> dict | None:
    """``arguments`` with float16/bfloat16 tensors as float32, or ``None`` if none is."""
    half = (torch.float16, torch.bfloat16)
    if not any(isinstance(a, torch.Tensor) and a.dtype in half for a in arguments.values()):
        return None
    return {
        k: a.float() if isinstance(a, torch.Tensor) and a.dtype in half else a
        for k, a in arguments.items()
    }


def _as_operator(torch: Any, name: str, arguments: dict, kind: str, differentiable: tuple) -> Any:
    tensors = {k: a for k, a in arguments.items() if isinstance(a, torch.Tensor)}
    options = {k: a for k, a in arguments.items() if not isinstance(a, torch.Tensor)}
    wrt = []
    if torch.is_grad_enabled():
        for k, a in tensors.items():
            if a.requires_grad:
                if k not in differentiable:
                    return None  # a gradient the rule cannot give: the ordinary code
                wrt.append(k)
    if wrt and kind == "linear" and options.get("reduction") == "none":
        return None
    spec = _spec(tuple(tensors), options, tuple(wrt))
    if not spec:
        return None  # an option that is not plain data (a NumPy array, say)
    op = getattr(torch.ops.crossentropy, _define(name))
    return op(list(tensors.values()), spec)[0]


def constant_while_tracing(fn: Callable) -> Callable:
    """Mark ``fn`` as ``torch.compiler.assume_constant_result`` does, without importing
    PyTorch (the decorator only sets this attribute; a test checks that it still
    does): Dynamo then runs ``fn`` while tracing and keeps its result as a
    constant, instead of tracing into it (``_define`` registers an operator,
    which Dynamo cannot trace; ``_spec`` writes JSON)."""
    fn.__dict__["_dynamo_marked_constant"] = True
    return fn


@constant_while_tracing
def _spec(names: tuple, options: dict, wrt: tuple) -> str:
    """The non-tensor arguments as the operator's string, or ``""`` if one is not
    JSON (then the call stays out of the operator)."""
    try:
        return json.dumps({"tensors": names, "options": options, "wrt": wrt})
    except (TypeError, ValueError):
        return ""


def _tuples(a: Any) -> Any:
    return tuple(_tuples(v) for v in a) if isinstance(a, list) else a


def _decode(spec: str) -> tuple[list, dict, tuple]:
    data = json.loads(spec)
    return data["tensors"], {k: _tuples(v) for k, v in data["options"].items()}, tuple(data["wrt"])


# -- the operators ------------------------------------------------------------------


def _value_shape(kind: str, arguments: dict) -> tuple:
    """The loss's shape for these (fake or real) arguments."""
    if arguments.get("reduction", "mean") != "none":
        return ()
    x, target = arguments["input"], arguments["target"]
    if kind == "elements":
        return tuple(x.shape)
    if kind == "linear" and target.is_floating_point():  # class probabilities: no class axis
        shape, two_d = tuple(target.shape), arguments["linear_weight"].ndim == 2
        return shape[:-1] if two_d else shape[:1] + shape[2:]  # (..., V) or (N, V, e1, ...)
    if kind == "linear" or not x.is_floating_point() or not target.is_floating_point():
        return tuple(target.shape)
    if tuple(target.shape) != tuple(x.shape):  # an index target of a floating dtype: an error
        return tuple(target.shape)
    ax = class_axis(x.ndim, axis_or_dim(arguments.get("axis"), arguments.get("dim")))
    return tuple(x.shape[:ax]) + tuple(x.shape[ax + 1 :])


@constant_while_tracing
def _define(name: str) -> str:
    """Define ``crossentropy::<name>`` (once) and return ``name``."""
    if name in _OPS:
        return name
    import torch

    _, rule, kind, _ = _TRACED[name]

    def implementation(tensors: list, spec: str) -> list:
        names, options, wrt = _decode(spec)
        arguments = dict(options, **dict(zip(names, tensors)))
        with torch.no_grad():
            value, grads = rule(**arguments, wrt=wrt)
        out = [_fresh(torch, value, tensors)]
        out += [_fresh(torch, grads[k].to(arguments[k].dtype), tensors) for k in wrt]
        return out

    def fake(tensors: list, spec: str) -> list:
        names, options, wrt = _decode(spec)
        arguments = dict(options, **dict(zip(names, tensors)))
        x = arguments["input"]
        out = [x.new_empty(_value_shape(kind, arguments))]
        return out + [arguments[k].new_empty(arguments[k].shape) for k in wrt]

    op = torch.library.custom_op(
        f"{_NAMESPACE}::{name}",
        implementation,
        mutates_args=(),
        schema="(Tensor[] tensors, str spec) -> Tensor[]",
    )
    op.register_fake(fake)
    op.register_autograd(_backward(kind), setup_context=_setup_context)
    _OPS[name] = op
    _scale_operator()
    return name


def _fresh(torch: Any, t: Any, inputs: list) -> Any:
    """``t`` as a tensor that shares no memory with ``inputs`` (an operator's
    outputs must not alias its inputs)."""
    if not isinstance(t, torch.Tensor):
        return torch.as_tensor(t)
    ptr = t.untyped_storage().data_ptr()
    if any(ptr == a.untyped_storage().data_ptr() for a in inputs):
        return t.clone()
    return t


def _setup_context(ctx: Any, inputs: tuple, output: list) -> None:
    tensors, spec = inputs
    ctx.spec = spec
    ctx.count = len(tensors)
    ctx.save_for_backward(*output[1:])


def _backward(kind: str) -> Callable:
    def backward(ctx: Any, grads: list) -> tuple[list, None]:
        import torch

        names, options, wrt = _decode(ctx.spec)
        grad_value = grads[0]
        saved = dict(zip(wrt, ctx.saved_tensors))
        axis = -1
        if options.get("reduction", "mean") == "none" and kind == "classes":
            g = saved[wrt[0]]
            axis = class_axis(g.ndim, axis_or_dim(options.get("axis"), options.get("dim")))
        scale = torch.ops.crossentropy.scale_gradient
        out = [scale(saved[k], grad_value, axis) if k in saved else None for k in names]
        return out, None

    return backward


def _scale_operator() -> None:
    """``crossentropy::scale_gradient(g, grad_output, axis)``: ``g * grad_output``, with
    ``grad_output`` unsqueezed at ``axis`` when it has one dimension fewer."""
    if "scale_gradient" in _OPS:
        return
    import torch

    def scale(gradient: Any, grad_output: Any, axis: int) -> Any:
        if grad_output.ndim < gradient.ndim and grad_output.ndim > 0:
            grad_output = grad_output.unsqueeze(axis)
        return gradient * grad_output.to(gradient.dtype)

    op = torch.library.custom_op(
        f"{_NAMESPACE}::scale_gradient",
        scale,
        mutates_args=(),
        schema="(Tensor gradient, Tensor grad_output, int axis) -> Tensor",
    )
    op.register_fake(lambda gradient, grad_output, axis: torch.empty_like(gradient))
    _OPS["scale_gradient"] = op
