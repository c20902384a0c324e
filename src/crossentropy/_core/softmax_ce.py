"""The per-row softmax cross-entropy and its gradient: the reference every faster path reproduces.

:func:`cross_entropy_rows` computes, for a :class:`~.prepared.ClassCall`, each
row's loss, the ``'mean'`` denominator and each row's gradient with respect to
the logits (and to probability targets); :func:`evaluate_cross_entropy` reduces
them and puts the gradients back in the caller's layout.  With a
:class:`~.shard.VocabShard` the row statistics of this slice of the classes are
combined with the other slices' through its collectives.
"""

from __future__ import annotations

from typing import Any

from .mathops import one_hot, pick, shifted, size, xlogy0
from .namespace import device, restore
from .options import CrossEntropyOptions
from .prepared import ClassCall, to_caller_layout
from .reduction import grad_scale, reduce
from .shard import VocabShard

__all__ = ["cross_entropy_rows", "evaluate_cross_entropy"]


def _row_max(xp: Any, x: Any, shard: VocabShard | None) -> tuple[Any, Any]:
    """``(x - m, m)``: the max shift, over every shard's classes when sharded."""
    if shard is None:
        return shifted(xp, x, -1)
    m = shard.all_max(xp.max(x, axis=-1, keepdims=True))
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    return x - m, m


def _probability_rows(
    b: ClassCall, z: Any, ez: Any, sez: Any, eps: float, n: int, need_grad: bool
) -> tuple:
    """``(loss, lse, denominator, d_input, d_target, counted, softmax)`` of rows
    with probability targets (the last four ``None`` unless ``need_grad``;
    ``counted`` always ``None``: every row counts)."""
    xp = b.xp
    lse = xp.log(sez)  # logsumexp of the shifted logits, per row
    t = b.target if eps == 0 else (1 - eps) * b.target + eps / n
    logp = z - lse[..., None]
    wt = t if b.weight is None else t * b.weight
    loss = -xp.sum(xlogy0(xp, wt, logp), axis=-1)
    g = d_target = p = None
    if need_grad:
        p = ez / sez[..., None]
        g = xp.sum(wt, axis=-1)[..., None] * p - wt
        w = 1 if b.weight is None else b.weight
        d_target = -(1 - eps) * w * logp
    return loss, lse, float(size(loss.shape)), g, d_target, None, p


def _index_rows(
    b: ClassCall, x: Any, z: Any, m: Any, ez: Any, sez: Any, eps: float, n: int,
    need_grad: bool, shard: Any,
) -> tuple:  # fmt: skip
    """The same tuple as :func:`_probability_rows` for rows with class-index
    targets (``d_target`` ``None``, ``counted`` the mask of counted rows)."""
    xp = b.xp
    target, owned = b.index, None
    if shard is not None:  # the target's column in this slice, where it has it
        target = target - shard.offset
        owned = (target >= 0) & (target < b.n_classes)
        target = xp.where(owned, target, xp.zeros_like(target))
    # the shifted target logit, picked from x: the shifted logits z = x - m are
    # then read only by exp (and a row sum with smoothing), so that a compiler
    # (XLA) fuses them into those passes instead of writing them out
    zt = pick(xp, x, target) - m[..., 0]
    zs = None  # the (weighted) sum of the shifted logits, for smoothing
    if eps > 0:
        zs = xp.sum(z, axis=-1) if b.weight is None else xp.matmul(z, b.weight)
    if shard is not None:
        zt = xp.where(owned, zt, xp.zeros_like(zt))
        sez, zt, zs = shard.all_sum(sez, zt, zs)
    lse = xp.log(sez)  # logsumexp of the shifted logits, per row
    loss = b.w_t * (lse - zt)
    big_w: Any = None  # set with smoothing (eps > 0), the only case that reads it
    if eps > 0:
        if shard is not None:
            big_w = shard.weight_sum
        else:
            big_w = n if b.weight is None else xp.sum(b.weight)
        smooth = xp.where(b.valid, big_w * lse - zs, xp.zeros_like(lse))
        loss = (1 - eps) * loss + (eps / n) * smooth
    g = p = None
    if need_grad:
        p = ez / sez[..., None]
        coef = (1 - eps) * b.w_t
        coef_p = coef
        if eps > 0:
            coef_p = coef + xp.where(b.valid, (eps / n) * big_w, xp.zeros_like(coef))
        hot = coef if owned is None else xp.where(owned, coef, xp.zeros_like(coef))
        g = coef_p[..., None] * p - hot[..., None] * one_hot(xp, target, b.n_classes, p.dtype)
        if eps > 0:
            w = xp.ones_like(p[..., :1]) if b.weight is None else b.weight
            g = g - xp.astype(b.valid, p.dtype)[..., None] * ((eps / n) * w)
    return loss, lse, xp.sum(b.w_t), g, None, b.valid, p


def cross_entropy_rows(
    b: ClassCall,
    options: CrossEntropyOptions,
    need_grad: bool,
    shard: VocabShard | None = None,
) -> tuple[Any, Any, Any, Any]:
    """Per-row loss, the ``'mean'`` denominator, and the per-row gradients.

    Returns ``(loss, denominator, d_input, d_target)`` in the class-last
    layout; the gradients are of each row's own loss (not yet scaled by the
    reduction) and ``None`` unless ``need_grad`` (``d_target`` only for
    probability targets).  The denominator is ``options.normalizer`` when it
    is given; the logits are divided by ``options.temperature`` (after the
    soft cap), and ``d_input`` includes its factor.

    With ``shard`` (class-index targets only; see :func:`.prepared.prepare_class_call`)
    the row statistics of this slice of the classes are combined with the
    other slices' through ``shard.all_max`` and one ``shard.all_sum``;
    ``d_input`` is this slice's part of the gradient.
    """
    xp = b.xp
    n = b.n_classes if shard is None else shard.n_classes
    if n == 0:  # no classes: every target is ignored (checked), or probabilities of nothing
        loss, denom, g, d_target = _no_classes(b, need_grad)
        return loss, denom if options.normalizer is None else options.normalizer, g, d_target
    eps, z_loss, softcap = options.label_smoothing, options.z_loss, options.softcap
    x, inv_t = b.x, 1.0
    if not b.probs:  # rows that do not count: zeros, whatever their logits (NaN, -inf),
        # so that no NaN reaches their loss or gradient (autograd's included)
        x = xp.where(b.valid[..., None], x, xp.zeros_like(x))
    if options.temperature != 1:  # x / T with the cap / T: the capped logits over T
        inv_t, options = options.tempered()
        x, softcap = x * inv_t, options.softcap
    if softcap is not None:
        th = xp.tanh(x / softcap)
        x = softcap * th
    z, m = _row_max(xp, x, shard)  # logits minus the row max: exponents <= 0
    ez = xp.exp(z)
    sez = xp.sum(ez, axis=-1)
    if b.probs:
        rows = _probability_rows(b, z, ez, sez, eps, n, need_grad)
    else:
        rows = _index_rows(b, x, z, m, ez, sez, eps, n, need_grad, shard)
    loss, lse, denom, g, d_target, counted, p = rows
    # a +inf logit (a row whose shifted exponentials, over every shard, sum to
    # +inf): NaN loss and gradients for the row, as log_softmax gives them
    posinf = lse == float("inf")
    if counted is not None:
        posinf = posinf & counted
    nan = xp.where(posinf, xp.full_like(loss, float("nan")), xp.ones_like(loss))
    loss = loss * nan  # a product, so that autograd's gradient of the row is NaN too
    if need_grad:
        g = g * nan[..., None]
        if d_target is not None:
            d_target = d_target * nan[..., None]

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
    if need_grad and inv_t != 1:
        g = g * inv_t
    if options.normalizer is not None:
        denom = options.normalizer
    return loss, denom, g, d_target


def _no_classes(b: ClassCall, need_grad: bool) -> tuple[Any, Any, Any, Any]:
    """:func:`cross_entropy_rows` of a call with C = 0: per-row losses of 0 and a
    ``'mean'`` denominator of 0 (a NaN mean, as PyTorch's), empty gradients."""
    xp = b.xp
    loss = xp.zeros(b.x.shape[:-1], dtype=b.x.dtype, device=device(b.x))
    g = xp.zeros_like(b.x) if need_grad else None
    d_target = xp.zeros_like(b.x) if need_grad and b.probs else None
    return loss, 0.0, g, d_target


def evaluate_cross_entropy(
    b: ClassCall, options: CrossEntropyOptions, wrt: tuple[str, ...], cotangent: Any = None
) -> tuple[Any, dict]:
    """The reduced value and the gradients named in ``wrt`` (``"input"``,
    ``"target"``) of cross-entropy on a prepared call, on the portable path;
    with ``cotangent`` (the value's shape) the gradients of ``sum(cotangent * value)``."""
    xp = b.xp
    loss, denom, d_input, d_target = cross_entropy_rows(b, options, bool(wrt))
    value = restore(xp, reduce(xp, loss, b.reduction, denom), b.dtype)
    grads = {}
    if wrt:
        s = grad_scale(xp, loss, b.reduction, denom)
        if cotangent is not None:  # one per row (or one for the reduced value)
            s = s * xp.expand_dims(xp.astype(cotangent, loss.dtype), axis=-1)
        if "input" in wrt:
            grads["input"] = to_caller_layout(b, s * d_input)
        if "target" in wrt:
            grads["target"] = to_caller_layout(b, s * d_target)
    return value, grads
