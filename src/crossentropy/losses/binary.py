"""Binary cross-entropy, on probabilities and on logits, and the sigmoid focal loss."""

from __future__ import annotations

from typing import Any

from .._core.mathops import log_sigmoid, neg_abs, sigmoid
from .._core.namespace import numeric_guard
from .._core.prepared import broadcast_to_input, finish_pair, prepare_pair_call
from .._core.rules import defines_grad
from .._core.validate import check_in_unit_interval
from ..jax_rules import jax_rule
from ..kernels.custom_ops import torch_call, traced_as

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss"]

_LOG_FLOOR = -100.0  # PyTorch clamps each log at -100 so that p = 0 or 1 stays finite
# PyTorch's floor on p (1 - p) in the backward: the float32 constant 1e-12
# (``constexpr float EPSILON``), which is this value in float64
_GRAD_EPS = 9.999999960041972e-13


def binary_cross_entropy(
    input: Any, target: Any, weight: Any = None, reduction: str = "mean"
) -> Any:
    r"""Binary cross-entropy between predicted probabilities and targets.

    Parameters
    ----------
    input : array_like, floating, any shape
        Predicted probabilities in [0, 1] (e.g. the output of :func:`sigmoid`).
    target : array_like, same shape as ``input``
        Target probabilities in [0, 1] (usually 0 or 1); integer or boolean
        0/1 labels are taken as those probabilities.
    weight : array_like, optional
        Rescaling weight, broadcastable to ``input``'s shape.
    reduction : {'mean', 'sum', 'none'}, default 'mean'

    Returns
    -------
    array
        Scalar, or ``input``'s shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        ``input`` or ``target`` outside [0, 1], shape mismatch, invalid ``reduction``.
    DTypeError
        Integer ``input``.

    See Also
    --------
    binary_cross_entropy_with_logits : the stable version on logits.

    Notes
    -----
    .. math:: \ell = -w\,[\, y \max(\log p, -100) + (1-y) \max(\log(1-p), -100) \,]

    :math:`\log(1-p)` is evaluated as ``log1p(-p)``.  The clamp makes
    :math:`p = 0` or :math:`1` give a loss of 100 instead of infinity, as in
    PyTorch; the gradient :math:`w (p - y) / \max(p(1-p), 10^{-12})` is
    PyTorch's too.  PyTorch: ``torch.nn.functional.binary_cross_entropy``.

    Examples
    --------
    A picture that is a cat (:math:`y = 1`) predicted a cat with probability 0.8,
    :math:`-(y \log p + (1-y)\log(1-p)) = -\log 0.8`:

    >>> import crossentropy as ce
    >>> round(float(ce.binary_cross_entropy([0.8], [1.0])), 4)      # -log 0.8
    0.2231
    >>> float(ce.binary_cross_entropy([0.0], [1.0]))                # clamped, not inf
    100.0
    """
    routed = torch_call("binary_cross_entropy", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    return _bce_rule(input, target, weight, reduction)[0]


@jax_rule
@traced_as(binary_cross_entropy, "elements")
@defines_grad(binary_cross_entropy, "input", "target")
@numeric_guard
def _bce_rule(
    input: Any,
    target: Any,
    weight: Any = None,
    reduction: str = "mean",
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    p = prepare_pair_call(
        "binary_cross_entropy", input, target, reduction, weight, float_target=False
    )
    xp, x, t = p.xp, p.x, p.t
    check_in_unit_interval(xp, x, "input")
    check_in_unit_interval(xp, t, "target")
    w = p.extras[0]
    if w is not None:
        w = broadcast_to_input(xp, w, x.shape, "weight")
    floor = xp.full_like(x, _LOG_FLOOR)
    log_p = xp.maximum(xp.log(x), floor)
    log_q = xp.maximum(xp.log1p(-x), floor)
    loss = -(t * log_p + (1 - t) * log_q)
    if w is not None:
        loss = w * loss
    ww = 1 if w is None else w

    def d_input() -> Any:
        return ww * (x - t) / xp.maximum(x * (1 - x), xp.full_like(x, _GRAD_EPS))

    def d_target() -> Any:
        return ww * (log_q - log_p)

    return finish_pair(p, loss, wrt, {"input": d_input, "target": d_target}, cotangent=cotangent)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> Any:
    r"""Binary cross-entropy on logits: ``sigmoid`` + BCE in one stable step.

    The naive equivalent is ``binary_cross_entropy(sigmoid(input), target)``,
    which saturates for logits beyond about ±17 (float32) and clamps at 100;
    this function is exact for any logit.

    Parameters
    ----------
    input : array_like, floating, any shape
        Logits.
    target : array_like, floating, same shape as ``input``
        Target probabilities, usually 0 or 1.
    weight : array_like, optional
        Rescaling weight, broadcastable to ``input``'s shape.
    reduction : {'mean', 'sum', 'none'}, default 'mean'
    pos_weight : array_like, optional
        Weight of positive examples, broadcastable to ``input`` (typically one
        value per class along the last axis): > 1 raises recall.

    Returns
    -------
    array
        Scalar, or ``input``'s shape for ``'none'``; ``input``'s dtype.

    Raises
    ------
    ValueError
        Shape mismatch, non-broadcastable ``weight``/``pos_weight``, invalid ``reduction``.
    DTypeError
        Integer ``input`` or ``target``.

    Notes
    -----
    .. math:: \ell = w\,[\,(1-y)\,x - (1 + (p_w - 1)\,y) \log\sigma(x)\,]

    with :math:`\log\sigma(x) = \min(x,0) - \log(1+e^{-|x|})`.  The gradient
    is :math:`w\,[(1-y) - (1 + (p_w-1) y)\,\sigma(-x)]`, i.e.
    :math:`w(\sigma(x) - y)` without ``pos_weight``.  PyTorch:
    ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Examples
    --------
    >>> import crossentropy as ce
    >>> round(float(ce.binary_cross_entropy_with_logits([0.0], [1.0])), 4)   # log 2
    0.6931
    >>> float(ce.binary_cross_entropy_with_logits([-1e4], [1.0]))           # exact, not 100
    10000.0
    """
    routed = torch_call("binary_cross_entropy_with_logits", locals())  # autocast, torch.compile
    if routed is not None:
        return routed
    return _bce_logits_rule(input, target, weight, reduction, pos_weight)[0]


@jax_rule
@traced_as(binary_cross_entropy_with_logits, "elements")
@defines_grad(binary_cross_entropy_with_logits, "input", "target")
@numeric_guard
def _bce_logits_rule(
    input: Any,
    target: Any,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    p = prepare_pair_call(
        "binary_cross_entropy_with_logits", input, target, reduction, weight, pos_weight
    )
    xp, x, t = p.xp, p.x, p.t
    w, pw = p.extras
    if w is not None:
        w = broadcast_to_input(xp, w, x.shape, "weight")
    if pw is not None:
        pw = broadcast_to_input(xp, pw, x.shape, "pos_weight")
    log_sig = log_sigmoid(xp, x)
    coef = 1 if pw is None else 1 + (pw - 1) * t
    loss = (1 - t) * x - coef * log_sig
    if w is not None:
        loss = w * loss
    ww = 1 if w is None else w

    def d_input() -> Any:
        return ww * ((1 - t) - coef * sigmoid(xp, -x))

    def d_target() -> Any:
        return ww * (-x - (0 if pw is None else (pw - 1) * log_sig))

    return finish_pair(p, loss, wrt, {"input": d_input, "target": d_target}, cotangent=cotangent)


def sigmoid_focal_loss(
    inputs: Any,
    targets: Any,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Any:
    r"""Focal loss on logits for binary (one-vs-rest) targets, as in RetinaNet.

    Binary cross-entropy on logits scaled by :math:`(1 - p_t)^\gamma`, so that
    well-classified entries count less (Lin et al., 2017).

    Parameters
    ----------
    inputs : array_like, floating, any shape
        Logits.
    targets : array_like, same shape as ``inputs``
        Labels in [0, 1] (0/1, or soft labels); integer labels are accepted.
    alpha : float, default 0.25
        Weight of the positive class, in [0, 1]; :math:`1 - \alpha` weighs
        the negatives.  A negative value (torchvision's -1) turns it off.
    gamma : float >= 0, default 2.0
        Focusing parameter; 0 gives binary cross-entropy (times
        :math:`\alpha_t`).
    reduction : {'none', 'mean', 'sum'}, default 'none'
        torchvision's default is ``'none'``.

    Returns
    -------
    array
        ``inputs``'s shape for ``'none'``, else a scalar; ``inputs``'s dtype.

    Raises
    ------
    ValueError
        ``alpha`` above 1, ``gamma`` negative or NaN, shape mismatch, invalid
        ``reduction``.
    DTypeError
        Integer ``inputs``.

    See Also
    --------
    focal_cross_entropy : the softmax (multi-class) focal loss.

    Notes
    -----
    With :math:`p = \sigma(x)`, :math:`1 - p_t = p(1-y) + (1-p)y` and
    :math:`\alpha_t = \alpha y + (1-\alpha)(1-y)`,

    .. math:: \ell = \alpha_t (1 - p_t)^\gamma\,
              \operatorname{BCE}_\text{logits}(x, y)

    :math:`1 - p_t` is a sum of two non-negative terms computed with the
    overflow-free sigmoid (no cancellation), and the gradient is analytic:
    :math:`\alpha_t (1-p_t)^\gamma [\sigma(x) - y + \gamma\,
    \tfrac{\operatorname{BCE}}{1-p_t}\, \sigma(x)\sigma(-x)(1-2y)]`.
    torchvision: ``torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha,
    gamma, reduction)``; optax: ``optax.losses.sigmoid_focal_loss`` (``alpha``
    off by default); Keras: ``keras.losses.binary_focal_crossentropy``.

    Examples
    --------
    A logit of 0 for a positive label: :math:`p_t = 0.5`, so the loss is
    :math:`0.25 \cdot 0.5^2 \log 2`:

    >>> import crossentropy as ce
    >>> round(float(ce.sigmoid_focal_loss([0.0], [1.0])[0]), 5)
    0.04332
    >>> round(float(ce.sigmoid_focal_loss([0.0], [1.0], alpha=-1, gamma=0)[0]), 4)   # BCE
    0.6931
    """
    return _sigmoid_focal_rule(inputs, targets, alpha, gamma, reduction)[0]


@jax_rule
@defines_grad(sigmoid_focal_loss, "inputs")
@numeric_guard
def _sigmoid_focal_rule(
    inputs: Any,
    targets: Any,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    *,
    wrt: tuple[str, ...] = (),
    cotangent: Any = None,
) -> tuple[Any, dict]:
    alpha, gamma = float(alpha), float(gamma)
    if not alpha <= 1:
        raise ValueError(f"alpha must be at most 1 (or negative to turn it off), got {alpha!r}")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    p = prepare_pair_call("sigmoid_focal_loss", inputs, targets, reduction, float_target=False)
    xp, x, t = p.xp, p.x, p.t
    # sigma(+-x) as exp(log sigma(+-x)): autograd (PyTorch, JAX) gets the slope at x = 0 right
    s, s_neg = xp.exp(log_sigmoid(xp, x)), xp.exp(log_sigmoid(xp, -x))
    # (1 - t) x - log sigmoid(x), with -log sigmoid(x) as max(-x, 0) + log1p(e^-|x|) so
    # that a tiny loss (x = -50, t = 0) keeps its relative precision (branches: see neg_abs)
    bce = (1 - t) * x + xp.where(x >= 0, xp.zeros_like(x), -x) + xp.log1p(xp.exp(neg_abs(xp, x)))
    q = s * (1 - t) + s_neg * t  # 1 - p_t
    qg = xp.pow(q, gamma)
    a_t = 1 if alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
    loss = a_t * qg * bce

    def d_inputs() -> Any:
        # bce / (1 - p_t) -> 1 where 1 - p_t underflows (hard labels, saturated logits)
        ratio = xp.where(q > 0, bce / xp.where(q > 0, q, xp.ones_like(q)), xp.ones_like(q))
        return a_t * qg * (s - t + gamma * ratio * s * s_neg * (1 - 2 * t))

    return finish_pair(p, loss, wrt, {"inputs": d_inputs}, cotangent=cotangent)
