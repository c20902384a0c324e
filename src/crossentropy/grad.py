"""Analytic gradients without an autograd framework: ``value_and_grad``, ``grad`` and ``vjp``.

Each differentiable function registers a *rule* beside its forward code
(:func:`crossentropy._core.rules.defines_grad`).  A rule takes the function's
own arguments plus the keyword-only ``wrt`` (the names of the arguments to
differentiate, empty for the value alone) and ``cotangent`` (an array of the
value's shape, or ``None`` for ones) and returns ``(value, {name: gradient of
sum(cotangent * value)})`` computed in one pass; the public function is
``rule(...)[0]``.  Nothing here differentiates numerically.

PyTorch users do not need this module: the functions are written with
differentiable array operations, so ``loss.backward()`` works on tensors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from ._core.namespace import namespace
from ._core.rules import Rule, differentiable_functions, rule_of
from ._core.types import ArrayLike, ArrayT

__all__ = ["grad", "value_and_grad", "vjp"]

P = ParamSpec("P")
R = TypeVar("R")
ArgNum = int | str
"""One argument: its position or its name."""
ArgNums = tuple[ArgNum, ...] | list[ArgNum]
"""Several arguments: the gradient is a tuple."""


def _argnames(fn: Callable, argnums: ArgNum | ArgNums) -> tuple[str, ...]:
    params = list(inspect.signature(fn).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    every = [p.name for p in params]
    nums: tuple[ArgNum, ...]
    if isinstance(argnums, (int, str)):
        nums = (argnums,)
    elif isinstance(argnums, (tuple, list)):
        nums = tuple(argnums)
    else:
        raise ValueError(
            f"argnums must be an int, an argument name, or a tuple of them, got {argnums!r}"
        )
    if not nums:
        raise ValueError("argnums must name at least one argument")
    names = []
    for n in nums:
        if isinstance(n, str):
            if n not in every:
                raise ValueError(f"argnums={argnums!r}: {fn.__name__} has no argument {n!r}")
            names.append(n)
        elif (
            isinstance(n, int)
            and not isinstance(n, bool)
            and -len(positional) <= n < len(positional)
        ):
            names.append(positional[n])
        else:
            raise ValueError(
                f"argnums={argnums!r}: {fn.__name__} has {len(positional)} positional "
                f"arguments {tuple(positional)}"
            )
    return tuple(names)


def _checked_rule(fn: Callable, argnums: Any) -> tuple[Callable, tuple[str, ...]]:
    """``fn``'s rule and the names of the arguments ``argnums`` picks, or ``ValueError``."""
    registered: Rule | None = rule_of(fn)
    if registered is None:
        raise ValueError(
            f"{getattr(fn, '__name__', fn)!r} has no gradient rule; differentiable "
            f"functions: {', '.join(differentiable_functions())}"
        )
    names = _argnames(fn, argnums)
    for name in names:
        if name not in registered.differentiable:
            raise ValueError(
                f"{fn.__name__} is not differentiable with respect to its argument "
                f"{name!r}; differentiable arguments: {', '.join(registered.differentiable)}"
            )
    return registered.rule, names


@overload
def value_and_grad(fn: Callable[P, R], argnums: ArgNum = 0) -> Callable[P, tuple[R, R]]: ...
@overload
def value_and_grad(
    fn: Callable[P, R], argnums: ArgNums
) -> Callable[P, tuple[R, tuple[R, ...]]]: ...
def value_and_grad(fn: Callable[P, R], argnums: ArgNum | ArgNums = 0) -> Callable[P, tuple[R, Any]]:
    """Return a function computing ``fn``'s value and its analytic gradient.

    Parameters
    ----------
    fn : callable
        A function of this library that has a gradient rule: every loss in
        :mod:`crossentropy` (``cross_entropy``, ``nll_loss``, ``binary_cross_entropy``,
        ``binary_cross_entropy_with_logits``, ``sigmoid_focal_loss``,
        ``focal_cross_entropy``, ``poly1_cross_entropy``,
        ``generalized_cross_entropy``, ``kl_div``, ``generalized_kl_div``,
        ``mse_loss``, ``multi_margin_loss``, ``multiclass_hinge_loss``,
        ``hinge_loss``, ``squared_hinge_loss``, ``linear_cross_entropy``),
        ``logsumexp``, ``softmax``, ``log_softmax``, ``sigmoid``,
        ``log_sigmoid``, and every :mod:`crossentropy.info` function.
    argnums : int, str or sequence of them, default 0
        Positional index (or indices) of the argument(s) to differentiate, as in
        ``jax.value_and_grad``; 0 is ``input``, 1 is ``target`` where the
        target is continuous (probability targets, BCE, MSE, KL).  An argument
        may also be named, which reaches keyword-only ones (``"linear_bias"``).

    Returns
    -------
    callable
        Takes ``fn``'s own arguments and keywords and returns
        ``(value, gradient)``: ``value`` is exactly ``fn(...)``; ``gradient`` has
        the shape of the differentiated argument (a tuple of them when
        ``argnums`` is a sequence).  For a value that is not a scalar
        (``reduction='none'``, ``softmax``, one value per row) the gradient is
        that of the *sum* of the values; :func:`vjp` takes any other weighting
        (a cotangent).

    Raises
    ------
    ValueError
        If ``fn`` has no gradient rule, or an argument in ``argnums`` is not
        differentiable (class indices, weights).

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> loss, g = ce.value_and_grad(ce.cross_entropy)(np.array([[2.0, 1.0, 0.1]]), np.array([0]))
    >>> round(float(loss), 4)
    0.417
    >>> g.round(4)                                  # softmax - one-hot
    array([[-0.341 ,  0.2424,  0.0986]])
    """
    rule, names = _checked_rule(fn, argnums)

    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> tuple[R, Any]:
        value, grads = rule(*args, wrt=names, **kwargs)
        if isinstance(argnums, (int, str)):
            return value, grads[names[0]]
        return value, tuple(grads[n] for n in names)

    return wrapped


@overload
def grad(fn: Callable[P, R], argnums: ArgNum = 0) -> Callable[P, R]: ...
@overload
def grad(fn: Callable[P, R], argnums: ArgNums) -> Callable[P, tuple[R, ...]]: ...
def grad(fn: Callable[P, R], argnums: ArgNum | ArgNums = 0) -> Callable[P, Any]:
    """Like :func:`value_and_grad` but return only the gradient.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> ce.grad(ce.mse_loss)(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
    array([1., 2.])
    """
    vg = value_and_grad(fn, argnums)

    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> Any:
        return vg(*args, **kwargs)[1]

    return wrapped


@overload
def vjp(
    fn: Callable[..., Any],
    input: ArrayT | ArrayLike,
    /,
    *args: Any,
    argnums: ArgNum = 0,
    **kwargs: Any,
) -> tuple[ArrayT, Callable[[Any], ArrayT]]: ...
@overload
def vjp(
    fn: Callable[..., Any],
    input: ArrayT | ArrayLike,
    /,
    *args: Any,
    argnums: ArgNums,
    **kwargs: Any,
) -> tuple[ArrayT, Callable[[Any], tuple[ArrayT, ...]]]: ...
@overload
def vjp(
    fn: Callable[..., Any], /, *args: Any, argnums: ArgNum | ArgNums = 0, **kwargs: Any
) -> tuple[Any, Callable[[Any], Any]]: ...
def vjp(fn: Callable, /, *args: Any, argnums: ArgNum | ArgNums = 0, **kwargs: Any
        ) -> tuple[Any, Callable[[Any], Any]]:  # fmt: skip
    r"""The value of ``fn(*args, **kwargs)`` and its vector-Jacobian product function.

    As ``jax.vjp``: for a value :math:`y = f(x)` of any shape, ``vjp_fn(v)``
    returns :math:`v^\top \partial y / \partial x`, the gradient of
    ``sum(v * y)`` with respect to the argument(s) ``argnums`` picks.  This is
    what a non-scalar function (``softmax``, a loss with ``reduction='none'``,
    one value per row) contributes to the gradient of a larger computation:
    ``v`` is the gradient of that computation with respect to ``y``.

    Parameters
    ----------
    fn : callable
        A function with a gradient rule (see :func:`value_and_grad`).
    *args, **kwargs
        ``fn``'s own arguments.
    argnums : int, str or sequence of them, default 0, keyword-only
        The argument(s) to differentiate, as for :func:`value_and_grad`.

    Returns
    -------
    (value, vjp_fn)
        ``value`` is exactly ``fn(*args, **kwargs)``; ``vjp_fn(cotangent)``
        takes an array of ``value``'s shape (and array library, or NumPy data)
        and returns the gradient, of the differentiated argument's shape (a
        tuple of them when ``argnums`` is a sequence).  Each call of
        ``vjp_fn`` evaluates the rule again: the forward is not kept.

    Raises
    ------
    ValueError
        As :func:`value_and_grad`; ``vjp_fn`` raises it for a cotangent of
        another shape than ``value``.

    See Also
    --------
    value_and_grad : the same with a cotangent of ones, in one call.

    Notes
    -----
    For ``softmax`` :math:`s`, the product is :math:`s \odot (v - \langle v,
    s\rangle)`; for ``log_softmax``, :math:`v - s \sum_i v_i`; for an
    elementwise function, :math:`v \odot f'(x)`; for a function with one
    value per row, each row's gradient times its :math:`v`.  PyTorch:
    ``torch.autograd.grad(y, x, grad_outputs=v)``; JAX: ``jax.vjp(f, x)[1](v)``.

    Examples
    --------
    The softmax of three logits, and the gradient of its second entry
    (:math:`v = e_2`): :math:`s_2 (e_2 - s)`:

    >>> import numpy as np
    >>> import crossentropy as ce
    >>> s, vjp_fn = ce.vjp(ce.softmax, np.array([1.0, 2.0, 3.0]))
    >>> s.round(4)
    array([0.09  , 0.2447, 0.6652])
    >>> vjp_fn(np.array([0.0, 1.0, 0.0])).round(4)
    array([-0.022 ,  0.1848, -0.1628])
    """
    rule, names = _checked_rule(fn, argnums)
    value = rule(*args, wrt=(), **kwargs)[0]
    if isinstance(value, tuple):
        raise ValueError(
            f"vjp needs a function with one array as its value; {fn.__name__} returned "
            f"{len(value)} (logsumexp with return_sign=True, say)"
        )
    if not hasattr(value, "shape"):  # linear_cross_entropy_stats's TokenStats, say
        raise ValueError(
            f"vjp needs a function with one array as its value; {fn.__name__} returned a "
            f"{type(value).__name__}"
        )

    def vjp_fn(cotangent: Any) -> Any:
        _, (_, ct) = namespace(value, cotangent, names=("value", "cotangent"), required=2)
        if tuple(ct.shape) != tuple(value.shape):
            raise ValueError(
                f"cotangent must have the value's shape {tuple(value.shape)}, got {tuple(ct.shape)}"
            )
        grads = rule(*args, wrt=names, cotangent=ct, **kwargs)[1]
        if isinstance(argnums, (int, str)):
            return grads[names[0]]
        return tuple(grads[n] for n in names)

    return value, vjp_fn
