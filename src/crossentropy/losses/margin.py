"""Margin (hinge) losses: multi-class (Weston-Watkins ``multi_margin_loss``, Crammer-Singer
``multiclass_hinge_loss``) and binary (``hinge_loss``, ``squared_hinge_loss``)."""

from __future__ import annotations

from typing import Any

from .._core.mathops import one_hot, pick
from .._core.namespace import namespace, numeric_guard, restore, to_bool
from .._core.prepared import finish_pair, prepare_class_call, prepare_pair_call, to_caller_layout
from .._core.reduction import grad_scale, reduce
from .._core.rules import defines_grad
from ..jax_rules import jax_rule
from ..kernels.custom_ops import torch_call, traced_as

__all__ = ["hinge_loss", "multi_margin_loss", "multiclass_hinge_loss", "squared_hinge_loss"]


def multi_margin_loss(
    input: Any,
    target: Any,
    p: int = 1,
    margin: float = 1.0,
    weight: Any = None,
    reduction: str = "mean",
) -> Any:
    r"""Multi-class hinge loss (the SVM loss of Weston and Watkins).

    Parameters
    ----------
    input : array_like, floating, shape (N, C) or (C,)
        Scores.
    target : array_like, integer, shape (N,) or () (or (1,) for (C,) input, a batch of one)
        Class indices in ``[0, C)``.
    p : {1, 2}, default 1
        1 for the hinge, 2 for the squared hinge.
    margin : float, default 1.0
    weight : array_like, shape (C,), optional
        Weight of each class, applied to the samples of that (target) class.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by N, whatever the weights.

    Returns
    -------
    array
        Scalar, or shape (N,) for ``'none'``; ``input``'s dtype.

    Raises
    ------
    TargetIndexError
        A class index outside ``[0, C)``.
    ValueError
        ``p`` not 1 or 2, input of more than 2 dimensions, batch-size mismatch,
        wrong ``weight`` length, invalid ``reduction``.

    Notes
    -----
    .. math:: \ell_n = \frac{w_{y_n}}{C} \sum_{i \ne y_n}
              \max(0,\ \text{margin} - x_{n,y_n} + x_{n,i})^p

    (the weight multiplies after the power, as PyTorch computes it).  An empty
    batch gives NaN for ``'mean'`` and 0 for ``'sum'``.  PyTorch:
    ``torch.nn.functional.multi_margin_loss``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> float(ce.multi_margin_loss([[0.1, 0.2, 0.4, 0.8]], [3]))   # (0.3+0.4+0.6)/4
    0.325
    """
    routed = torch_call("multi_margin_loss", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    return _multi_margin_rule(input, target, p, margin, weight, reduction)[0]


@jax_rule
@traced_as(multi_margin_loss, "classes")
@defines_grad(multi_margin_loss, "input")
@numeric_guard
def _multi_margin_rule(
    input: Any,
    target: Any,
    p: int = 1,
    margin: float = 1.0,
    weight: Any = None,
    reduction: str = "mean",
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    xp, (input, target) = namespace(input, target, names=("input", "target"), required=2)
    single = input.ndim == 1 and tuple(target.shape) == (1,)
    if single:  # (C,) scores with a (1,) target: a batch of one, as PyTorch takes it
        input = xp.reshape(input, (1, input.shape[0]))
    b = prepare_class_call(input, target, weight, reduction=reduction)
    xp, x, C = b.xp, b.x, b.n_classes
    if x.ndim > 2:
        raise ValueError(
            f"multi_margin_loss expects input of shape (N, C) or (C,), got {tuple(input.shape)}"
        )
    other = 1 - one_hot(xp, b.index, C, x.dtype)  # 0 at the target class
    z = margin - pick(xp, x, b.index)[..., None] + x
    active = xp.where(z > 0, other, xp.zeros_like(other))
    h = active * (z if p == 1 else z * z)
    loss = b.w_t * xp.sum(h, axis=-1) / C
    value = restore(xp, reduce(xp, loss, b.reduction), b.dtype)
    grads = {}
    if "input" in wrt:
        s = _seed(xp, loss, b.reduction, cotangent)
        dz = active if p == 1 else 2 * z * active  # dl/dx_i for i != y, before w/C
        g = dz - xp.sum(dz, axis=-1, keepdims=True) * (1 - other)
        g = to_caller_layout(b, (s * b.w_t / C)[..., None] * g)
        grads["input"] = xp.reshape(g, (C,)) if single else g
    return value, grads


def _seed(xp: Any, loss: Any, reduction: str, cotangent: Any) -> Any:
    """What each row's gradient is multiplied by: the reduction's factor and the
    cotangent (if any)."""
    s = grad_scale(xp, loss, reduction)
    if cotangent is not None:
        s = s * xp.astype(cotangent, loss.dtype)
    return s


def hinge_loss(input: Any, target: Any, margin: float = 1.0, reduction: str = "mean") -> Any:
    r"""Binary hinge loss :math:`\max(0, \text{margin} - y\,h)` with labels :math:`y \in \{-1, +1\}`.

    The classic margin loss of support vector machines, the third common
    classification loss beside MSE and cross-entropy; PyTorch has no function
    of this name.

    Parameters
    ----------
    input : array_like, floating, any shape
        Scores :math:`h_\theta(x)` (positive means class +1).
    target : array_like, same shape as ``input``
        Labels, each -1 or +1 (integer or floating dtype).
    margin : float, default 1.0
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'sum'`` gives the SVM objective's :math:`\sum_i \max(0, 1 - y_i h_\theta(x_i))`.

    Returns
    -------
    array
        Scalar, or ``input``'s shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        A label other than -1 or +1 (0/1 labels must be mapped with ``2*y - 1``),
        shape mismatch, invalid ``reduction``.

    Notes
    -----
    .. math:: \ell = \max(0,\ m - y h), \qquad
              \partial\ell/\partial h = -y\,[m - y h > 0]

    PyTorch equivalent: ``torch.clamp(margin - target * input, min=0).mean()``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> ce.hinge_loss([2.0, 0.5, -1.0], [1, 1, 1], reduction="none")
    array([0. , 0.5, 2. ])
    """
    routed = torch_call("hinge_loss", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    return _hinge_rule(input, target, margin, reduction)[0]


@jax_rule
@traced_as(hinge_loss, "elements")
@defines_grad(hinge_loss, "input")
@numeric_guard
def _hinge_rule(
    input: Any,
    target: Any,
    margin: float = 1.0,
    reduction: str = "mean",
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    pr, z, active = _margins("hinge_loss", input, target, margin, reduction)
    xp, y = pr.xp, pr.t
    loss = xp.where(active, z, xp.zeros_like(z))
    return finish_pair(
        pr,
        loss,
        wrt,
        {"input": lambda: xp.where(active, -y, xp.zeros_like(y))},
        cotangent=cotangent,
    )


def _margins(fn: str, input: Any, target: Any, margin: float, reduction: str) -> tuple:
    """``(call, z, active)``: the validated call, ``margin - y * x`` and ``z > 0``."""
    pr = prepare_pair_call(fn, input, target, reduction, float_target=False)
    xp, x, y = pr.xp, pr.x, pr.t
    bad = (y != 1) & (y != -1)
    if to_bool(xp.any(bad)):
        raise ValueError(
            f"{fn}: target must hold labels -1 or +1, found {float(y[bad][0])!r} "
            f"(map 0/1 labels with 2 * y - 1)"
        )
    z = margin - y * x
    return pr, z, z > 0


def squared_hinge_loss(
    input: Any, target: Any, margin: float = 1.0, reduction: str = "mean"
) -> Any:
    r"""Squared binary hinge loss :math:`\max(0, \text{margin} - y\,h)^2`, :math:`y \in \{-1, +1\}`.

    The L2-SVM loss: differentiable everywhere, and it punishes large
    violations more than :func:`hinge_loss`.

    Parameters
    ----------
    input : array_like, floating, any shape
        Scores (positive means class +1).
    target : array_like, same shape as ``input``
        Labels, each -1 or +1 (integer or floating dtype).
    margin : float, default 1.0
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Returns
    -------
    array
        Scalar, or ``input``'s shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        A label other than -1 or +1, shape mismatch, invalid ``reduction``.

    Notes
    -----
    .. math:: \ell = \max(0,\ m - y h)^2, \qquad
              \partial\ell/\partial h = -2 y \max(0,\ m - y h)

    Keras: ``keras.losses.squared_hinge(y_true, y_pred)`` (which also maps
    0/1 labels and averages over the last axis); PyTorch:
    ``torch.clamp(margin - target * input, min=0).pow(2).mean()``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> ce.squared_hinge_loss([2.0, 0.5, -1.0], [1, 1, 1], reduction="none")
    array([0.  , 0.25, 4.  ])
    """
    return _squared_hinge_rule(input, target, margin, reduction)[0]


@jax_rule
@defines_grad(squared_hinge_loss, "input")
@numeric_guard
def _squared_hinge_rule(
    input: Any,
    target: Any,
    margin: float = 1.0,
    reduction: str = "mean",
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    pr, z, active = _margins("squared_hinge_loss", input, target, margin, reduction)
    xp, y = pr.xp, pr.t
    h = xp.where(active, z, xp.zeros_like(z))
    return finish_pair(pr, h * h, wrt, {"input": lambda: -2 * y * h}, cotangent=cotangent)


def multiclass_hinge_loss(
    input: Any,
    target: Any,
    p: int = 1,
    margin: float = 1.0,
    weight: Any = None,
    reduction: str = "mean",
    *,
    axis: int | None = None,
) -> Any:
    r"""Crammer-Singer multi-class hinge: the margin to the best wrong class.

    Unlike :func:`multi_margin_loss` (Weston-Watkins), which sums a hinge over
    every wrong class, this takes only the highest-scoring wrong class.

    Parameters
    ----------
    input : array_like, floating, shape (N, C), (C,) or (N, C, d1, ..., dK)
        Scores; class axis 1 (0 for ``(C,)``) unless ``axis`` is given.
    target : array_like, integer, ``input``'s shape without the class axis
        Class indices in ``[0, C)``.
    p : {1, 2}, default 1
        1 for the hinge, 2 for its square.
    margin : float, default 1.0
    weight : array_like, shape (C,), optional
        Weight of each class, applied to the samples of that (target) class.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by the number of rows, whatever the weights.
    axis : int, optional, keyword-only
        The class axis.

    Returns
    -------
    array
        Scalar, or the target's shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    TargetIndexError
        A class index outside ``[0, C)``.
    ValueError
        ``p`` not 1 or 2, batch-size mismatch, wrong ``weight`` length,
        invalid ``reduction``.

    Notes
    -----
    .. math:: \ell_n = w_{y_n} \max\big(0,\ \text{margin}
              + \max_{j \ne y_n} x_{n,j} - x_{n,y_n}\big)^p

    The gradient is :math:`\pm` (times :math:`p z^{p-1}`) at the best wrong
    class and at the target.  scikit-learn's multi-class
    ``sklearn.metrics.hinge_loss`` and optax's
    ``optax.losses.multiclass_hinge_loss`` are this loss with ``p=1``,
    ``margin=1``; Keras's ``categorical_hinge`` is it with the wrong
    classes' best score floored at 0.

    Examples
    --------
    Scores ``[0.1, 0.2, 0.4, 0.8]``, target 3: the best wrong class scores
    0.4, so the loss is :math:`1 + 0.4 - 0.8`:

    >>> import crossentropy as ce
    >>> round(float(ce.multiclass_hinge_loss([[0.1, 0.2, 0.4, 0.8]], [3])), 4)
    0.6
    """
    return _multiclass_hinge_rule(input, target, p, margin, weight, reduction, axis=axis)[0]


@jax_rule
@defines_grad(multiclass_hinge_loss, "input")
@numeric_guard
def _multiclass_hinge_rule(
    input: Any,
    target: Any,
    p: int = 1,
    margin: float = 1.0,
    weight: Any = None,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    b = prepare_class_call(input, target, weight, reduction=reduction, axis=axis)
    xp, x, C = b.xp, b.x, b.n_classes
    hot = one_hot(xp, b.index, C, x.dtype)
    wrong = xp.where(hot > 0, xp.full_like(x, -float("inf")), x)
    z = margin + xp.max(wrong, axis=-1) - pick(xp, x, b.index)
    h = xp.where(z > 0, z, xp.zeros_like(z))
    loss = b.w_t * (h if p == 1 else h * h)
    value = restore(xp, reduce(xp, loss, b.reduction), b.dtype)
    grads = {}
    if "input" in wrt:
        dz = xp.astype(z > 0, x.dtype) if p == 1 else 2 * h
        best = one_hot(xp, xp.argmax(wrong, axis=-1), C, x.dtype)
        s = _seed(xp, loss, b.reduction, cotangent)
        grads["input"] = to_caller_layout(b, (s * b.w_t * dz)[..., None] * (best - hot))
    return value, grads
