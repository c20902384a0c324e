"""Multi-class losses on logits and log-probabilities: ``cross_entropy`` and ``nll_loss``.

Both follow ``torch.nn.functional`` exactly: class axis 1 for batched input
``(N, C, d1, ..., dK)`` and 0 for unbatched ``(C,)`` input (overridable with
``axis=``), per-class ``weight``, ``ignore_index``, and PyTorch's weighted mean
(divide by the sum of the weights of the counted targets).

Internally the class axis is moved last (a view, no copy); the forward and the
analytic backward share one preparation step.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from .._core.aliases import axis_or_dim
from .._core.mathops import pick
from .._core.namespace import device, numeric_guard, restore
from .._core.options import CrossEntropyOptions
from .._core.prepared import ClassCall, prepare_class_call, rebind, to_caller_layout
from .._core.reduction import Reduction, check_normalizer, grad_scale, reduce
from .._core.rules import defines_grad
from .._core.softmax_ce import evaluate_cross_entropy
from .._core.types import Array, ArrayLike, ArrayT
from .._core.validate import check_ignore_index, warn_if_probabilities
from .._core.where import apply_where
from ..jax_rules import jax_rule
from ..kernels.cross_entropy import cross_entropy as kernel_cross_entropy
from ..kernels.cross_entropy import host_arrays
from ..kernels.custom_ops import torch_call, traced_as
from ..kernels.quick import quick_cross_entropy

__all__ = ["cross_entropy", "nll_loss"]


# -- cross_entropy ------------------------------------------------------------------


def cross_entropy(
    input: ArrayT | ArrayLike,
    target: Array | ArrayLike,
    weight: Array | ArrayLike | None = None,
    ignore_index: int | None = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    axis: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    normalizer: float | None = None,
    where: Array | ArrayLike | None = None,
    dim: int | None = None,
) -> ArrayT:
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
        nor denominator, whatever the logits of its row (NaN padding
        included); ``None`` ignores nothing.  An integer of any width (a
        float raises ``TypeError``, as in PyTorch).  Unused for probability
        targets.
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
    temperature : float > 0, default 1.0, keyword-only
        Divide the logits (after ``softcap``) by ``temperature`` before the
        softmax, as a sampler does; the gradient includes the ``1 / T`` factor.
    normalizer : float > 0, optional, keyword-only
        With ``reduction='mean'`` (the only one it applies to), divide the
        sum of the weighted per-row losses by ``normalizer`` instead of by
        the local sum of weights.  Pass the count of counted targets of a
        whole optimisation step to each of its micro-batches: their losses
        (and gradients) then add up to the step's mean (gradient
        accumulation).
    where : array_like of bool, optional, keyword-only
        Which logits take part: ``input``'s shape (one flag per logit) or
        ``input``'s shape without the class axis (one flag per row).  An
        excluded logit is left out of the softmax (probability 0, gradient 0),
        an excluded probability-target entry is dropped, and a row with no
        included class gives no loss and is not counted by ``'mean'``
        (optax's ``where=``).  Not combined with ``label_smoothing``.
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

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
    TypeError
        ``ignore_index`` or ``axis`` that is not an integer, a masked array.
    ValueError
        Batch-size mismatch, wrong ``weight`` length, invalid ``reduction``,
        ``label_smoothing``, ``temperature`` or ``normalizer`` (not positive,
        or given with a reduction other than ``'mean'``).
    TypeError
        Both ``axis`` and ``dim`` given.

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

    ``temperature`` :math:`T` replaces :math:`x` by :math:`x / T` in all of
    the above (``F.cross_entropy(x / T, y)``; the gradient with respect to
    :math:`x` is :math:`1/T` times that with respect to :math:`x / T`).
    ``normalizer`` :math:`Z` makes ``'mean'`` return :math:`\sum_n \ell_n / Z`:
    with micro-batches :math:`B_1, \dots, B_k` of one step and
    :math:`Z = \sum_{n \in B_1 \cup \dots \cup B_k} w_{y_n}`, the sum of
    their losses is the mean over the step, which a per-micro-batch
    ``'mean'`` is not when their counts differ.  Hugging Face
    ``transformers`` passes ``num_items_in_batch`` for the same purpose
    (``F.cross_entropy(x, y, reduction='sum') / Z``).

    Examples
    --------
    Four rows of five scores in [0, 1] (``torch.manual_seed(100);
    torch.rand(4, 5)``, rounded to four digits) with labels ``[4, 3, 3, 2]``:

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

    Temperature 2 halves the logits ``[2, 0]``: the loss of class 0 is
    :math:`\log(1 + e^{-1})`.  The four rows above as one step of two
    micro-batches, of 1 and 3 rows: with ``normalizer=4`` (the step's count)
    their losses add up to the step's mean, the 1.523 above:

    >>> x, y = np.array([[2.0, 0.0]]), np.array([0])
    >>> round(float(ce.cross_entropy(x, y, temperature=2.0)), 4), round(float(np.log1p(np.exp(-1))), 4)
    (0.3133, 0.3133)
    >>> parts = [(predict[:1], label[:1]), (predict[1:], label[1:])]
    >>> round(sum(float(ce.cross_entropy(p, t, normalizer=4)) for p, t in parts), 4)
    1.523
    """
    if where is None and normalizer is None and temperature == 1 and temperature is not True:
        fast = quick_cross_entropy(  # the common call, checked cheaply
            input, target, weight, ignore_index, reduction, label_smoothing, axis, z_loss,
            softcap, dim,
        )  # fmt: skip
        if fast is not None:
            return fast
        del fast  # locals() below: the arguments alone
    routed = torch_call("cross_entropy", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
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
        temperature=temperature,
        normalizer=normalizer,
        where=where,
        dim=dim,
    )[0]


def _untempered(temperature: Any, normalizer: Any) -> bool:
    """True for the default ``temperature`` and ``normalizer`` (which the quick path
    does not take; ``True`` is a bad temperature, left to the full validation)."""
    return normalizer is None and temperature == 1 and not isinstance(temperature, bool)


@jax_rule
@traced_as(cross_entropy, "classes")
@defines_grad(cross_entropy, "input", "target")
@numeric_guard
def _cross_entropy_rule(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    axis: int | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    normalizer: float | None = None,
    where: Any = None,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim)
    ignore_index = check_ignore_index(ignore_index)  # before the host views use it
    if where is not None:
        masked = apply_where(input, target, where, axis, ignore_index, label_smoothing)
        # a normalizer is the mean's divisor already: the rows are not counted again
        inner = masked.reduction(reduction) if normalizer is None else reduction
        return masked.finish(
            _cross_entropy_rule(
                masked.input, masked.target, weight, masked.ignore_index, inner,
                label_smoothing, axis=axis, z_loss=z_loss, softcap=softcap,
                temperature=temperature, normalizer=normalizer, wrt=wrt,
                cotangent=cotangent,
            ),
            reduction if normalizer is None else "sum",
        )  # fmt: skip
    common = _untempered(temperature, normalizer)
    if wrt and cotangent is None and common:  # value_and_grad: the common call, checked cheaply
        args = (input, target, weight, ignore_index, reduction, label_smoothing)
        fast = quick_cross_entropy(*args, axis, z_loss, softcap, None, wrt)
        if fast is not None:
            return fast
    # PyTorch CPU tensors the kernel takes: validated and prepared as NumPy views
    host = host_arrays(input, target, weight, ignore_index)
    call = prepare_class_call(
        *(host or (input, target, weight)),
        reduction=reduction,
        ignore_index=ignore_index,
        axis=axis,
        probabilities=True,
    )
    options = CrossEntropyOptions.checked(
        label_smoothing, z_loss, softcap, temperature, check_normalizer(normalizer, call.reduction)
    )
    if not wrt:
        warn_if_probabilities(call.xp, call.x, -1, "cross_entropy")
    if "target" in wrt and not call.probs:
        raise ValueError(
            "cross_entropy is differentiable with respect to target only for class "
            "probabilities (a floating target of input's shape), not class indices"
        )
    if cotangent is None:  # the kernels seed the gradient with one number
        fast = kernel_cross_entropy(call, options, wrt, source=input if host else None)
        if fast is not None:
            return fast
    if host is not None:  # the kernel declined the views: the caller's own arrays
        call = rebind(call, input, target, weight)
    return evaluate_cross_entropy(call, options, wrt, cotangent)


# -- nll_loss -----------------------------------------------------------------------


def _at_targets(b: ClassCall, values: Any) -> Any:
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
    return to_caller_layout(b, xp.where(hot, values[..., None], xp.zeros((), dtype=values.dtype)))


def _nll(
    b: ClassCall, wrt: tuple[str, ...], cotangent: Any, normalizer: Any = None
) -> tuple[Any, dict]:
    xp = b.xp
    if b.n_classes == 0:  # every target ignored (checked): zeros, a NaN mean (0 / normalizer)
        loss = xp.zeros(b.x.shape[:-1], dtype=b.x.dtype, device=device(b.x))
        grads = {"input": to_caller_layout(b, xp.zeros_like(b.x))} if "input" in wrt else {}
        denom = 0.0 if normalizer is None else normalizer
        return restore(xp, reduce(xp, loss, b.reduction, denom), b.dtype), grads
    loss = -b.w_t * pick(xp, b.x, b.index)
    # an ignored row may hold -inf; its weight is 0 but 0 * inf is NaN
    loss = xp.where(b.valid, loss, xp.zeros_like(loss))
    denom = xp.sum(b.w_t) if normalizer is None else normalizer
    value = reduce(xp, loss, b.reduction, denom)
    grads = {}
    if "input" in wrt:
        s = grad_scale(xp, loss, b.reduction, denom)
        if cotangent is not None:
            s = s * xp.astype(cotangent, loss.dtype)
        grads["input"] = _at_targets(b, -(s * b.w_t))
    return restore(xp, value, b.dtype), grads


def nll_loss(
    input: ArrayT | ArrayLike,
    target: Array | ArrayLike,
    weight: Array | ArrayLike | None = None,
    ignore_index: int | None = -100,
    reduction: Reduction = "mean",
    *,
    axis: int | None = None,
    normalizer: float | None = None,
    dim: int | None = None,
) -> ArrayT:
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
        Target value that is skipped (no loss, no gradient, not counted);
        an integer, or ``None`` to skip nothing.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
        ``'mean'`` divides by the summed weight of the counted targets.
    axis : int, optional, keyword-only
        The class axis (default 1, or 0 for unbatched input).
    normalizer : float > 0, optional, keyword-only
        With ``reduction='mean'`` only: divide the summed weighted losses by
        ``normalizer`` instead of the local sum of weights (the count of
        tokens of a whole step, for gradient accumulation; see
        :func:`cross_entropy`).
    dim : int, optional, keyword-only
        PyTorch's name for ``axis`` (give one of them).

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
    TypeError
        ``ignore_index`` or ``axis`` that is not an integer.
    ValueError
        Batch-size mismatch, wrong ``weight`` length, invalid ``reduction`` or
        ``normalizer``.

    Notes
    -----
    .. math:: \ell_n = -w_{y_n} x_{n, y_n}, \qquad
              \text{mean} = \sum_n \ell_n \Big/ \sum_n w_{y_n}

    over non-ignored :math:`n`; every target ignored gives NaN for
    ``'mean'`` and 0 for ``'sum'``.  With ``normalizer`` :math:`Z` the mean
    is :math:`\sum_n \ell_n / Z`.  PyTorch: ``torch.nn.functional.nll_loss``
    (with ``normalizer``: ``F.nll_loss(x, y, reduction='sum') / Z``).

    Examples
    --------
    >>> import numpy as np
    >>> import crossentropy as ce
    >>> logp = np.log(np.array([[0.1, 0.1, 0.8]]))   # cat, dog, horse: -log 0.8
    >>> round(float(ce.nll_loss(logp, np.array([2]))), 4)
    0.2231
    >>> round(float(ce.nll_loss(logp, np.array([2]), normalizer=2)), 4)   # half of it
    0.1116
    """
    routed = torch_call("nll_loss", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    return _nll_loss_rule(
        input, target, weight, ignore_index, reduction, axis=axis, normalizer=normalizer, dim=dim
    )[0]


@jax_rule
@traced_as(nll_loss, "classes")
@defines_grad(nll_loss, "input")
@numeric_guard
def _nll_loss_rule(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    *,
    axis: int | None = None,
    normalizer: float | None = None,
    dim: int | None = None,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    axis = axis_or_dim(axis, dim)
    call = prepare_class_call(
        input, target, weight, reduction=reduction, ignore_index=ignore_index, axis=axis
    )
    return _nll(call, wrt, cotangent, check_normalizer(normalizer, call.reduction))
