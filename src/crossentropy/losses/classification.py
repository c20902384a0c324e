"""Multi-class losses on logits and log-probabilities: ``cross_entropy`` and ``nll_loss``.

Both follow ``torch.nn.functional`` exactly: class axis 1 for batched input
``(N, C, d1, ..., dK)`` and 0 for unbatched ``(C,)`` input (overridable with
``axis=``), per-class ``weight``, ``ignore_index``, and PyTorch's weighted mean
(divide by the sum of the weights of the counted targets).

Internally the class axis is moved last (a view, no copy); the forward and the
analytic backward share one preparation step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .._namespace import device, namespace, numeric_guard, restore, upcast
from .._reduction import check_reduction, reduce, seed
from .._validate import (
    check_batch,
    check_floating,
    check_index_target,
    check_integer_target,
    check_label_smoothing,
    check_vector,
    check_z_loss_softcap,
    class_axis,
    counted_mask,
    warn_if_probabilities,
)
from ..grad import defines_grad
from ..kernels._cross_entropy import cross_entropy_batch, cross_entropy_host, host_views
from ..special import _shifted

__all__ = ["cross_entropy", "nll_loss"]


@dataclass
class _Batch:
    """A validated classification call, class axis last, in compute dtype.

    The per-row arrays of class-index targets (:attr:`valid`, :attr:`index`,
    :attr:`w_t`) are made on first use: the fused kernel reads the caller's
    ``target`` itself, so its calls allocate none of them.
    """

    xp: Any
    x: Any  # (..., C) view of input, compute dtype
    axis: int  # class axis of the caller's input
    dtype: Any  # caller's input dtype
    n_classes: int
    weight: Any  # (C,) compute dtype, or None
    reduction: str
    target: Any  # (...) the caller's class indices, checked; or (..., C) probabilities
    probs: bool  # probability targets
    ignore_index: int | None = None
    class_weight: Any = None  # weight over every class (weight's whole vocabulary if sharded)

    @functools.cached_property
    def valid(self) -> Any:
        """(...) bool mask of the counted targets (index targets only)."""
        return counted_mask(self.xp, self.target, self.ignore_index)

    @functools.cached_property
    def index(self) -> Any:
        """(...) int64 class indices, ignored entries replaced by 0."""
        xp, t = self.xp, self.target
        return xp.where(self.valid, xp.astype(t, xp.int64), xp.zeros_like(t, dtype=xp.int64))

    @functools.cached_property
    def w_t(self) -> Any:
        """(...) weight of each counted target, 0 where ignored (index targets only)."""
        xp = self.xp
        if self.class_weight is None:
            return xp.astype(self.valid, self.x.dtype)
        t = self.index
        w_t = xp.reshape(xp.take(self.class_weight, xp.reshape(t, (-1,)), axis=0), t.shape)
        return xp.where(self.valid, w_t, xp.zeros_like(w_t))


def _prepare(
    fn: str,
    input: Any,
    target: Any,
    weight: Any,
    ignore_index: int | None,
    reduction: str,
    axis: int | None,
    allow_probs: bool,
    shard: Any = None,
) -> _Batch:
    """Validate a call and bring it to the class-last layout.

    With ``shard`` (a :class:`crossentropy.distributed.VocabShard`) ``input``
    holds the classes ``[shard.offset, shard.offset + C_r)`` of
    ``shard.n_classes``: targets and ``weight`` refer to the whole vocabulary,
    and the batch's ``weight`` is the shard's slice of it.
    """
    xp, (input, target, weight) = namespace(input, target, weight)
    check_floating(xp, input, "input")
    reduction = check_reduction(reduction)
    ax = class_axis(input.ndim, axis)
    n_classes = input.shape[ax]
    n_total = n_classes if shard is None else shard.n_classes
    x = upcast(xp, xp.moveaxis(input, ax, -1) if ax != input.ndim - 1 else input)
    if weight is not None:
        check_floating(xp, weight, "weight")
        check_vector(weight, n_total, "weight")
        weight = xp.astype(weight, x.dtype)

    probs = (
        allow_probs
        and tuple(target.shape) == tuple(input.shape)
        and xp.isdtype(target.dtype, "real floating")
    )
    if probs:
        t = xp.moveaxis(target, ax, -1) if ax != input.ndim - 1 else target
        t = xp.astype(t, x.dtype, copy=False)  # no logits-sized copy when the dtype matches
        return _Batch(xp, x, ax, input.dtype, n_classes, weight, reduction, t, True)

    check_integer_target(xp, target)  # a float target of another shape: say so first
    check_batch(tuple(input.shape), tuple(target.shape), ax)
    check_index_target(xp, target, n_total, ignore_index)
    class_weight = weight
    if shard is not None and weight is not None:
        weight = weight[shard.offset : shard.offset + n_classes]
    return _Batch(
        xp, x, ax, input.dtype, n_classes, weight, reduction, target, False,
        ignore_index, class_weight,
    )  # fmt: skip


def _pick(xp: Any, x: Any, t: Any) -> Any:
    """``x[..., t]`` row by row (the target logit), without a one-hot matrix."""
    return xp.take_along_axis(x, t[..., None], axis=-1)[..., 0]


def _one_hot(xp: Any, t: Any, n: int, dtype: Any) -> Any:
    classes = xp.arange(n, device=device(t))
    return xp.astype(t[..., None] == classes, dtype)


def _back(b: _Batch, g: Any) -> Any:
    """A (..., C) gradient in the caller's layout and dtype."""
    xp = b.xp
    if b.axis != g.ndim - 1:
        g = xp.moveaxis(g, -1, b.axis)
    return restore(xp, g, b.dtype)


def _xlogy_safe(xp: Any, t: Any, logp: Any) -> Any:
    """``t * logp`` with ``0 * -inf = 0`` (a class with zero target mass)."""
    return xp.where(t == 0, xp.zeros_like(logp), t * logp)


# -- cross_entropy ------------------------------------------------------------------


def _cross_entropy_rows(
    b: _Batch,
    eps: float,
    z_loss: float,
    softcap: float | None,
    need_grad: bool,
    shard: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """Per-row loss, the ``'mean'`` denominator, and the per-row gradients.

    Returns ``(loss, denominator, d_input, d_target)`` in the class-last
    layout; the gradients are of each row's own loss (not yet scaled by the
    reduction) and ``None`` unless ``need_grad``.  This is the reference
    computation every faster path must reproduce.

    With ``shard`` (class-index targets only; see :func:`_prepare`) the row
    statistics of this slice of the classes are combined with the other
    slices' through ``shard.all_max`` and one ``shard.all_sum``; ``d_input``
    is this slice's part of the gradient.
    """
    xp = b.xp
    C = b.n_classes if shard is None else shard.n_classes
    x = b.x
    if softcap is not None:
        th = xp.tanh(x / softcap)
        x = softcap * th
    if shard is None:
        z, m = _shifted(xp, x, -1)  # logits minus the row max: exponents <= 0
    else:
        m = shard.all_max(xp.max(x, axis=-1, keepdims=True))
        m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
        z = x - m
    ez = xp.exp(z)
    sez = xp.sum(ez, axis=-1)
    d_target = None

    if b.probs:
        lse = xp.log(sez)  # logsumexp of the shifted logits, per row
        p = ez / sez[..., None] if need_grad else None
        t = b.target if eps == 0 else (1 - eps) * b.target + eps / C
        logp = z - lse[..., None]
        wt = t if b.weight is None else t * b.weight
        loss = -xp.sum(_xlogy_safe(xp, wt, logp), axis=-1)
        counted = None
        denom = float(_size(loss.shape))  # number of rows, whatever the weights
        if need_grad:
            g = xp.sum(wt, axis=-1)[..., None] * p - wt
            w = 1 if b.weight is None else b.weight
            d_target = -(1 - eps) * w * logp
    else:
        target, owned = b.index, None
        if shard is not None:  # the target's column in this slice, where it has it
            target = target - shard.offset
            owned = (target >= 0) & (target < b.n_classes)
            target = xp.where(owned, target, xp.zeros_like(target))
        zt = _pick(xp, z, target)  # the shifted target logit
        zs = None  # the (weighted) sum of the shifted logits, for smoothing
        if eps > 0:
            zs = xp.sum(z, axis=-1) if b.weight is None else xp.matmul(z, b.weight)
        if shard is not None:
            zt = xp.where(owned, zt, xp.zeros_like(zt))
            sez, zt, zs = shard.all_sum(sez, zt, zs)
        lse = xp.log(sez)  # logsumexp of the shifted logits, per row
        p = ez / sez[..., None] if need_grad else None
        loss = b.w_t * (lse - zt)
        if eps > 0:
            if shard is not None:
                big_w = shard.weight_sum
            else:
                big_w = C if b.weight is None else xp.sum(b.weight)
            smooth = big_w * lse - zs
            smooth = xp.where(b.valid, smooth, xp.zeros_like(smooth))
            loss = (1 - eps) * loss + (eps / C) * smooth
        counted = b.valid
        denom = xp.sum(b.w_t)
        if need_grad:
            coef = (1 - eps) * b.w_t
            coef_p = coef
            if eps > 0:
                coef_p = coef + xp.where(b.valid, (eps / C) * big_w, xp.zeros_like(coef))
            hot = coef if owned is None else xp.where(owned, coef, xp.zeros_like(coef))
            g = coef_p[..., None] * p - hot[..., None] * _one_hot(xp, target, b.n_classes, p.dtype)
            if eps > 0:
                w = xp.ones_like(p[..., :1]) if b.weight is None else b.weight
                g = g - xp.astype(b.valid, p.dtype)[..., None] * ((eps / C) * w)

    if z_loss:
        full_lse = lse + m[..., 0]
        zl = z_loss * full_lse * full_lse
        if counted is not None:
            zl = xp.where(counted, zl, xp.zeros_like(zl))
        loss = loss + zl
        if need_grad:
            dz = 2 * z_loss * full_lse
            if counted is not None:
                dz = xp.where(counted, dz, xp.zeros_like(dz))
            g = g + dz[..., None] * p
    if need_grad and softcap is not None:
        g = g * (1 - th * th)
    return loss, denom, (g if need_grad else None), d_target


def _cross_entropy(
    b: _Batch, eps: float, z_loss: float, softcap: float | None, wrt: tuple[str, ...]
) -> tuple[Any, dict]:
    """Value (and gradients for ``wrt``) of cross-entropy on a prepared batch."""
    fast = cross_entropy_batch(b, eps, z_loss, softcap, wrt)  # fused CPU kernel, if it applies
    if fast is not None:
        return fast
    xp = b.xp
    loss, denom, d_input, d_target = _cross_entropy_rows(b, eps, z_loss, softcap, bool(wrt))
    value = restore(xp, reduce(xp, loss, b.reduction, denom), b.dtype)
    grads = {}
    if wrt:
        s = seed(xp, loss, b.reduction, denom)
        if "input" in wrt:
            grads["input"] = _back(b, s * d_input)
        if "target" in wrt:
            grads["target"] = _back(b, s * d_target)
    return value, grads


def _size(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    axis: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> Any:
    r"""Cross-entropy between logits and targets: ``log_softmax`` + ``nll_loss`` in one step.

    The naive equivalent is ``nll_loss(log(softmax(input, axis)), target)``;
    this function never forms ``softmax`` and stays exact for logits of any
    magnitude.

    Parameters
    ----------
    input : array_like, floating, shape (N, C), (C,) or (N, C, d1, ..., dK)
        Unnormalised scores (logits).  The class axis is 1, or 0 for
        unbatched ``(C,)`` input, unless ``axis`` says otherwise.
    target : array_like
        Either class indices, any integer dtype, shape ``(N,)``, ``()`` or
        ``(N, d1, ..., dK)`` with values in ``[0, C)`` or ``ignore_index``;
        or class probabilities, floating, the same shape as ``input``.
    weight : array_like, shape (C,), optional
        Rescaling weight per class.
    ignore_index : int, default -100
        Class-index target value that contributes neither loss nor gradient
        nor denominator.  Unused for probability targets.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by the summed weight of the counted targets (the
        number of counted targets without ``weight``); for probability targets
        by the number of rows.
    label_smoothing : float in [0, 1], default 0.0
        Mix the target with the uniform distribution over the C classes.
    axis : int, optional, keyword-only
        The class axis, e.g. ``axis=-1`` for ``(N, T, C)`` logits.
    z_loss : float, default 0.0, keyword-only
        Adds ``z_loss * logsumexp(x)**2`` per counted row (PaLM's auxiliary
        loss that keeps the normaliser near 0); reduced like the loss.
    softcap : float, optional, keyword-only
        Replace the logits by ``softcap * tanh(x / softcap)`` first (Gemma 2's
        logit soft-capping); the gradient includes the ``tanh`` factor.

    Returns
    -------
    array
        Scalar for ``'mean'`` and ``'sum'``; the target's shape (indices) or
        ``input``'s shape without the class axis (probabilities) for
        ``'none'``.  ``input``'s dtype and array library.

    Raises
    ------
    TargetIndexError
        A class index outside ``[0, C)`` that is not ``ignore_index``
        (an ``IndexError`` and a ``ValueError``).
    DTypeError
        Integer ``input``, or a floating target whose shape is not ``input``'s.
    ValueError
        Batch-size mismatch, wrong ``weight`` length, invalid ``reduction`` or
        ``label_smoothing``.

    Warns
    -----
    ProbabilitiesAsLogitsWarning
        If the rows of ``input`` already look like probabilities (in [0, 1]
        and summing to 1): softmax was probably applied twice.

    See Also
    --------
    nll_loss : the same on log-probabilities.
    crossentropy.info.cross_entropy : :math:`H(p, q)` between two distributions.

    Notes
    -----
    With class indices :math:`y_n`, weights :math:`w` and smoothing
    :math:`\varepsilon`, per element

    .. math::
        \ell_n = (1-\varepsilon)\, w_{y_n} (\operatorname{lse}(x_n) - x_{n,y_n})
               + \frac{\varepsilon}{C} \sum_c w_c (\operatorname{lse}(x_n) - x_{n,c})

    and ``'mean'`` returns :math:`\sum_n \ell_n / \sum_n w_{y_n}` over
    non-ignored :math:`n` (PyTorch's formula: every class's weight appears in
    the smoothing term).  With probability targets :math:`t`,
    :math:`t' = (1-\varepsilon) t + \varepsilon / C` and
    :math:`\ell_n = -\sum_c w_c t'_{n,c} \log \operatorname{softmax}(x_n)_c`,
    ``'mean'`` divides by the number of rows.  The gradient with respect to
    the logits is :math:`\operatorname{softmax}(x) - \text{one-hot}(y)` scaled
    by the weights.  PyTorch: ``torch.nn.functional.cross_entropy`` (which
    has no ``z_loss`` or ``softcap``: with them, the PyTorch equivalent is
    ``F.cross_entropy(c * torch.tanh(x / c), y) + z_loss * mean(lse**2)``).

    Examples
    --------
    The seed's batch (``torch.manual_seed(100); torch.rand(4, 5)``, rounded to
    four digits) with labels ``[4, 3, 3, 2]``:

    >>> import numpy as np
    >>> import crossentropy as ce
    >>> predict = np.array([[0.1117, 0.8158, 0.2626, 0.4839, 0.6765],
    ...                     [0.7539, 0.2627, 0.0428, 0.2080, 0.1180],
    ...                     [0.1217, 0.7356, 0.7118, 0.7876, 0.4183],
    ...                     [0.9014, 0.9969, 0.7565, 0.2239, 0.3023]])
    >>> label = np.array([4, 3, 3, 2])
    >>> round(float(ce.cross_entropy(predict, label)), 4)
    1.523
    >>> logp = ce.log_softmax(predict, axis=1)           # = LogSoftmax + NLLLoss
    >>> round(float(ce.nll_loss(logp, label)), 4)
    1.523

    Logits far beyond ``exp``'s range stay exact:

    >>> float(ce.cross_entropy(np.array([[1e4, 0.0]]), np.array([1])))
    10000.0
    """
    return _cross_entropy_rule(
        input,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        axis=axis,
        z_loss=z_loss,
        softcap=softcap,
    )[0]


@defines_grad(cross_entropy, "input", "target")
@numeric_guard
def _cross_entropy_rule(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    axis: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    wrt: tuple[str, ...] = (),
) -> tuple[Any, dict]:
    # PyTorch CPU tensors the kernel takes: checked and prepared as NumPy views
    host = host_views(input, target, weight, ignore_index)
    arrays = (input, target, weight) if host is None else host
    b = _prepare("cross_entropy", *arrays, ignore_index, reduction, axis, True)
    eps = check_label_smoothing(label_smoothing)
    z_loss, softcap = check_z_loss_softcap(z_loss, softcap)
    if not wrt:
        warn_if_probabilities(b.xp, b.x, -1, "cross_entropy")
    if "target" in wrt and not b.probs:
        raise ValueError(
            "cross_entropy is differentiable with respect to target only for class "
            "probabilities (a floating target of input's shape), not class indices"
        )
    if host is not None:
        fast = cross_entropy_host(b, input, eps, z_loss, softcap, wrt)
        if fast is not None:
            return fast
        b = _prepare("cross_entropy", input, target, weight, ignore_index, reduction, axis, True)
    return _cross_entropy(b, eps, z_loss, softcap, wrt)


# -- nll_loss -----------------------------------------------------------------------


def _at_targets(b: _Batch, values: Any) -> Any:
    """A (..., C) array in the caller's layout holding ``values`` (one per row)
    at each row's target class and 0 elsewhere: the gradient of ``nll_loss``.

    NumPy and PyTorch write the values into zeros, so the result is the only
    logits-sized array (and NumPy's zeros cost no pass over memory until
    read); other libraries, which have no scatter in the Array API, use a
    boolean one-hot mask.
    """
    xp = b.xp
    if array_api_compat.is_numpy_array(b.x) or array_api_compat.is_torch_array(b.x):
        shape = list(b.x.shape[:-1])
        shape.insert(b.axis, b.n_classes)
        g = xp.zeros(tuple(shape), dtype=values.dtype, device=device(b.x))
        rows = xp.moveaxis(g, b.axis, -1)  # a view: written in place
        index, values = b.index[..., None], values[..., None]
        if array_api_compat.is_numpy_array(b.x):
            np.put_along_axis(rows, index, values, axis=-1)
        else:
            rows.scatter_(-1, index, values)
        return restore(xp, g, b.dtype)
    hot = b.index[..., None] == xp.arange(b.n_classes, device=device(b.index))
    return _back(b, xp.where(hot, values[..., None], xp.zeros((), dtype=values.dtype)))


def _nll(b: _Batch, wrt: tuple[str, ...]) -> tuple[Any, dict]:
    xp = b.xp
    loss = -b.w_t * _pick(xp, b.x, b.index)
    # an ignored row may hold -inf; its weight is 0 but 0 * inf is NaN
    loss = xp.where(b.valid, loss, xp.zeros_like(loss))
    denom = xp.sum(b.w_t)
    value = reduce(xp, loss, b.reduction, denom)
    grads = {}
    if "input" in wrt:
        s = seed(xp, loss, b.reduction, denom)
        grads["input"] = _at_targets(b, -(s * b.w_t))
    return restore(xp, value, b.dtype), grads


def nll_loss(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
) -> Any:
    r"""Negative log-likelihood loss on log-probabilities.

    Picks ``-input[n, target[n]]`` for each row, weighted, and reduces.  It is
    the second half of :func:`cross_entropy`:
    ``cross_entropy(x, y) == nll_loss(log_softmax(x, axis=1), y)``.

    Parameters
    ----------
    input : array_like, floating, shape (N, C), (C,) or (N, C, d1, ..., dK)
        Log-probabilities (e.g. the output of :func:`log_softmax`).
    target : array_like, integer, shape (N,), () or (N, d1, ..., dK)
        Class indices in ``[0, C)`` or ``ignore_index``.
    weight : array_like, shape (C,), optional
        Rescaling weight per class.
    ignore_index : int, default -100
        Target value that is skipped (no loss, no gradient, not counted).
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by the summed weight of the counted targets.
    axis : int, optional, keyword-only
        The class axis (default 1, or 0 for unbatched input).

    Returns
    -------
    array
        Scalar, or the target's shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    TargetIndexError
        A class index outside ``[0, C)`` that is not ``ignore_index``.
    DTypeError
        Integer ``input`` or a floating ``target``.
    ValueError
        Batch-size mismatch, wrong ``weight`` length, invalid ``reduction``.

    Notes
    -----
    .. math:: \ell_n = -w_{y_n} x_{n, y_n}, \qquad
              \text{mean} = \sum_n \ell_n \Big/ \sum_n w_{y_n}

    over non-ignored :math:`n`; every target ignored gives NaN for
    ``'mean'`` and 0 for ``'sum'``.  PyTorch: ``torch.nn.functional.nll_loss``.

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> logp = np.log(np.array([[0.1, 0.1, 0.8]]))   # the seed's cat/dog/horse
    >>> round(float(ce.nll_loss(logp, np.array([2]))), 4)
    0.2231
    """
    return _nll_loss_rule(input, target, weight, ignore_index, reduction, axis=axis)[0]


@defines_grad(nll_loss, "input")
@numeric_guard
def _nll_loss_rule(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    wrt: tuple[str, ...] = (),
) -> tuple[Any, dict]:
    return _nll(
        _prepare("nll_loss", input, target, weight, ignore_index, reduction, axis, False), wrt
    )
