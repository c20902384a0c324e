"""Margin losses: multi-class ``multi_margin_loss`` and binary ``hinge_loss``."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from tests.support import assert_close, finite_difference, torch_grad, torch_oracle

REDUCTIONS = ["none", "mean", "sum"]
TOL = {"float64": {"rtol": 1e-9, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}


def _away_from_kinks(rng, shape, margin, target, min_gap=0.05):
    """Scores whose every hinge ``margin - x_y + x_i`` is at least ``min_gap`` from 0."""
    while True:
        x = rng.normal(0, 1, size=shape)
        xb = x.reshape(-1, shape[-1])
        z = margin - np.take_along_axis(xb, np.reshape(target, (-1, 1)), 1) + xb
        z[np.arange(len(xb)), np.reshape(target, -1)] = 1.0  # the target itself does not count
        if np.all(np.abs(z) > min_gap):
            return x


def _naive_multi_margin(x, y, p, margin, w):
    """Per-sample loss in float64 loops: w[y]/C * sum_{i != y} max(0, margin - x_y + x_i)^p."""
    n, c = x.shape
    out = np.zeros(n)
    for k in range(n):
        for i in range(c):
            if i != y[k]:
                out[k] += max(0.0, margin - x[k, y[k]] + x[k, i]) ** p
        out[k] *= (1.0 if w is None else w[y[k]]) / c
    return out


class TestMultiMarginLoss:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("p", [1, 2])
    @pytest.mark.parametrize("margin", [1.0, 0.3, 2.5])
    def test_matches_torch(self, xp, rng, reduction, p, margin):
        x, y = rng.normal(0, 1, size=(6, 4)), rng.integers(0, 4, size=6)
        value, g = ce.value_and_grad(ce.multi_margin_loss)(
            xp.asarray(x), xp.asarray(y), p, margin, reduction=reduction
        )
        ev, eg = torch_grad("multi_margin_loss", 0, x, y, p=p, margin=margin, reduction=reduction)
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(g, eg, backend=xp, dtype="float64")
        plain = ce.multi_margin_loss(xp.asarray(x), xp.asarray(y), p, margin, reduction=reduction)
        assert_close(plain, ev, backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("p", [1, 2])
    def test_weight_after_the_power(self, xp, rng, reduction, p):
        x, y = rng.normal(0, 1, size=(6, 4)), rng.integers(0, 4, size=6)
        w = rng.uniform(0.2, 3.0, size=4)
        value, g = ce.value_and_grad(ce.multi_margin_loss)(
            xp.asarray(x), xp.asarray(y), p, 0.8, xp.asarray(w), reduction
        )
        kw = {"p": p, "margin": 0.8, "weight": w, "reduction": reduction}
        ev, eg = torch_grad("multi_margin_loss", 0, x, y, **kw)
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(g, eg, backend=xp, dtype="float64")
        naive = _naive_multi_margin(x, y, p, 0.8, w)
        expected = {"none": naive, "sum": naive.sum(), "mean": naive.mean()}[reduction]
        assert_close(value, expected, backend=xp, dtype="float64")

    def test_hand_example(self, xp):
        # target 3: hinges 1 - 0.8 + (0.1, 0.2, 0.4) = 0.3, 0.4, 0.6; sum / C = 1.3 / 4
        out = ce.multi_margin_loss(xp.asarray(np.array([[0.1, 0.2, 0.4, 0.8]])), xp.asarray([3]))
        assert_close(out, 0.325, backend=xp, dtype="float64")
        sq = ce.multi_margin_loss(xp.asarray(np.array([[0.1, 0.2, 0.4, 0.8]])), xp.asarray([3]), 2)
        assert_close(sq, (0.09 + 0.16 + 0.36) / 4, backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_float32(self, xp, rng, reduction):
        x = rng.normal(0, 1, size=(5, 3)).astype(np.float32).astype(np.float64)
        y = rng.integers(0, 3, size=5)
        out = ce.multi_margin_loss(xp.asarray(x, "float32"), xp.asarray(y), reduction=reduction)
        expected = torch_oracle("multi_margin_loss", x, y, reduction=reduction)
        assert_close(out, expected, backend=xp, dtype="float32", **TOL["float32"])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("p", [1, 2])
    def test_unbatched(self, xp, rng, reduction, p):
        x = rng.normal(0, 1, size=5)
        value, g = ce.value_and_grad(ce.multi_margin_loss)(
            xp.asarray(x), xp.asarray(np.array(2)), p, reduction=reduction
        )
        ev, eg = torch_grad("multi_margin_loss", 0, x, np.array(2), p=p, reduction=reduction)
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(g, eg, backend=xp, dtype="float64")

    def test_unbatched_python_int_target(self):
        x = np.array([0.1, 0.5, 0.3])
        expected = torch_oracle("multi_margin_loss", x, np.array(1))
        assert_close(ce.multi_margin_loss(x, 1), expected)

    def test_empty_batch(self, xp):
        # the mathematical values; PyTorch returns an uninitialised number for 'mean'
        x, y = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
        mean, g = ce.value_and_grad(ce.multi_margin_loss)(xp.asarray(x), xp.asarray(y))
        assert_close(mean, np.nan, backend=xp, dtype="float64")
        assert_close(g, np.zeros((0, 4)), backend=xp, dtype="float64")
        total = ce.multi_margin_loss(xp.asarray(x), xp.asarray(y), reduction="sum")
        assert_close(total, 0.0, backend=xp, dtype="float64")
        none = ce.multi_margin_loss(xp.asarray(x), xp.asarray(y), reduction="none")
        assert_close(none, np.zeros(0), backend=xp, dtype="float64")

    @pytest.mark.parametrize("p", [1, 2])
    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_grad_vs_finite_differences(self, xp, rng, p, reduction):
        y = rng.integers(0, 4, size=3)
        x = _away_from_kinks(rng, (3, 4), 1.0, y)
        w = rng.uniform(0.5, 2.0, size=4)

        def f(a):
            out = ce.multi_margin_loss(
                xp.asarray(a), xp.asarray(y), p, 1.0, xp.asarray(w), reduction
            )
            return xp.to_numpy(out)

        g = ce.grad(ce.multi_margin_loss)(
            xp.asarray(x), xp.asarray(y), p, 1.0, xp.asarray(w), reduction
        )
        assert_close(g, finite_difference(f, x), backend=xp, rtol=1e-6, atol=1e-8)

    def test_p3_raises(self):
        with pytest.raises(ValueError, match="p must be 1 or 2, got 3"):
            ce.multi_margin_loss(np.zeros((2, 3)), np.array([0, 1]), p=3)

    def test_3d_input_raises(self, xp):
        with pytest.raises(ValueError, match=r"\(N, C\) or \(C,\).*\(2, 3, 4\)"):
            ce.multi_margin_loss(
                xp.asarray(np.zeros((2, 3, 4))), xp.asarray(np.zeros((2, 4), dtype=np.int64))
            )

    @pytest.mark.parametrize("bad", [3, -1, 7])
    def test_target_out_of_range(self, xp, bad):
        with pytest.raises(ce.TargetIndexError, match=rf"Target {bad} is out of bounds.*C=3"):
            ce.multi_margin_loss(xp.asarray(np.zeros((2, 3))), xp.asarray(np.array([0, bad])))
        assert issubclass(ce.TargetIndexError, IndexError)

    def test_bad_weight_and_batch(self):
        with pytest.raises(ValueError, match=r"weight.*length 3.*\(4,\)"):
            ce.multi_margin_loss(np.zeros((2, 3)), np.array([0, 1]), weight=np.ones(4))
        with pytest.raises(ValueError, match=r"batch size \(2\).*\(3\)"):
            ce.multi_margin_loss(np.zeros((2, 3)), np.array([0, 1, 2]))

    def test_not_differentiable_in_target(self):
        with pytest.raises(ValueError, match="not differentiable.*'target'"):
            ce.value_and_grad(ce.multi_margin_loss, 1)


def _hinge_oracle(h, y, margin, reduction):
    torch = pytest.importorskip("torch")
    loss = torch.clamp(margin - torch.tensor(y, dtype=torch.float64) * torch.tensor(h), min=0)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction].numpy()


class TestHingeLoss:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("margin", [1.0, 0.5, 2.0])
    @pytest.mark.parametrize("label_dtype", ["int64", "int32", "float64"])
    def test_matches_torch(self, xp, rng, reduction, margin, label_dtype):
        h = rng.normal(0, 1.5, size=(4, 3))
        y = rng.choice([-1, 1], size=(4, 3)).astype(label_dtype)
        out = ce.hinge_loss(xp.asarray(h), xp.asarray(y), margin, reduction)
        assert_close(out, _hinge_oracle(h, y, margin, reduction), backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_float32(self, xp, rng, reduction):
        h = rng.normal(0, 1.5, size=7).astype(np.float32).astype(np.float64)
        y = rng.choice([-1, 1], size=7)
        out = ce.hinge_loss(xp.asarray(h, "float32"), xp.asarray(y), reduction=reduction)
        assert_close(
            out, _hinge_oracle(h, y, 1.0, reduction), backend=xp, dtype="float32", **TOL["float32"]
        )

    def test_seed_sum(self, xp):
        # sum_i max(0, 1 - y_i h(x_i)): 0 + 0.5 + 2 + 0 (a correct, confident -1)
        h, y = np.array([2.0, 0.5, -1.0, -3.0]), np.array([1, 1, 1, -1])
        out = ce.hinge_loss(xp.asarray(h), xp.asarray(y), reduction="sum")
        assert_close(out, 2.5, backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_grad_vs_torch_and_finite_differences(self, xp, rng, reduction):
        torch = pytest.importorskip("torch")
        h = rng.normal(0, 1.5, size=(3, 4))
        y = rng.choice([-1.0, 1.0], size=(3, 4))
        h[np.abs(1.0 - y * h) < 0.05] += 0.2  # away from the kink
        g = ce.grad(ce.hinge_loss)(xp.asarray(h), xp.asarray(y), 1.0, reduction)

        ht = torch.tensor(h, requires_grad=True)
        loss = torch.clamp(1.0 - torch.tensor(y) * ht, min=0)
        {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction].sum().backward()
        assert_close(g, ht.grad.numpy(), backend=xp, dtype="float64")

        def f(a):
            return xp.to_numpy(ce.hinge_loss(xp.asarray(a), xp.asarray(y), 1.0, reduction))

        assert_close(g, finite_difference(f, h), backend=xp, rtol=1e-6, atol=1e-8)

    @pytest.mark.parametrize("labels", [[0, 1, 1], [1, 2, -1], [0.0, 1.0, -1.0], [1.0, 0.5, 1.0]])
    def test_labels_other_than_plus_minus_one_raise(self, xp, labels):
        with pytest.raises(ValueError, match=r"-1 or \+1"):
            ce.hinge_loss(xp.asarray(np.zeros(3)), xp.asarray(np.array(labels)))

    def test_shape_mismatch_and_dtype(self):
        with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
            ce.hinge_loss(np.zeros(3), np.array([1, -1]))
        with pytest.raises(ce.DTypeError, match="input"):
            ce.hinge_loss(np.zeros(3, dtype=np.int64), np.array([1, -1, 1]))


class TestSquaredHingeLoss:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("margin", [1.0, 0.5])
    def test_matches_torch_formula(self, xp, rng, reduction, margin):
        torch = pytest.importorskip("torch")
        x, y = rng.normal(0, 1.5, size=(4, 3)), rng.choice([-1, 1], size=(4, 3))
        value, g = ce.value_and_grad(ce.squared_hinge_loss)(xp.asarray(x), xp.asarray(y), margin, reduction)
        xt = torch.tensor(x, requires_grad=True)
        ref = torch.clamp(margin - torch.tensor(y, dtype=torch.float64) * xt, min=0) ** 2
        ref = {"none": ref, "mean": ref.mean(), "sum": ref.sum()}[reduction]
        ref.sum().backward()
        assert_close(value, ref.detach().numpy(), backend=xp, dtype="float64")
        assert_close(g, xt.grad.numpy(), backend=xp, dtype="float64")

    def test_labels_must_be_signed(self):
        with pytest.raises(ValueError, match=r"squared_hinge_loss: target must hold labels -1 or \+1, found 0.0"):
            ce.squared_hinge_loss(np.zeros(2), np.array([0, 1]))


class TestMulticlassHingeLoss:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("p", [1, 2])
    def test_crammer_singer_oracle(self, xp, rng, reduction, p):
        y = rng.integers(0, 4, size=6)
        x = rng.normal(size=(6, 4))
        w = rng.uniform(0.5, 2.0, size=4)
        per = np.array([w[t] * max(0.0, 0.7 + np.max(np.delete(r, t)) - r[t]) ** p for r, t in zip(x, y)])
        expected = {"none": per, "mean": per.mean(), "sum": per.sum()}[reduction]
        got = ce.multiclass_hinge_loss(xp.asarray(x), xp.asarray(y), p, 0.7, xp.asarray(w), reduction)
        assert_close(got, expected, backend=xp, dtype="float64")

    @pytest.mark.parametrize("p", [1, 2])
    def test_gradient_and_class_axis(self, rng, p):
        x, y = rng.normal(size=(2, 4, 3)), rng.integers(0, 4, size=(2, 3))
        value, g = ce.value_and_grad(ce.multiclass_hinge_loss)(x, y, p)
        assert_close(g, finite_difference(lambda z: ce.multiclass_hinge_loss(z, y, p), x), rtol=1e-6, atol=1e-9)
        last = ce.multiclass_hinge_loss(np.moveaxis(x, 1, -1), y, p, axis=-1)
        assert_close(last, value)

    def test_differs_from_weston_watkins(self):
        x, y = np.array([[0.1, 0.2, 0.4, 0.8]]), np.array([3])
        assert_close(ce.multiclass_hinge_loss(x, y), 0.6)   # 1 + 0.4 - 0.8: the best wrong class
        assert_close(ce.multi_margin_loss(x, y), 0.325)     # (0.3 + 0.4 + 0.6) / 4: every wrong class

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="p must be 1 or 2"):
            ce.multiclass_hinge_loss(np.zeros((2, 3)), np.array([0, 1]), p=3)
        with pytest.raises(IndexError, match=r"Target 3 is out of bounds"):
            ce.multiclass_hinge_loss(np.zeros((2, 3)), np.array([0, 3]))
