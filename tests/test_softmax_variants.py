"""Focal, poly-1 and generalized cross-entropy, and the where= masks of the softmax family."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from tests.support import assert_close, finite_difference, torch_oracle

REDUCTIONS = ["none", "mean", "sum"]


def _log_softmax(x):
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _terms(name, lp, param):
    """Naive float64 f(log p) of each loss."""
    p = np.exp(lp)
    if name == "focal":
        return -((1 - p) ** param) * lp
    if name == "poly1":
        return -lp + param * (1 - p)
    return (1 - p**param) / param


def _naive(name, x, t, param, w=None, reduction="mean", ignore=-100):
    """Per-row sum_c tau_c f(log p_c) with PyTorch's weighted mean, rows along axis 0, classes last."""
    lp = _log_softmax(x)
    f = _terms(name, lp, param)
    if t.ndim == x.ndim:  # probabilities
        tau = t * (1 if w is None else w)
        loss = np.where(tau != 0, tau * f, 0).sum(-1)
        denom = loss.size
    else:
        valid = t != ignore
        safe = np.where(valid, t, 0)
        wt = np.where(valid, 1.0 if w is None else w[safe], 0.0)
        loss = wt * np.take_along_axis(f, safe[..., None], -1)[..., 0]
        loss = np.where(valid, loss, 0.0)
        denom = wt.sum()
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / denom


FUNCS = {"focal": (ce.focal_cross_entropy, 2.0), "poly1": (ce.poly1_cross_entropy, 1.0),
         "gce": (ce.generalized_cross_entropy, 0.7)}  # fmt: skip


@pytest.mark.parametrize("name", list(FUNCS))
class TestLogProbLosses:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_index_targets_weights_ignore(self, xp, rng, name, reduction):
        fn, param = FUNCS[name]
        x, y = rng.normal(0, 2, size=(7, 5)), rng.integers(0, 5, size=7)
        y[2] = -100
        w = rng.uniform(0.2, 2.0, size=5)
        got = fn(xp.asarray(x), xp.asarray(y), param, xp.asarray(w), reduction=reduction)
        assert_close(got, _naive(name, x, y, param, w, reduction), backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_probability_targets_and_class_axis(self, xp, rng, name, reduction):
        fn, param = FUNCS[name]
        x, t = rng.normal(0, 2, size=(3, 5, 4)), rng.dirichlet(np.ones(5), size=(3, 4))
        got = fn(xp.asarray(x), xp.asarray(np.moveaxis(t, -1, 1)), param, reduction=reduction)
        assert_close(got, _naive(name, np.moveaxis(x, 1, -1), t, param, reduction=reduction), backend=xp, dtype="float64")
        last = fn(xp.asarray(np.moveaxis(x, 1, -1)), xp.asarray(t), param, reduction=reduction, axis=-1)
        assert_close(last, _naive(name, np.moveaxis(x, 1, -1), t, param, reduction=reduction), backend=xp, dtype="float64")

    @pytest.mark.parametrize("target", ["index", "probs"])
    def test_gradient(self, rng, name, target):
        fn, param = FUNCS[name]
        x = rng.normal(0, 2, size=(4, 3))
        t = rng.integers(0, 3, size=4) if target == "index" else rng.dirichlet(np.ones(3), size=4)
        w = np.array([0.5, 1.0, 2.0])
        value, g = ce.value_and_grad(fn)(x, t, param, w)
        assert_close(value, fn(x, t, param, w))
        assert_close(g, finite_difference(lambda z: fn(z, t, param, w), x), rtol=1e-6, atol=1e-9)

    def test_torch_autograd_and_float32(self, rng, name):
        torch = pytest.importorskip("torch")
        fn, param = FUNCS[name]
        x, y = rng.normal(0, 2, size=(4, 3)), rng.integers(0, 3, size=4)
        xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        loss = fn(xt, torch.tensor(y), param)
        loss.backward()
        _, g = ce.value_and_grad(fn)(x, y, param)
        assert loss.dtype == torch.float32
        np.testing.assert_allclose(xt.grad.numpy(), g, rtol=1e-5, atol=1e-6)

    def test_where_equals_dropping_classes_and_rows(self, rng, name):
        fn, param = FUNCS[name]
        x, t = rng.normal(size=(4, 6)), rng.dirichlet(np.ones(6), size=4)
        keep = np.array([1, 1, 0, 1, 0, 1], dtype=bool)
        where = np.broadcast_to(keep, x.shape).copy()
        where[2] = False  # a row with nothing: no loss, no count
        t_kept = t[:, keep] / t[:, keep].sum(-1, keepdims=True)
        t_full = np.zeros_like(t)
        t_full[:, keep] = t_kept
        got = fn(x, t_full, param, reduction="none", axis=-1, where=where)
        expected = _naive(name, x[:, keep], t_kept, param, reduction="none")
        expected[2] = 0.0
        assert_close(got, expected)
        mean = fn(x, t_full, param, axis=-1, where=where)
        assert_close(mean, expected.sum() / 3)
        _, g = ce.value_and_grad(fn)(x, t_full, param, where=where, axis=-1)
        assert np.all(g[:, ~keep] == 0) and np.all(g[2] == 0)
        assert_close(g, finite_difference(lambda z: fn(z, t_full, param, where=where, axis=-1), x), rtol=1e-6, atol=1e-9)


def test_gamma_zero_and_epsilon_zero_are_cross_entropy(rng):
    x, y = rng.normal(0, 3, size=(6, 4)), rng.integers(0, 4, size=6)
    w = rng.uniform(0.5, 2, size=4)
    expected = torch_oracle("cross_entropy", x, y, weight=w)
    assert_close(ce.focal_cross_entropy(x, y, 0.0, w), expected)
    assert_close(ce.poly1_cross_entropy(x, y, 0.0, w), expected)
    # q -> 0: generalized cross-entropy tends to cross-entropy
    assert_close(ce.generalized_cross_entropy(x, y, 1e-7, w), expected, rtol=1e-5)
    # q = 1: the mean absolute error 1 - p_y
    p = np.exp(_log_softmax(x))[np.arange(6), y]
    assert_close(ce.generalized_cross_entropy(x, y, 1.0, reduction="none"), 1 - p)


def test_focal_confident_rows_keep_precision():
    # 1 - p_y = 1e-6 / (1 + 1e-6): (1 - p)^2 * -log p, as exact as log_softmax is
    x = np.array([[0.0, -np.log(1e6)]])
    got = ce.focal_cross_entropy(x, np.array([0]), reduction="none")
    q = 1e-6 / (1 + 1e-6)
    np.testing.assert_allclose(got, [q**2 * np.log1p(1e-6)], rtol=1e-9)
    _, g = ce.value_and_grad(ce.focal_cross_entropy)(x, np.array([0]), 0.5)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize(("fn", "arg", "bad", "match"), [
    (ce.focal_cross_entropy, "gamma", -1.0, r"gamma must lie in \[0.0"),
    (ce.poly1_cross_entropy, "epsilon", -2.0, r"epsilon must lie in \[-1.0"),
    (ce.generalized_cross_entropy, "q", 0.0, r"q must lie in \(0.0, 1.0\]"),
    (ce.generalized_cross_entropy, "q", 1.5, r"q must lie in \(0.0, 1.0\]"),
])  # fmt: skip
def test_bad_parameters_raise(fn, arg, bad, match):
    with pytest.raises(ValueError, match=match):
        fn(np.zeros((2, 3)), np.array([0, 1]), **{arg: bad})


class TestCrossEntropyWhere:
    def test_per_row_and_per_logit_masks(self, xp, rng):
        x, y = rng.normal(size=(5, 4)), rng.integers(0, 4, size=5)
        rows = np.array([True, False, True, True, False])
        got = ce.cross_entropy(xp.asarray(x), xp.asarray(y), where=xp.asarray(rows))
        assert_close(got, torch_oracle("cross_entropy", x[rows], y[rows]), backend=xp, dtype="float64")
        keep = np.array([True, True, False, True])
        y2 = np.array([0, 1, 3, 3, 0])
        per_logit = np.broadcast_to(keep, x.shape)
        got = ce.cross_entropy(xp.asarray(x), xp.asarray(y2), where=xp.asarray(per_logit), reduction="none")
        remap = np.array([0, 1, -1, 2])[y2]
        assert_close(got, torch_oracle("cross_entropy", x[:, keep], remap, reduction="none"), backend=xp, dtype="float64")

    def test_masked_target_class_is_infinite(self):
        got = ce.cross_entropy(np.zeros((1, 3)), np.array([2]), where=np.array([[True, True, False]]))
        assert got == np.inf

    def test_gradient_and_k_dim(self, rng):
        x, y = rng.normal(size=(2, 3, 4)), rng.integers(0, 3, size=(2, 4))
        where = rng.integers(0, 2, size=(2, 3, 4)).astype(bool)
        where[:, y[0, 0], :] = True
        value, g = ce.value_and_grad(ce.cross_entropy)(x, y, where=where, z_loss=0.1)
        f = lambda z: ce.cross_entropy(z, y, where=where, z_loss=0.1)  # noqa: E731
        assert_close(value, f(x))
        finite = np.isfinite(value)
        if finite:
            assert_close(g, finite_difference(f, x), rtol=1e-6, atol=1e-9)
            assert np.all(g[~where] == 0)

    def test_all_rows_masked_mean_is_nan_with_zero_gradient(self):
        x, t = np.ones((2, 3)), np.full((2, 3), 1 / 3)
        value, g = ce.value_and_grad(ce.cross_entropy)(x, t, where=np.zeros(2, bool))
        assert np.isnan(value) and np.all(g == 0)

    def test_bad_masks_raise(self):
        with pytest.raises(ValueError, match=r"where has shape \(3,\).*\(2, 3\).*\(2,\)"):
            ce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), where=np.ones(3, bool))
        with pytest.raises(ValueError, match="label_smoothing=0.1 cannot be combined with where="):
            ce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=0.1, where=np.ones(2, bool))
        with pytest.raises(TypeError, match="where must be a boolean"):
            ce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), where=np.ones(2))
