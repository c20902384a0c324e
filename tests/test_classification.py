"""``cross_entropy`` and ``nll_loss`` against PyTorch float64 on every backend.

Each check builds its inputs in NumPy float64, runs our function on the ``xp``
backend and compares with ``torch.nn.functional`` (float64) or a naive float64
NumPy formula; gradients are checked against torch autograd and central finite
differences.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import nn as cenn
from tests.support import assert_close, finite_difference, torch_grad, torch_oracle

torch = pytest.importorskip("torch")
F = torch.nn.functional

# input shapes: (N, C), unbatched (C,), (N, C, d1), (N, C, d1, d2); C = 5 throughout
SHAPES = [
    pytest.param((4, 5), id="NC"),
    pytest.param((5,), id="C"),
    pytest.param((3, 5, 2), id="NCd"),
    pytest.param((2, 5, 2, 2), id="NCdd"),
]
REDUCTIONS = ["none", "mean", "sum"]
WEIGHTED = [pytest.param(False, id="noweight"), pytest.param(True, id="weight")]
IGNORE = [pytest.param(-100, id="ign-100"), pytest.param(1, id="ign1")]
SMOOTHING = [pytest.param(0.0, id="ls0"), pytest.param(0.2, id="ls0.2")]
DTYPES = ["float64", "float32"]
TOL = {"float64": {"rtol": 1e-9, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}


# -- inputs ---------------------------------------------------------------------------


def _class_axis(shape: tuple) -> int:
    return 1 if len(shape) >= 2 else 0


def _target_shape(shape: tuple) -> tuple:
    ax = _class_axis(shape)
    return shape[:ax] + shape[ax + 1 :]


def _logits(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.normal(scale=1.5, size=shape)


def _index_target(rng: np.random.Generator, shape: tuple, ignore_index: int = -100) -> np.ndarray:
    """Class indices for ``shape`` input; some ignored, at least one counted."""
    C = shape[_class_axis(shape)]
    tshape = _target_shape(shape)
    if not tshape:  # unbatched: one counted class
        return np.array(2 if ignore_index != 2 else 3, dtype=np.int64)
    t = rng.integers(0, C, size=tshape).astype(np.int64)
    flat = t.reshape(-1)
    flat[0] = ignore_index  # ignored (the default -100, or the valid class 1)
    if ignore_index == -100:
        flat[3::3] = -100
    flat[1] = 0  # counted
    return t


def _prob_target(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    ax = _class_axis(shape)
    e = np.exp(rng.normal(size=shape))
    return e / e.sum(axis=ax, keepdims=True)


def _weight(rng: np.random.Generator, C: int, weighted: bool) -> np.ndarray | None:
    return rng.uniform(0.5, 2.0, size=C) if weighted else None


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _rounded(a: np.ndarray | None, dtype: str) -> np.ndarray | None:
    """``a`` rounded to ``dtype`` and back to float64: the oracle sees what we see."""
    return None if a is None else a.astype(dtype).astype(np.float64)


def _put(xp, a, dtype=None):
    return None if a is None else xp.asarray(a, dtype)


def _check(label: str, actual, expected, **kw) -> None:
    """``assert_close`` that says which case of a looped check failed."""
    try:
        assert_close(actual, expected, **kw)
    except AssertionError as e:
        raise AssertionError(f"[{label}] {e}") from None


# -- forward against PyTorch ----------------------------------------------------------
# Each parametrized case loops over the reductions and dtypes (cheap, same inputs).


@pytest.mark.parametrize("label_smoothing", SMOOTHING)
@pytest.mark.parametrize("ignore_index", IGNORE)
@pytest.mark.parametrize("weighted", WEIGHTED)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_matches_torch(xp, rng, shape, weighted, ignore_index, label_smoothing):
    x = _logits(rng, shape)
    y = _index_target(rng, shape, ignore_index)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    for dtype in DTYPES:
        for reduction in REDUCTIONS:
            kw = dict(
                ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
            )
            expected = torch_oracle(
                "cross_entropy", _rounded(x, dtype), y, weight=_rounded(w, dtype), **kw
            )
            out = ce.cross_entropy(xp.asarray(x, dtype), xp.asarray(y), _put(xp, w, dtype), **kw)
            _check(f"{dtype} {reduction}", out, expected, backend=xp, dtype=dtype, **TOL[dtype])


@pytest.mark.parametrize("ignore_index", IGNORE)
@pytest.mark.parametrize("weighted", WEIGHTED)
@pytest.mark.parametrize("shape", SHAPES)
def test_nll_loss_matches_torch(xp, rng, shape, weighted, ignore_index):
    x = _log_softmax(_logits(rng, shape), _class_axis(shape))
    y = _index_target(rng, shape, ignore_index)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    for dtype in DTYPES:
        for reduction in REDUCTIONS:
            kw = dict(ignore_index=ignore_index, reduction=reduction)
            expected = torch_oracle(
                "nll_loss", _rounded(x, dtype), y, weight=_rounded(w, dtype), **kw
            )
            out = ce.nll_loss(xp.asarray(x, dtype), xp.asarray(y), _put(xp, w, dtype), **kw)
            _check(f"{dtype} {reduction}", out, expected, backend=xp, dtype=dtype, **TOL[dtype])


@pytest.mark.parametrize("label_smoothing", SMOOTHING)
@pytest.mark.parametrize("weighted", WEIGHTED)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_probabilities_match_torch(xp, rng, shape, weighted, label_smoothing):
    x = _logits(rng, shape)
    t = _prob_target(rng, shape)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    for dtype in DTYPES:
        for reduction in REDUCTIONS:
            kw = dict(reduction=reduction, label_smoothing=label_smoothing)
            expected = torch_oracle(
                "cross_entropy",
                _rounded(x, dtype),
                _rounded(t, dtype),
                weight=_rounded(w, dtype),
                **kw,
            )
            out = ce.cross_entropy(
                xp.asarray(x, dtype), xp.asarray(t, dtype), _put(xp, w, dtype), **kw
            )
            _check(f"{dtype} {reduction}", out, expected, backend=xp, dtype=dtype, **TOL[dtype])


@pytest.mark.parametrize("probs", [False, True], ids=["indices", "probs"])
def test_axis_last_equals_torch_on_permuted_input(xp, rng, probs):
    x = _logits(rng, (3, 4, 5))  # (N, T, C)
    if probs:
        y = _prob_target(rng, (3, 5, 4)).transpose(0, 2, 1).copy()  # (N, T, C), sums over C
        y_torch = y.transpose(0, 2, 1)
    else:
        y = _index_target(rng, (3, 5, 4))  # (N, T)
        y_torch = y
    w = _weight(rng, 5, True)
    for reduction in REDUCTIONS:
        kw = dict(reduction=reduction, label_smoothing=0.1)
        expected = torch_oracle("cross_entropy", x.transpose(0, 2, 1), y_torch, weight=w, **kw)
        out = ce.cross_entropy(xp.asarray(x), xp.asarray(y), xp.asarray(w), axis=-1, **kw)
        _check(reduction, out, expected, backend=xp, dtype="float64")
        _, g = ce.value_and_grad(ce.cross_entropy)(
            xp.asarray(x), xp.asarray(y), xp.asarray(w), axis=-1, **kw
        )
        g_t = torch_grad("cross_entropy", 0, x.transpose(0, 2, 1), y_torch, weight=w, **kw)[1]
        _check(f"grad {reduction}", g, g_t.transpose(0, 2, 1), backend=xp, dtype="float64")
        if not probs:
            logp = _log_softmax(x, -1)
            expected = torch_oracle(
                "nll_loss", logp.transpose(0, 2, 1), y, weight=w, reduction=reduction
            )
            out = ce.nll_loss(
                xp.asarray(logp), xp.asarray(y), xp.asarray(w), reduction=reduction, axis=2
            )
            _check(f"nll {reduction}", out, expected, backend=xp, dtype="float64")


# -- gradients ------------------------------------------------------------------------


def _torch_reference(x, y, weight, ignore_index, reduction, label_smoothing, z_loss, softcap):
    """``(value, d value.sum() / d x)`` of the z-loss / soft-capped cross-entropy
    written with PyTorch operations, float64."""
    tx = torch.tensor(x, requires_grad=True)
    probs = np.issubdtype(y.dtype, np.floating)
    ty = torch.from_numpy(y.astype(np.float64 if probs else np.int64))
    tw = None if weight is None else torch.from_numpy(weight)
    dim = _class_axis(x.shape)
    capped = tx if softcap is None else softcap * torch.tanh(tx / softcap)
    loss = F.cross_entropy(
        capped,
        ty,
        weight=tw,
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    )
    lse = torch.logsumexp(capped, dim=dim)
    if probs:
        mask = torch.ones_like(lse)
        denom = float(lse.numel())
    else:
        mask = (ty != ignore_index).to(torch.float64)
        safe = torch.where(ty != ignore_index, ty, torch.zeros_like(ty))
        denom = (mask * tw[safe]).sum() if tw is not None else mask.sum()
    total = loss + z_loss * lse**2 * mask
    value = {"none": total, "sum": total.sum(), "mean": total.sum() / denom}[reduction]
    value.sum().backward()
    return value.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("label_smoothing", SMOOTHING)
@pytest.mark.parametrize("ignore_index", IGNORE)
@pytest.mark.parametrize("weighted", WEIGHTED)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_grad_matches_torch(xp, rng, shape, weighted, ignore_index, label_smoothing):
    x = _logits(rng, shape)
    y = _index_target(rng, shape, ignore_index)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    for reduction in REDUCTIONS:
        kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
        value_t, grad_t = torch_grad("cross_entropy", 0, x, y, weight=w, **kw)
        value, g = ce.value_and_grad(ce.cross_entropy)(
            xp.asarray(x), xp.asarray(y), _put(xp, w), **kw
        )
        _check(f"value {reduction}", value, value_t, backend=xp, dtype="float64")
        _check(f"grad {reduction}", g, grad_t, backend=xp, dtype="float64")


@pytest.mark.parametrize("ignore_index", IGNORE)
@pytest.mark.parametrize("weighted", WEIGHTED)
@pytest.mark.parametrize("shape", SHAPES)
def test_nll_loss_grad_matches_torch(xp, rng, shape, weighted, ignore_index):
    x = _log_softmax(_logits(rng, shape), _class_axis(shape))
    y = _index_target(rng, shape, ignore_index)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    for reduction in REDUCTIONS:
        kw = dict(ignore_index=ignore_index, reduction=reduction)
        value_t, grad_t = torch_grad("nll_loss", 0, x, y, weight=w, **kw)
        value, g = ce.value_and_grad(ce.nll_loss)(xp.asarray(x), xp.asarray(y), _put(xp, w), **kw)
        _check(f"value {reduction}", value, value_t, backend=xp, dtype="float64")
        _check(f"grad {reduction}", g, grad_t, backend=xp, dtype="float64")


@pytest.mark.parametrize("axis", [1, -1])
def test_nll_loss_gradient_is_the_only_logits_sized_array(rng, axis):
    """NumPy writes the gradient's nonzeros into zeros (no one-hot matrix): the
    peak above the inputs is the gradient plus per-row arrays."""
    import tracemalloc

    shape = (64, 2000, 3) if axis == 1 else (64, 3, 2000)
    x = _log_softmax(rng.standard_normal(shape), axis % 3).astype(np.float32)
    y = rng.integers(0, 2000, (64, 3))
    y[::5] = -100
    w = rng.random(2000).astype(np.float32)
    f = ce.value_and_grad(ce.nll_loss)
    f(x[:1], y[:1], w, axis=axis)  # first calls import modules: not measured
    tracemalloc.start()
    try:
        value, g = f(x, y, w, axis=axis)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= x.nbytes + 64 * y.size + 32768
    value_t, grad_t = torch_grad("nll_loss", 0, np.moveaxis(x, axis, 1), y, weight=w)
    np.testing.assert_allclose(value, value_t, rtol=1e-6)
    np.testing.assert_allclose(np.moveaxis(g, axis, 1), grad_t, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("label_smoothing", SMOOTHING)
@pytest.mark.parametrize("weighted", WEIGHTED)
@pytest.mark.parametrize("shape", SHAPES)
def test_probability_target_grads_match_torch(xp, rng, shape, weighted, label_smoothing):
    x = _logits(rng, shape)
    t = _prob_target(rng, shape)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    args = (xp.asarray(x), xp.asarray(t), _put(xp, w))
    for reduction in REDUCTIONS:
        kw = dict(reduction=reduction, label_smoothing=label_smoothing)
        value_t, gx_t = torch_grad("cross_entropy", 0, x, t, weight=w, **kw)
        _, gt_t = torch_grad("cross_entropy", 1, x, t, weight=w, **kw)
        close = dict(backend=xp, dtype="float64")

        value, gx = ce.value_and_grad(ce.cross_entropy)(*args, **kw)
        _check(f"value {reduction}", value, value_t, **close)
        _check(f"d/dinput {reduction}", gx, gx_t, **close)

        value, gt = ce.value_and_grad(ce.cross_entropy, argnums=1)(*args, **kw)
        _check(f"value argnums=1 {reduction}", value, value_t, **close)
        _check(f"d/dtarget {reduction}", gt, gt_t, **close)

        value, (gx, gt) = ce.value_and_grad(ce.cross_entropy, argnums=(0, 1))(*args, **kw)
        _check(f"value argnums=(0, 1) {reduction}", value, value_t, **close)
        _check(f"(0, 1) d/dinput {reduction}", gx, gx_t, **close)
        _check(f"(0, 1) d/dtarget {reduction}", gt, gt_t, **close)


def test_grad_float32_matches_torch(xp, rng):
    x, y, w = _logits(rng, (4, 5)), _index_target(rng, (4, 5)), _weight(rng, 5, True)
    _, grad_t = torch_grad(
        "cross_entropy", 0, _rounded(x, "float32"), y, weight=_rounded(w, "float32")
    )
    _, g = ce.value_and_grad(ce.cross_entropy)(
        xp.asarray(x, "float32"), xp.asarray(y), xp.asarray(w, "float32")
    )
    assert_close(g, grad_t, backend=xp, dtype="float32", **TOL["float32"])


# (weighted, ignore_index, label_smoothing) combinations for the keyword-only options
OPTION_CASES = [
    pytest.param(False, -100, 0.0, id="plain"),
    pytest.param(True, -100, 0.2, id="weight-ls"),
    pytest.param(True, 1, 0.0, id="weight-ign1"),
    pytest.param(False, 1, 0.2, id="ign1-ls"),
]


@pytest.mark.parametrize(
    ("z_loss", "softcap"), [(1e-2, None), (0.0, 2.0), (0.3, 1.5)], ids=["z", "cap", "z+cap"]
)
@pytest.mark.parametrize(("weighted", "ignore_index", "label_smoothing"), OPTION_CASES)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[3]])
def test_z_loss_softcap_match_torch_formula(
    xp, rng, shape, weighted, ignore_index, label_smoothing, z_loss, softcap
):
    x = 2 * _logits(rng, shape)  # large enough that the cap bends them
    y = _index_target(rng, shape, ignore_index)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    for reduction in REDUCTIONS:
        kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
        value_t, grad_t = _torch_reference(x, y, w, z_loss=z_loss, softcap=softcap, **kw)
        opts = dict(kw, z_loss=z_loss, softcap=softcap)
        out = ce.cross_entropy(xp.asarray(x), xp.asarray(y), _put(xp, w), **opts)
        _check(f"forward {reduction}", out, value_t, backend=xp, dtype="float64")
        value, g = ce.value_and_grad(ce.cross_entropy)(
            xp.asarray(x), xp.asarray(y), _put(xp, w), **opts
        )
        _check(f"value {reduction}", value, value_t, backend=xp, dtype="float64")
        _check(f"grad {reduction}", g, grad_t, backend=xp, dtype="float64")


def test_z_loss_softcap_probability_targets_match_torch_formula(xp, rng):
    x, t, w = 2 * _logits(rng, (3, 5, 2)), _prob_target(rng, (3, 5, 2)), _weight(rng, 5, True)
    for reduction in REDUCTIONS:
        kw = dict(reduction=reduction, label_smoothing=0.1)
        value_t, grad_t = _torch_reference(x, t, w, -100, z_loss=0.2, softcap=3.0, **kw)
        value, g = ce.value_and_grad(ce.cross_entropy)(
            xp.asarray(x), xp.asarray(t), xp.asarray(w), z_loss=0.2, softcap=3.0, **kw
        )
        _check(f"value {reduction}", value, value_t, backend=xp, dtype="float64")
        _check(f"grad {reduction}", g, grad_t, backend=xp, dtype="float64")


def _fd_close(label, g, x, f):
    try:
        np.testing.assert_allclose(g, finite_difference(f, x), rtol=1e-6, atol=1e-8)
    except AssertionError as e:
        raise AssertionError(f"[{label}] {e}") from None


@pytest.mark.parametrize(("z_loss", "softcap"), [(0.0, None), (0.1, 2.0)], ids=["plain", "z+cap"])
@pytest.mark.parametrize(("weighted", "ignore_index", "label_smoothing"), OPTION_CASES)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[2]])
def test_grads_match_finite_differences(
    rng, shape, weighted, ignore_index, label_smoothing, z_loss, softcap
):
    x = _logits(rng, shape)
    y = _index_target(rng, shape, ignore_index)
    t = _prob_target(rng, shape)
    w = _weight(rng, shape[_class_axis(shape)], weighted)
    logp = _log_softmax(x, _class_axis(shape))
    for reduction in REDUCTIONS:
        kw = dict(weight=w, reduction=reduction, label_smoothing=label_smoothing)
        kw.update(z_loss=z_loss, softcap=softcap)
        ikw = dict(kw, ignore_index=ignore_index)

        _, g = ce.value_and_grad(ce.cross_entropy)(x, y, **ikw)
        _fd_close(f"indices {reduction}", g, x, lambda v, kw=ikw: ce.cross_entropy(v, y, **kw))

        _, (gx, gt) = ce.value_and_grad(ce.cross_entropy, argnums=(0, 1))(x, t, **kw)
        _fd_close(
            f"probs d/dinput {reduction}", gx, x, lambda v, kw=kw: ce.cross_entropy(v, t, **kw)
        )
        _fd_close(
            f"probs d/dtarget {reduction}", gt, t, lambda v, kw=kw: ce.cross_entropy(x, v, **kw)
        )

        if not z_loss:  # nll_loss has neither option: once per case is enough
            nkw = dict(weight=w, ignore_index=ignore_index, reduction=reduction)
            _, g = ce.value_and_grad(ce.nll_loss)(logp, y, **nkw)
            _fd_close(f"nll {reduction}", g, logp, lambda v, kw=nkw: ce.nll_loss(v, y, **kw))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"label_smoothing": 0.2, "ignore_index": 1},
        {"z_loss": 0.1, "softcap": 2.0, "label_smoothing": 0.1},
    ],
    ids=["plain", "ls+ign1", "z+cap"],
)
def test_torch_autograd_through_cross_entropy(rng, reduction, opts):
    x, y, w = (
        _logits(rng, (3, 5, 2)),
        _index_target(rng, (3, 5, 2), opts.get("ignore_index", -100)),
        _weight(rng, 5, True),
    )
    tx = torch.tensor(x, requires_grad=True)
    out = ce.cross_entropy(
        tx, torch.from_numpy(y), torch.from_numpy(w), reduction=reduction, **opts
    )
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    out.sum().backward()
    ref_opts = {
        "ignore_index": opts.get("ignore_index", -100),
        "label_smoothing": opts.get("label_smoothing", 0.0),
        "z_loss": opts.get("z_loss", 0.0),
        "softcap": opts.get("softcap"),
    }
    value_t, grad_t = _torch_reference(x, y, w, reduction=reduction, **ref_opts)
    assert_close(out.detach().numpy(), value_t)
    assert_close(tx.grad.numpy(), grad_t)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_torch_autograd_through_probability_targets_and_nll(rng, reduction):
    x, t, w = _logits(rng, (4, 5)), _prob_target(rng, (4, 5)), _weight(rng, 5, True)
    tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    ce.cross_entropy(
        tx, tt, torch.from_numpy(w), reduction=reduction, label_smoothing=0.2
    ).sum().backward()
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.2)
    assert_close(tx.grad.numpy(), torch_grad("cross_entropy", 0, x, t, **kw)[1])
    assert_close(tt.grad.numpy(), torch_grad("cross_entropy", 1, x, t, **kw)[1])

    logp, y = _log_softmax(x, 1), _index_target(rng, (4, 5))
    tl = torch.tensor(logp, requires_grad=True)
    ce.nll_loss(tl, torch.from_numpy(y), torch.from_numpy(w), reduction=reduction).sum().backward()
    expected = torch_grad("nll_loss", 0, logp, y, weight=w, reduction=reduction)[1]
    assert_close(tl.grad.numpy(), expected)


# -- semantics ------------------------------------------------------------------------


def test_weighted_mean_divides_by_weights_of_counted_targets(xp):
    x = np.array(
        [
            [2.0, 0.5, -1.0, 0.0, 1.0],
            [0.1, 0.2, 0.3, 0.4, 0.5],
            [1.0, -2.0, 0.0, 3.0, 0.0],
            [0.0, 0.0, 3.0, -1.0, 1.0],
        ]
    )
    y = np.array([0, 2, -100, 4])
    w = np.array([0.5, 3.0, 2.0, 1.0, 4.0])
    nll = -_log_softmax(x, 1)[[0, 1, 3], [0, 2, 4]]  # counted rows only
    expected = (0.5 * nll[0] + 2.0 * nll[1] + 4.0 * nll[2]) / (0.5 + 2.0 + 4.0)
    out = ce.cross_entropy(xp.asarray(x), xp.asarray(y), xp.asarray(w))
    assert_close(out, expected, backend=xp, dtype="float64")
    assert_close(out, torch_oracle("cross_entropy", x, y, weight=w), backend=xp)
    out = ce.nll_loss(xp.asarray(_log_softmax(x, 1)), xp.asarray(y), xp.asarray(w))
    assert_close(out, expected, backend=xp, dtype="float64")


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_label_smoothing_with_indices_uses_torch_formula(xp, rng, reduction):
    x, y, eps = _logits(rng, (4, 5)), np.array([0, 3, -100, 4]), 0.3
    w = np.array([1.0, 2.0, 0.5, 4.0, 3.0])
    nlp = -_log_softmax(x, 1)
    counted = y != -100
    ys = np.where(counted, y, 0)
    per_row = (1 - eps) * w[ys] * nlp[np.arange(4), ys] + eps / 5 * (nlp * w).sum(axis=1)
    per_row = np.where(counted, per_row, 0.0)
    expected = per_row if reduction == "none" else per_row.sum() / w[ys][counted].sum()
    out = ce.cross_entropy(
        xp.asarray(x), xp.asarray(y), xp.asarray(w), reduction=reduction, label_smoothing=eps
    )
    assert_close(out, expected, backend=xp, dtype="float64")
    oracle = torch_oracle("cross_entropy", x, y, weight=w, reduction=reduction, label_smoothing=eps)
    assert_close(out, oracle, backend=xp)


def test_probability_targets_mean_over_rows_and_smoothing_mixes_uniform(xp, rng):
    x, t, eps = _logits(rng, (4, 5)), _prob_target(rng, (4, 5)), 0.25
    w = np.array([1.0, 2.0, 0.5, 4.0, 3.0])
    mixed = (1 - eps) * t + eps / 5
    per_row = -(w * mixed * _log_softmax(x, 1)).sum(axis=1)
    out = ce.cross_entropy(xp.asarray(x), xp.asarray(t), xp.asarray(w), label_smoothing=eps)
    assert_close(out, per_row.sum() / 4, backend=xp, dtype="float64")  # rows, not weights
    assert_close(
        out, torch_oracle("cross_entropy", x, t, weight=w, label_smoothing=eps), backend=xp
    )


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_all_targets_ignored(xp, fn):
    x = np.array([[1.0, 2.0, 3.0, 0.0, 1.0], [0.0, -1.0, 5.0, 2.0, 0.5]] * 2)
    y = np.array([-100, -100, -100, -100])
    f = getattr(ce, fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = f(xp.asarray(x), xp.asarray(y))
        total = f(xp.asarray(x), xp.asarray(y), reduction="sum")
        none = f(xp.asarray(x), xp.asarray(y), reduction="none")
        _, g = ce.value_and_grad(f)(xp.asarray(x), xp.asarray(y))
        weighted = f(xp.asarray(x), xp.asarray(y), xp.asarray(np.arange(1.0, 6.0)))
    assert_close(mean, np.nan, backend=xp, dtype="float64")
    assert_close(mean, torch_oracle(fn, x, y), backend=xp)
    assert_close(weighted, np.nan, backend=xp, dtype="float64")
    assert_close(total, 0.0, backend=xp, dtype="float64")
    assert_close(none, np.zeros(4), backend=xp, dtype="float64")
    assert_close(g, np.zeros_like(x), backend=xp, dtype="float64")


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_empty_batch(xp, fn):
    x, y = np.zeros((0, 5)), np.zeros((0,), dtype=np.int64)
    f = getattr(ce, fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = f(xp.asarray(x), xp.asarray(y))
        total = f(xp.asarray(x), xp.asarray(y), reduction="sum")
        none = f(xp.asarray(x), xp.asarray(y), reduction="none")
        _, g = ce.value_and_grad(f)(xp.asarray(x), xp.asarray(y))
    assert_close(mean, np.nan, backend=xp, dtype="float64")
    assert_close(mean, torch_oracle(fn, x, y), backend=xp)
    assert_close(total, 0.0, backend=xp, dtype="float64")
    assert_close(none, np.zeros(0), backend=xp, dtype="float64")
    assert_close(g, np.zeros((0, 5)), backend=xp, dtype="float64")


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_ignore_index_checked_before_range(xp, rng, fn):
    x = _logits(rng, (4, 5))
    f = getattr(ce, fn)
    y = np.array([-100, 4, 0, -100])  # -100 is never out of range
    assert_close(f(xp.asarray(x), xp.asarray(y)), torch_oracle(fn, x, y), backend=xp)
    y = np.array([255, 4, 255, 2])  # a custom ignore_index outside [0, C)
    out = f(xp.asarray(x), xp.asarray(y), ignore_index=255, reduction="none")
    assert_close(out, torch_oracle(fn, x, y, ignore_index=255, reduction="none"), backend=xp)
    assert_close(xp.to_numpy(out)[[0, 2]], [0.0, 0.0])


@pytest.mark.parametrize("int_dtype", ["int8", "int16", "int32", "uint8", "int64"])
def test_any_integer_target_dtype(xp, rng, int_dtype):
    x = _logits(rng, (4, 5))
    y = np.array([4, 0, 3, 3])
    w = _weight(rng, 5, True)
    expected = torch_oracle("cross_entropy", x, y, weight=w)
    assert_close(
        ce.cross_entropy(xp.asarray(x), xp.asarray(y, int_dtype), xp.asarray(w)),
        expected,
        backend=xp,
        dtype="float64",
    )
    expected = torch_oracle("nll_loss", x, y, reduction="none")
    assert_close(
        ce.nll_loss(xp.asarray(x), xp.asarray(y, int_dtype), reduction="none"),
        expected,
        backend=xp,
        dtype="float64",
    )
    if int_dtype != "uint8":  # with an ignored target
        y = np.array([4, -100, 3, 3])
        expected = torch_oracle("cross_entropy", x, y, weight=w)
        assert_close(
            ce.cross_entropy(xp.asarray(x), xp.asarray(y, int_dtype), xp.asarray(w)),
            expected,
            backend=xp,
        )


# one rounding of the float32 result: half an ulp is 2**-11 (float16), 2**-8 (bfloat16)
HALF = [
    pytest.param("numpy", "float16", 1e-3, id="numpy-float16"),
    pytest.param("torch", "float16", 1e-3, id="torch-float16"),
    pytest.param("torch", "bfloat16", 4e-3, id="torch-bfloat16"),
]


def _half(backend: str, a: np.ndarray, dtype: str):
    if backend == "numpy":
        return a.astype(dtype)
    return torch.from_numpy(a.astype(np.float32)).to(getattr(torch, dtype))


def _half_to64(a) -> np.ndarray:
    return (
        a.float().numpy().astype(np.float64)
        if isinstance(a, torch.Tensor)
        else a.astype(np.float64)
    )


@pytest.mark.parametrize(("backend", "dtype", "rtol"), HALF)
def test_half_precision_returns_its_dtype_and_accumulates_in_float32(rng, backend, dtype, rtol):
    # 70000 losses of about ln 3 sum to ~80000 > 65504, float16's max: a float16 sum
    # overflows (PyTorch's CPU float16 mean returns nan here), a float32 one does not
    n = 70000
    xh = _half(backend, rng.normal(scale=0.5, size=(n, 3)), dtype)
    y = rng.integers(0, 3, size=n)
    yb = torch.from_numpy(y) if backend == "torch" else y
    x_seen = _half_to64(xh)  # the float64 mean of exactly these numbers
    per_row = -_log_softmax(x_seen, 1)[np.arange(n), y]
    assert per_row.sum() > 65504
    mean = ce.cross_entropy(xh, yb)
    assert type(mean) is type(xh) and str(mean.dtype).endswith(dtype)
    assert math.isfinite(float(mean))
    np.testing.assert_allclose(_half_to64(mean), per_row.mean(), rtol=rtol)
    total = ce.cross_entropy(xh, yb, reduction="sum")  # beyond float16's range, within bfloat16's
    expected = math.inf if dtype == "float16" else per_row.sum()
    np.testing.assert_allclose(_half_to64(total), expected, rtol=rtol)
    # nll_loss on log-probabilities: the same accumulation
    logp = _half(backend, _log_softmax(x_seen, 1), dtype)
    mean = ce.nll_loss(logp, yb)
    assert type(mean) is type(xh) and str(mean.dtype).endswith(dtype)
    expected = -_half_to64(logp)[np.arange(n), y].mean()
    np.testing.assert_allclose(_half_to64(mean), expected, rtol=rtol)


@pytest.mark.parametrize(("backend", "dtype", "rtol"), HALF)
def test_half_precision_matches_float64_oracle(rng, backend, dtype, rtol):
    x = _logits(rng, (6, 5))
    y = _index_target(rng, (6, 5))
    xh = _half(backend, x, dtype)
    x_seen = _half_to64(xh)
    w = _weight(rng, 5, True)
    wh = _half(backend, w, dtype)
    yb = torch.from_numpy(y) if backend == "torch" else y
    for reduction in REDUCTIONS:
        kw = dict(reduction=reduction, label_smoothing=0.1)
        out = ce.cross_entropy(xh, yb, wh, **kw)
        assert str(out.dtype).endswith(dtype)
        expected = torch_oracle("cross_entropy", x_seen, y, weight=_half_to64(wh), **kw)
        np.testing.assert_allclose(_half_to64(out), expected, rtol=rtol, atol=rtol)
        _, g = ce.value_and_grad(ce.cross_entropy)(xh, yb, wh, **kw)
        assert str(g.dtype).endswith(dtype) and tuple(g.shape) == (6, 5)
        g_expected = torch_grad("cross_entropy", 0, x_seen, y, weight=_half_to64(wh), **kw)[1]
        np.testing.assert_allclose(_half_to64(g), g_expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_keeps_library_and_dtype(xp, rng, dtype):
    x, y, t = _logits(rng, (4, 5)), _index_target(rng, (4, 5)), _prob_target(rng, (4, 5))
    for reduction, shape in [("none", (4,)), ("mean", ()), ("sum", ())]:
        for fn, target in [
            (ce.cross_entropy, xp.asarray(y)),
            (ce.cross_entropy, xp.asarray(t, dtype)),
            (ce.nll_loss, xp.asarray(y)),
        ]:
            out = fn(xp.asarray(x, dtype), target, reduction=reduction)
            assert xp.owns(out) and out.dtype == xp.dtype(dtype) and tuple(out.shape) == shape
            _, g = ce.value_and_grad(fn)(xp.asarray(x, dtype), target, reduction=reduction)
            assert xp.owns(g) and g.dtype == xp.dtype(dtype) and tuple(g.shape) == (4, 5)


def test_inputs_are_never_mutated(xp, rng):
    x = _logits(rng, (3, 5, 2))
    x[0, 1, 0] = -np.inf
    y = _index_target(rng, (3, 5, 2))
    t = _prob_target(rng, (3, 5, 2))
    w = _weight(rng, 5, True)
    arrays = {"x": xp.asarray(x), "y": xp.asarray(y), "t": xp.asarray(t), "w": xp.asarray(w)}
    copies = {k: xp.to_numpy(v).copy() for k, v in arrays.items()}
    kw = dict(reduction="mean", label_smoothing=0.1, z_loss=0.1, softcap=3.0)
    X, Y, T, W = arrays["x"], arrays["y"], arrays["t"], arrays["w"]
    ce.cross_entropy(X, Y, W, **kw)
    ce.cross_entropy(X, T, W, **kw)
    ce.value_and_grad(ce.cross_entropy)(X, Y, W, **kw)
    ce.value_and_grad(ce.cross_entropy, argnums=(0, 1))(X, T, W, **kw)
    ce.nll_loss(X, Y, W)
    ce.value_and_grad(ce.nll_loss)(X, Y, W, reduction="sum")
    for k, v in arrays.items():
        np.testing.assert_array_equal(xp.to_numpy(v), copies[k], err_msg=k)


# -- extreme values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "big"),
    [("float32", 1e4), ("float64", 1e4), ("float64", 1e30)],
    ids=["f32-1e4", "f64-1e4", "f64-1e30"],
)
def test_huge_logits_are_exact(xp, dtype, big):
    # the last three classes sit at -big: exp underflows to exactly 0 there
    x = np.array([[big, 0.0], [big, -big], [-big, big], [0.0, big]])
    x = np.concatenate([x, np.full((4, 3), -big)], axis=1)
    y = np.array([1, 1, 1, 1])
    expected = np.array([big, 2 * big, 0.0, 0.0])
    out = ce.cross_entropy(xp.asarray(x, dtype), xp.asarray(y), reduction="none")
    assert_close(out, expected, backend=xp, dtype=dtype, rtol=0, atol=0)
    value, g = ce.value_and_grad(ce.cross_entropy)(
        xp.asarray(x, dtype), xp.asarray(y), reduction="sum"
    )
    assert_close(value, 3 * big, backend=xp, dtype=dtype, rtol=0, atol=0)
    g_expected = np.zeros((4, 5))
    g_expected[:2, :2] = [[1.0, -1.0], [1.0, -1.0]]  # softmax - one-hot
    assert_close(g, g_expected, backend=xp, dtype=dtype, rtol=0, atol=0)
    single = ce.cross_entropy(xp.asarray(np.array([[big, 0.0]]), dtype), xp.asarray(np.array([1])))
    assert_close(single, big, backend=xp, dtype=dtype, rtol=0, atol=0)


def test_minus_inf_logits(xp):
    inf = np.inf
    x = np.array(
        [
            [-inf, 0.0, 1.0, -inf, -inf],
            [2.0, -inf, -inf, -inf, -inf],
            [-inf, 0.0, 1.0, 0.0, 0.0],  # target class at -inf: infinite loss
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    y = np.array([2, 0, 0, 3])
    out = ce.cross_entropy(xp.asarray(x), xp.asarray(y), reduction="none")
    expected = [math.log1p(math.exp(-1.0)), 0.0, inf, math.log(5)]
    assert_close(out, expected, backend=xp, dtype="float64", rtol=1e-15, atol=0)
    assert_close(out, torch_oracle("cross_entropy", x, y, reduction="none"), backend=xp)
    # the gradient stays finite (softmax - one-hot), also on the infinite row
    _, g = ce.value_and_grad(ce.cross_entropy)(xp.asarray(x), xp.asarray(y), reduction="sum")
    _, g_t = torch_grad("cross_entropy", 0, x, y, reduction="sum")
    assert np.isfinite(g_t).all()
    assert_close(g, g_t, backend=xp, dtype="float64")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float16_large_logits_stay_finite(backend):
    x = np.array([[60000.0, 0.0], [60000.0, 60000.0], [0.0, 60000.0], [-60000.0, 60000.0]])
    y = np.array([1, 1, 1, 1])
    xh = _half(backend, x, "float16")
    yb = torch.from_numpy(y) if backend == "torch" else y
    out = ce.cross_entropy(xh, yb, reduction="none")
    assert str(out.dtype).endswith("float16")
    np.testing.assert_allclose(_half_to64(out), [60000.0, math.log(2), 0.0, 0.0], rtol=1e-3, atol=0)
    out = ce.cross_entropy(xh, yb)  # the mean, 15000.17, is finite in float16
    assert str(out.dtype).endswith("float16")
    np.testing.assert_allclose(_half_to64(out), (60000.0 + math.log(2)) / 4, rtol=1e-3)


# -- the seeds' worked examples -------------------------------------------------------


def test_seed_torch_rand_100_gives_1_5230():
    torch.manual_seed(100)
    predict = torch.rand(4, 5).numpy()
    label = np.array([4, 3, 3, 2])
    expected = F.cross_entropy(torch.from_numpy(predict), torch.from_numpy(label)).item()
    assert round(expected, 4) == 1.5230
    results = {
        "cross_entropy": ce.cross_entropy(predict, label),
        "CrossEntropyLoss": cenn.CrossEntropyLoss()(predict, label),
        "NLLLoss(LogSoftmax)": cenn.NLLLoss()(cenn.LogSoftmax(dim=1)(predict), label),
        "NLLLoss(log(Softmax))": cenn.NLLLoss()(np.log(cenn.Softmax(dim=1)(predict)), label),
        "hand": -np.mean(
            np.take_along_axis(np.log(ce.softmax(predict, axis=1)), label[:, None], axis=1)
        ),
    }
    for name, value in results.items():
        assert value.dtype == np.float32, name
        assert round(float(value), 4) == 1.5230, name
        np.testing.assert_allclose(float(value), expected, rtol=1e-6, err_msg=name)


def test_seed_large_logits_cross_entropy_equals_nll_of_log_softmax():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 784, generator=gen, dtype=torch.float64)
    w = torch.randn(10, 784, generator=gen, dtype=torch.float64)
    logits = x @ w.t()
    target = torch.tensor([3])
    expected = F.cross_entropy(logits, target).item()
    assert expected == pytest.approx(
        F.nll_loss(torch.log(F.softmax(logits, dim=1)), target).item(), rel=1e-12
    )
    logits_np, target_np = logits.numpy(), target.numpy()
    np.testing.assert_allclose(float(ce.cross_entropy(logits_np, target_np)), expected, rtol=1e-12)
    via_nll = ce.nll_loss(np.log(ce.softmax(logits_np, axis=1)), target_np)
    np.testing.assert_allclose(float(via_nll), expected, rtol=1e-12)
    np.testing.assert_allclose(ce.cross_entropy(logits, target).item(), expected, rtol=1e-12)


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, -1, 7])
@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_target_out_of_range(xp, fn, bad):
    x = np.zeros((4, 5))
    y = np.array([0, bad, 4, 2])
    with pytest.raises(ce.TargetIndexError, match=rf"Target {bad} is out of bounds") as info:
        getattr(ce, fn)(xp.asarray(x), xp.asarray(y))
    assert isinstance(info.value, IndexError) and isinstance(info.value, ValueError)
    with pytest.raises(IndexError, match=rf"Target {bad} "):
        getattr(ce, fn)(xp.asarray(x), xp.asarray(y), ignore_index=1)


def test_target_index_error_is_index_and_value_error():
    assert issubclass(ce.TargetIndexError, IndexError)
    assert issubclass(ce.TargetIndexError, ValueError)
    with pytest.raises(ValueError, match="255"):
        ce.cross_entropy(np.zeros((2, 3)), np.array([0, 255]))


@pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
def test_argument_errors(fn):
    f = getattr(ce, fn)
    x, y = np.zeros((4, 5)), np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"\(4\).*\(3\)"):
        f(x, y[:3])
    with pytest.raises(ValueError, match=r"weight.*length 5.*\(4,\)"):
        f(x, y, np.ones(4))
    with pytest.raises(ValueError, match=r"reduction.*'avg'"):
        f(x, y, reduction="avg")
    with pytest.raises(ce.DTypeError, match=r"target.*integer.*float64.*\(4,\)"):
        f(x, y.astype(np.float64))
    with pytest.raises(ce.DTypeError, match=r"target.*integer.*float32.*\(4, 3\)"):
        f(x, np.full((4, 3), 1 / 3, dtype=np.float32))  # neither indices nor input's shape
    if fn == "nll_loss":  # no probability targets: floats of input's shape are wrong too
        with pytest.raises(ce.DTypeError, match=r"target.*integer.*\(4, 5\)"):
            f(x, np.full((4, 5), 0.2))
    with pytest.raises(ce.DTypeError, match=r"input.*floating.*int64"):
        f(np.zeros((4, 5), dtype=np.int64), y)
    with pytest.raises(ValueError, match=r"axis=2.*2 dimension"):
        f(x, y, axis=2)
    with pytest.raises(ValueError, match=r"axis=-3"):
        f(x, y, axis=-3)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_label_smoothing_out_of_range(value):
    with pytest.raises(ValueError, match=rf"label_smoothing.*{value}"):
        ce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=value)


def test_z_loss_and_softcap_errors():
    x, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match=r"z_loss.*-0.5"):
        ce.cross_entropy(x, y, z_loss=-0.5)
    for cap in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"softcap.*{cap}"):
            ce.cross_entropy(x, y, softcap=cap)


def test_grad_with_respect_to_class_indices_raises():
    x, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="class indices"):
        ce.value_and_grad(ce.cross_entropy, argnums=1)(x, y)
    with pytest.raises(ValueError, match="'target'"):
        ce.value_and_grad(ce.nll_loss, argnums=1)(x, y)


# -- misuse warning -------------------------------------------------------------------


def test_softmax_output_as_logits_warns(xp, rng):
    x = _logits(rng, (4, 5))
    y = np.array([0, 1, 2, 3])
    probs = xp.asarray(np.exp(_log_softmax(x, 1)))
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning, match="logits"):
        ce.cross_entropy(probs, xp.asarray(y))
    assert issubclass(ce.ProbabilitiesAsLogitsWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ce.cross_entropy(xp.asarray(x), xp.asarray(y))
        ce.value_and_grad(ce.cross_entropy)(probs, xp.asarray(y))


# -- normalizer (gradient accumulation) and temperature ------------------------------

# a step of 37 rows split into 4 micro-batches with uneven counts of counted targets
MICRO_BATCHES = [(0, 5), (5, 18), (18, 26), (26, 37)]


def _step(rng, c=6):
    x = rng.normal(size=(37, c)) * 2
    y = rng.integers(0, c, size=37)
    y[[1, 2, 3, 9, 20, 21, 22, 23, 30]] = -100  # 3, 1, 4 and 1 ignored per micro-batch
    return x, y


class TestNormalizer:
    @pytest.mark.parametrize("weighted", WEIGHTED)
    @pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
    def test_micro_batches_add_up_to_the_step_mean(self, xp, rng, fn, weighted):
        x, y = _step(rng)
        if fn == "nll_loss":
            x = _log_softmax(x, 1)
        w = _weight(rng, 6, weighted)
        counted = y != -100
        total = float(counted.sum() if w is None else w[y[counted]].sum())
        f = getattr(ce, fn)
        whole, g_whole = ce.value_and_grad(f)(xp.asarray(x), xp.asarray(y), _put(xp, w))
        values, grads = [], []
        for a, b in MICRO_BATCHES:
            v, g = ce.value_and_grad(f)(
                xp.asarray(x[a:b]), xp.asarray(y[a:b]), _put(xp, w), normalizer=total
            )
            values.append(float(xp.to_numpy(v)))
            grads.append(xp.to_numpy(g))
        # each micro-batch's own 'mean' does not add up: the counts differ
        own = sum(float(xp.to_numpy(f(xp.asarray(x[a:b]), xp.asarray(y[a:b]), _put(xp, w))))
                  for a, b in MICRO_BATCHES)  # fmt: skip
        assert abs(own / 4 - float(xp.to_numpy(whole))) > 1e-3
        assert_close(sum(values), xp.to_numpy(whole), rtol=1e-12, atol=1e-12)
        assert_close(np.concatenate(grads), xp.to_numpy(g_whole), rtol=1e-12, atol=1e-12)
        expected = torch_oracle(fn, x, y, weight=w, reduction="sum") / total
        assert_close(sum(values), expected, rtol=1e-12)

    def test_torch_autograd_and_kernel_paths(self, rng):
        x, y = _step(rng)
        tx = torch.tensor(x, requires_grad=True)
        for a, b in MICRO_BATCHES:  # gradients accumulate in tx.grad
            ce.cross_entropy(tx[a:b], torch.from_numpy(y[a:b]), normalizer=28).backward()
        whole = torch.tensor(x, requires_grad=True)
        F.cross_entropy(whole, torch.from_numpy(y)).backward()
        assert_close(tx.grad.numpy(), whole.grad.numpy(), rtol=1e-12, atol=1e-14)
        with ce.kernels.disabled():
            v, g = ce.value_and_grad(ce.cross_entropy)(x, y, normalizer=7.0, z_loss=0.1)
        v2, g2 = ce.value_and_grad(ce.cross_entropy)(x, y, normalizer=7.0, z_loss=0.1)
        vs, gs = ce.value_and_grad(ce.cross_entropy)(x, y, reduction="sum", z_loss=0.1)
        assert_close(v, vs / 7.0)
        assert_close(g, gs / 7.0)
        assert_close(v2, v)
        assert_close(g2, g)

    def test_probability_targets(self, rng):
        x, t = _logits(rng, (4, 5)), _prob_target(rng, (4, 5))
        v, g = ce.value_and_grad(ce.cross_entropy, (0, 1))(x, t, normalizer=10)
        vs, gs = ce.value_and_grad(ce.cross_entropy, (0, 1))(x, t, reduction="sum")
        assert_close(v, vs / 10)
        assert_close(g[0], gs[0] / 10)
        assert_close(g[1], gs[1] / 10)

    @pytest.mark.parametrize(
        ("kw", "match"),
        [
            ({"normalizer": 0}, "positive finite number.*got 0"),
            ({"normalizer": -3.0}, "positive finite number.*got -3.0"),
            ({"normalizer": float("inf")}, "positive finite number.*got inf"),
            ({"normalizer": np.array([2.0, 3.0])}, r"positive finite number.*array\(\[2., 3.\]\)"),
            ({"normalizer": "12"}, "positive finite number.*got '12'"),
            ({"normalizer": 4, "reduction": "sum"}, "needs reduction='mean'.*got reduction='sum'"),
            ({"normalizer": 4, "reduction": "none"}, "needs reduction='mean'"),
        ],
    )
    @pytest.mark.parametrize("fn", ["cross_entropy", "nll_loss"])
    def test_bad_normalizer(self, fn, kw, match):
        with pytest.raises(ValueError, match=match):
            getattr(ce, fn)(np.zeros((2, 3)), np.array([0, 1]), **kw)

    @pytest.mark.parametrize("probs", [False, True], ids=["indices", "probabilities"])
    def test_with_where_and_temperature(self, rng, probs):
        x = _logits(rng, (6, 5))
        t = _prob_target(rng, (6, 5)) if probs else _index_target(rng, (6, 5))
        mask = np.array([True, False, True, True, False, True])
        kw = {"where": mask, "temperature": 1.5}
        value, g = ce.value_and_grad(ce.cross_entropy)(x, t, normalizer=9.0, **kw)
        total, g_sum = ce.value_and_grad(ce.cross_entropy)(x, t, reduction="sum", **kw)
        assert_close(value, total / 9.0)
        assert_close(g, g_sum / 9.0)
        assert not np.any(g[~mask])

    def test_zero_d_arrays(self, rng):
        x, y = _step(rng)
        expected = ce.cross_entropy(x, y, normalizer=5.0)
        assert_close(ce.cross_entropy(x, y, normalizer=np.int64(5)), expected)
        assert_close(ce.cross_entropy(x, y, normalizer=torch.tensor(5)), expected)


class TestTemperature:
    @pytest.mark.parametrize("temperature", [0.5, 2.0])
    @pytest.mark.parametrize("shape", SHAPES)
    def test_matches_torch_on_divided_logits(self, xp, rng, shape, temperature):
        x = _logits(rng, shape) * 3
        y = _index_target(rng, shape)
        w = _weight(rng, 5, True)
        kw = dict(weight=w, label_smoothing=0.1)
        for reduction in REDUCTIONS:
            value_t, grad_t = torch_grad("cross_entropy", 0, x / temperature, y,
                                         reduction=reduction, **kw)  # fmt: skip
            value, g = ce.value_and_grad(ce.cross_entropy)(
                xp.asarray(x), xp.asarray(y), _put(xp, w), reduction=reduction,
                label_smoothing=0.1, temperature=temperature,
            )  # fmt: skip
            _check(f"value {reduction}", value, value_t, backend=xp, dtype="float64")
            _check(f"grad {reduction}", g, grad_t / temperature, backend=xp, dtype="float64")

    @pytest.mark.parametrize("kernels", [True, False], ids=["kernel", "reference"])
    def test_with_softcap_z_loss_and_probabilities(self, rng, kernels):
        x = _logits(rng, (6, 40)) * 4
        t = _prob_target(rng, (6, 40))
        temp, cap, z = 1.7, 3.0, 0.05
        tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
        y = cap * torch.tanh(tx / cap) / temp
        ref = (F.cross_entropy(y, tt, reduction="none") + z * torch.logsumexp(y, 1) ** 2).mean()
        ref.backward()
        context = ce.kernels.disabled() if not kernels else warnings.catch_warnings()
        with context:
            value, (gx, gt) = ce.value_and_grad(ce.cross_entropy, (0, 1))(
                x, t, softcap=cap, z_loss=z, temperature=temp
            )
            value_i, gx_i = ce.value_and_grad(ce.cross_entropy)(
                x, t.argmax(1), softcap=cap, z_loss=z, temperature=temp
            )
        assert_close(value, ref.detach().numpy())
        assert_close(gx, tx.grad.numpy())
        assert_close(gt, tt.grad.numpy())
        fd = finite_difference(
            lambda a: ce.cross_entropy(a, t.argmax(1), softcap=cap, z_loss=z, temperature=temp), x
        )
        assert_close(gx_i, fd, rtol=1e-6, atol=1e-8)  # central differences of step 1e-6

    @pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
    def test_jax_with_many_classes(self, rng, jit):
        # 600 classes, 18000 logits: where the fused kernel is an XLA custom call, which has neither
        # option; the call takes the portable path, eagerly and under jit
        jax = pytest.importorskip("jax")
        from tests.support import jax_x64

        x, y = _logits(rng, (30, 600)) * 3, _index_target(rng, (30, 600))  # 18000 logits
        y[2] = -100
        for kw in ({"temperature": 0.6}, {"normalizer": 4.0}, {"temperature": 2.5, "normalizer": 9}):
            value_t, grad_t = torch_grad("cross_entropy", 0, x / kw.get("temperature", 1.0), y,
                                         reduction="sum" if "normalizer" in kw else "mean")  # fmt: skip
            if "normalizer" in kw:
                value_t, grad_t = value_t / kw["normalizer"], grad_t / kw["normalizer"]
            with jax_x64():
                vg = jax.value_and_grad(lambda a, kw=kw: ce.cross_entropy(a, jax.numpy.asarray(y), **kw))
                value, g = (jax.jit(vg) if jit else vg)(jax.numpy.asarray(x))
            assert_close(np.asarray(value), value_t)
            assert_close(np.asarray(g), grad_t / kw.get("temperature", 1.0))

    def test_torch_autograd(self, rng):
        x, y = _logits(rng, (3, 5, 2)), _index_target(rng, (3, 5, 2))
        tx = torch.tensor(x, requires_grad=True)
        ce.cross_entropy(tx, torch.from_numpy(y), temperature=0.3, softcap=5.0).backward()
        ref = torch.tensor(x, requires_grad=True)
        F.cross_entropy(5.0 * torch.tanh(ref / 5.0) / 0.3, torch.from_numpy(y)).backward()
        assert_close(tx.grad.numpy(), ref.grad.numpy())

    @pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), "hot", True])
    def test_bad_temperature(self, temperature):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            ce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), temperature=temperature)
