"""Analytic gradients without an autograd framework: ``value_and_grad`` and ``grad``.

Each differentiable function registers a *rule* beside its forward code
(:func:`crossentropy._core.rules.defines_grad`).  A rule takes the function's
own arguments plus a keyword-only ``wrt`` (the names of the arguments to
differentiate, empty for the value alone) and returns ``(value, {name:
gradient})`` computed in one pass; the public function is ``rule(...)[0]``.
Nothing here differentiates numerically.

PyTorch users do not need this module: the functions are written with
differentiable array operations, so ``loss.backward()`` works on tensors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ._core.rules import differentiable_functions, rule_of

__all__ = ["grad", "value_and_grad"]


def _argnames(fn: Callable, argnums: int | str | Sequence[int | str]) -> tuple[str, ...]:
    params = list(inspect.signature(fn).parameters.values())
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    every = [p.name for p in params]
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


def value_and_grad(
    fn: Callable, argnums: int | Sequence[int] = 0
) -> Callable[..., tuple[Any, Any]]:
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
        ``hinge_loss``, ``squared_hinge_loss``), ``logsumexp``, and the
        :mod:`crossentropy.info` functions ``entropy``, ``cross_entropy`` and
        ``kl_divergence``.
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
        ``argnums`` is a sequence).  For ``reduction='none'`` (and for functions
        returning one value per row) the gradient is that of the *sum* of the
        values.

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
    registered = rule_of(fn)
    if registered is None:
        raise ValueError(
            f"{getattr(fn, '__name__', fn)!r} has no gradient rule; differentiable "
            f"functions: {', '.join(differentiable_functions())}"
        )
    rule, differentiable = registered.rule, registered.differentiable
    names = _argnames(fn, argnums)
    for name in names:
        if name not in differentiable:
            raise ValueError(
                f"{fn.__name__} is not differentiable with respect to its argument "
                f"{name!r}; differentiable arguments: {', '.join(differentiable)}"
            )

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        value, grads = rule(*args, wrt=names, **kwargs)
        if isinstance(argnums, (int, str)):
            return value, grads[names[0]]
        return value, tuple(grads[n] for n in names)

    return wrapped


def grad(fn: Callable, argnums: int | str | Sequence[int | str] = 0) -> Callable[..., Any]:
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
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return vg(*args, **kwargs)[1]

    return wrapped
