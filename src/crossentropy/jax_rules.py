"""The registered gradient rules as JAX's derivatives: ``grad``, ``jit``, ``vmap`` use them.

A public function computes its value as ``rule(...)[0]`` (its registered rule,
:mod:`crossentropy._core.rules`, asked for no gradient).  A rule decorated
with :func:`jax_rule` runs unchanged on NumPy, PyTorch and every other
library; when one of its arguments is a JAX array (a tracer inside
``jax.jit``, ``jax.grad`` or ``jax.vmap`` included), that value-only call goes
through a ``jax.custom_jvp`` built around the rule:

* the primal is ``rule(..., wrt=())[0]``, the function's own value;
* the JVP calls ``rule(..., wrt=perturbed)`` once, which returns the value and
  the gradient ``g`` of each perturbed argument ``a`` in the same pass, and
  returns the tangent :math:`\\sum \\langle g, \\dot a \\rangle`, summed over the
  elements that make up each value (all of them for ``'mean'`` and ``'sum'``,
  the class axis for ``reduction='none'``, nothing for element-wise losses).

``jax.grad`` transposes that linear tangent into ``cotangent * g``: the
gradient JAX returns is the rule's (softmax minus one-hot for
``cross_entropy``, computed by the fused CPU kernel where it applies), not
JAX's derivative of the forward's operations; under ``jit`` a cotangent of 1
costs nothing.  Which arguments are perturbed is known exactly
(``symbolic_zeros=True``), so the rule computes only the gradients asked for.

Why ``custom_jvp`` rather than ``custom_vjp``: reverse mode costs the same (JAX
linearizes the JVP and transposes it), while forward mode keeps working:
``jax.jvp``, ``jax.jacfwd`` and ``jax.hessian`` (``jacfwd`` of ``jacrev``),
which differentiate the rule's own gradient computation once more.  A
``custom_vjp`` function cannot be differentiated in forward mode at all.

Three cases fall back to JAX differentiating the forward's operations (exact,
at the speed of JAX's own autodiff): an argument the rule does not
differentiate (class ``weight``, ``pos_weight``, hinge labels); a value that
is not one real array (``logsumexp(..., return_sign=True)``, complex input);
and per-row values (``reduction='none'``, the :mod:`~crossentropy.info`
functions) with respect to an argument that every row shares (a distribution
broadcast against a batch), whose per-row Jacobian the rule (a gradient of the
sum) cannot give.

JAX is imported only when a JAX array arrives: ``import crossentropy`` does not
import it.  Integers keep JAX's width: class indices are read in the library's
default index dtype (int32 unless ``jax_enable_x64``), so no call warns about
a truncated int64.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from ._core.aliases import axis_or_dim
from ._core.mathops import normalize_axes
from ._core.rules import forward_of
from ._core.validate import class_axis

__all__ = ["jax_rule"]

_TRAILING = object()  # no ``axis`` argument: the values are over the trailing axes
_CLASS_AXIS = object()  # PyTorch's: 1, or 0 for one row


def jax_rule(rule: Callable | None = None, *, last_axis: bool = False) -> Any:
    """Decorator, above ``@defines_grad``: a value-only call of the rule
    (``wrt=()``, what the public function makes) with a JAX array among its
    arguments goes through a ``jax.custom_jvp`` whose JVP is the rule.

    Calls that ask for gradients (``crossentropy.value_and_grad``) and calls
    without JAX arrays run the rule itself.  ``axis=None`` (and ``dim=None``)
    means PyTorch's class axis (1, or 0 for one row), or the last axis with
    ``last_axis=True`` (``logsumexp``, the ``info`` functions).
    """
    if rule is None:
        return functools.partial(jax_rule, last_axis=last_axis)
    forward, registered = forward_of(rule)
    signature = inspect.signature(rule)  # the function's parameters, and ``wrt``

    @functools.wraps(rule)
    def dispatch(*args: Any, wrt: tuple[str, ...] = (), **kwargs: Any) -> tuple[Any, dict]:
        if not wrt and (
            any(map(array_api_compat.is_jax_array, args))
            or any(map(array_api_compat.is_jax_array, kwargs.values()))
        ):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            bound.arguments.pop("wrt", None)
            call = _Call(forward.__name__, rule, registered.differentiable, bound, last_axis)
            return call.value(), {}
        return rule(*args, wrt=wrt, **kwargs)

    return dispatch


class _Call:
    """One call of a rule's function as a ``jax.custom_jvp`` of its JAX arrays
    (the other arguments, options and NumPy arrays alike, are constants of it)."""

    def __init__(
        self,
        name: str,
        rule: Callable,
        differentiable: tuple,
        bound: inspect.BoundArguments,
        last_axis: bool,
    ) -> None:
        self.name, self.rule, self.differentiable, self.bound = name, rule, differentiable, bound
        self.names = [n for n, v in bound.arguments.items() if array_api_compat.is_jax_array(v)]
        self.last_axis = last_axis

    def value(self) -> Any:
        """The function's value, as JAX's transformations see it."""
        import jax

        def value(*arrays: Any) -> Any:
            return self.evaluate(arrays, ())[0]

        def rule(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
            return self.jvp(primals, tangents)

        value.__name__ = value.__qualname__ = self.name  # as make_jaxpr shows them
        rule.__name__ = rule.__qualname__ = f"{self.name}_rule"
        wrapped = jax.custom_jvp(value)
        wrapped.defjvp(rule, symbolic_zeros=True)
        return wrapped(*(self.bound.arguments[n] for n in self.names))

    def evaluate(self, arrays: tuple, wrt: tuple[str, ...]) -> tuple[Any, dict]:
        """The rule on these arrays in place of the caller's JAX arrays."""
        arguments = dict(self.bound.arguments)
        arguments.update(zip(self.names, arrays))
        call = inspect.BoundArguments(self.bound.signature, arguments)
        return self.rule(*call.args, wrt=wrt, **call.kwargs)

    def jvp(self, primals: tuple, tangents: tuple) -> tuple[Any, Any]:
        """The rule's value and ``sum(gradient * tangent)`` per value."""
        from jax.custom_derivatives import SymbolicZero

        perturbed = {n: t for n, t in zip(self.names, tangents) if not isinstance(t, SymbolicZero)}
        if all(n in self.differentiable for n in perturbed):
            out, grads = self.evaluate(primals, tuple(perturbed))
            if not _real_array(out):  # (value, sign) of logsumexp(return_sign=True), complex
                return _forward_jvp(
                    lambda *a: self.evaluate(a, ())[0], self.names, primals, perturbed
                )
            layout = _Layout(
                self.bound.arguments, self.names, primals, self.differentiable, self.last_axis
            )
            tangent = layout.tangent(out, grads, perturbed)
            if tangent is not None:
                return out, tangent
        return _forward_jvp(lambda *a: self.evaluate(a, ())[0], self.names, primals, perturbed)


def _real_array(value: Any) -> bool:
    import jax.numpy as jnp

    return hasattr(value, "dtype") and jnp.issubdtype(value.dtype, jnp.floating)


def _forward_jvp(value: Callable, names: list, primals: tuple, perturbed: dict) -> tuple:
    """JAX's JVP of the forward with respect to the perturbed arguments."""
    import jax

    index = [names.index(n) for n in perturbed]

    def of_perturbed(*moving: Any) -> Any:
        arrays = list(primals)
        for i, a in zip(index, moving):
            arrays[i] = a
        return value(*arrays)

    return jax.jvp(of_perturbed, tuple(primals[i] for i in index), tuple(perturbed.values()))


class _Layout:
    """Which elements of each argument make up each value of a call."""

    def __init__(
        self, arguments: dict, names: list, primals: tuple, differentiable: tuple, last_axis: bool
    ) -> None:
        self.axis = _TRAILING  # no axis argument: the values are over the trailing axes
        if "axis" in arguments or "dim" in arguments:
            self.axis = axis_or_dim(arguments.get("axis"), arguments.get("dim"))
            if self.axis is None:
                self.axis = -1 if last_axis else _CLASS_AXIS
        self.shapes = {n: tuple(p.shape) for n, p in zip(names, primals)}
        moving = [s for n, s in self.shapes.items() if n in differentiable]
        try:  # the shape of the values before any reduction
            self.full = tuple(np.broadcast_shapes(*moving))
        except ValueError:  # arrays that do not broadcast together
            self.full = None

    def summed_axes(self, name: str, value_shape: tuple) -> tuple[int, ...] | None:
        """The axes of argument ``name`` summed into each value, or ``None``
        when a value depends on more than its own slice of it."""
        shape = self.shapes[name]
        if value_shape == ():
            return tuple(range(len(shape)))
        if shape != self.full:
            return None
        if len(value_shape) == len(shape):  # element-wise, or keepdims
            axes = tuple(i for i, (a, b) in enumerate(zip(shape, value_shape)) if a != b)
            return axes if all(value_shape[i] == 1 for i in axes) else None
        if self.axis is _TRAILING:
            axes = tuple(range(len(value_shape), len(shape)))
        elif self.axis is _CLASS_AXIS:
            axes = (class_axis(len(shape), None),)
        else:
            axes = normalize_axes(self.axis, len(shape))
        kept = tuple(s for i, s in enumerate(shape) if i not in axes)
        return axes if kept == value_shape else None

    def tangent(self, out: Any, grads: dict, perturbed: dict) -> Any:
        """The output tangent, each gradient times its tangent summed per value,
        or ``None`` if a value is not the sum over a slice of some argument."""
        import jax.numpy as jnp

        terms = []
        for name, t in perturbed.items():
            axes = self.summed_axes(name, tuple(out.shape))
            g = grads[name]
            if axes is None or tuple(g.shape) != tuple(t.shape):
                return None
            term = jnp.sum(g.astype(t.dtype) * t, axis=axes, keepdims=out.ndim == t.ndim)
            terms.append(jnp.reshape(term, out.shape).astype(out.dtype))
        return sum(terms[1:], terms[0]) if terms else jnp.zeros(out.shape, out.dtype)
