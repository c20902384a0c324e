"""``kl_div`` (PyTorch's KL-divergence loss on log-probabilities), against PyTorch float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.special import rel_entr

import crossentropy as ce
from tests.support import assert_close, finite_difference, torch_grad

REDUCTIONS = ["none", "mean", "batchmean", "sum"]
TOL = {"float64": {"rtol": 1e-9, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}


def _quiet_torch_grad(*args, **kwargs):
    """``torch_grad`` without PyTorch's UserWarning about ``reduction='mean'``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="reduction: 'mean'", category=UserWarning)
        return torch_grad(*args, **kwargs)


def _ours(*args, **kwargs):
    """``value_and_grad(kl_div, (0, 1))``, asserting that it emits no warning at all."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = ce.value_and_grad(ce.kl_div, (0, 1))(*args, **kwargs)
        plain = ce.kl_div(*args, **kwargs)
    assert not caught, [str(w.message) for w in caught]
    return out, plain


def _log_probs(rng, shape):
    z = rng.normal(0, 1.5, size=shape)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _probs_with_zeros(rng, shape):
    p = rng.uniform(0.05, 1.0, size=shape)
    p.reshape(-1, shape[-1])[:, 0] = 0.0  # one class of every row has no mass
    return p / p.sum(axis=-1, keepdims=True)


class TestKLDiv:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_matches_torch(self, xp, rng, reduction, dtype):
        x = _log_probs(rng, (3, 4)).astype(dtype).astype(np.float64)
        t = _probs_with_zeros(rng, (3, 4)).astype(dtype).astype(np.float64)
        (value, (gx, gt)), plain = _ours(
            xp.asarray(x, dtype), xp.asarray(t, dtype), reduction=reduction
        )
        ev, egx = _quiet_torch_grad("kl_div", 0, x, t, reduction=reduction)
        _, egt = _quiet_torch_grad("kl_div", 1, x, t, reduction=reduction)
        assert_close(value, ev, backend=xp, dtype=dtype, **TOL[dtype])
        assert_close(plain, ev, backend=xp, dtype=dtype, **TOL[dtype])
        assert_close(gx, egx, backend=xp, dtype=dtype, **TOL[dtype])
        # d/dt is log t + 1 - x: PyTorch gives NaN where t = 0, we give 0 (finite)
        positive = t > 0
        gt = xp.to_numpy(gt)
        assert np.all(np.isnan(egt[~positive]))
        np.testing.assert_array_equal(gt[~positive], 0.0)
        np.testing.assert_allclose(gt[positive], egt[positive], **TOL[dtype])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_log_target(self, xp, rng, reduction):
        x, lt = _log_probs(rng, (3, 4)), _log_probs(rng, (3, 4))
        (value, (gx, gt)), _ = _ours(
            xp.asarray(x), xp.asarray(lt), reduction=reduction, log_target=True
        )
        kw = {"reduction": reduction, "log_target": True}
        ev, egx = _quiet_torch_grad("kl_div", 0, x, lt, **kw)
        _, egt = _quiet_torch_grad("kl_div", 1, x, lt, **kw)
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(gx, egx, backend=xp, dtype="float64")
        assert_close(gt, egt, backend=xp, dtype="float64")
        # the same divergence as with probabilities
        same = ce.kl_div(xp.asarray(x), xp.asarray(np.exp(lt)), reduction=reduction)
        assert_close(value, xp.to_numpy(same), backend=xp, rtol=1e-12)

    def test_zero_target_contributes_zero(self, xp):
        # 0 log 0 = 0: a target of (0, 1) against any log q costs -log q_1 only
        x = np.log(np.array([[0.3, 0.7], [0.9, 0.1]]))
        t = np.array([[0.0, 1.0], [0.0, 1.0]])
        out = ce.kl_div(xp.asarray(x), xp.asarray(t), reduction="none")
        assert_close(out, [[0.0, -np.log(0.7)], [0.0, -np.log(0.1)]], backend=xp, dtype="float64")

    def test_batchmean_is_the_kl_divergence(self, xp, rng):
        # batchmean divides by input.shape[0] only, also for 3-D input
        q, p = np.exp(_log_probs(rng, (2, 3, 5))), _probs_with_zeros(rng, (2, 3, 5))
        out = ce.kl_div(xp.asarray(np.log(q)), xp.asarray(p), reduction="batchmean")
        assert_close(out, rel_entr(p, q).sum() / 2, backend=xp, dtype="float64")
        mean = ce.kl_div(xp.asarray(np.log(q)), xp.asarray(p), reduction="mean")
        assert_close(mean, rel_entr(p, q).sum() / 30, backend=xp, dtype="float64")

    def test_docstring_example_by_hand(self, xp):
        # KL((0.5, 0.5) || (0.9, 0.1)) = 0.5 log(0.5/0.9) + 0.5 log(0.5/0.1)
        out = ce.kl_div(
            xp.asarray(np.log([[0.9, 0.1]])), xp.asarray(np.array([[0.5, 0.5]])), "batchmean"
        )
        expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
        assert_close(out, expected, backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum"])
    @pytest.mark.parametrize("log_target", [False, True])
    def test_grad_vs_finite_differences(self, xp, rng, reduction, log_target):
        x = _log_probs(rng, (2, 3))
        t = _log_probs(rng, (2, 3)) if log_target else np.exp(_log_probs(rng, (2, 3)))

        def f(a, b):
            out = ce.kl_div(xp.asarray(a), xp.asarray(b), reduction, log_target)
            return xp.to_numpy(out)

        gx, gt = ce.grad(ce.kl_div, (0, 1))(xp.asarray(x), xp.asarray(t), reduction, log_target)
        assert_close(gx, finite_difference(lambda a: f(a, t), x), backend=xp, rtol=1e-6, atol=1e-8)
        assert_close(gt, finite_difference(lambda b: f(x, b), t), backend=xp, rtol=1e-6, atol=1e-8)

    @pytest.mark.parametrize("reduction", ["avg", "batch_mean", "elementwise_mean"])
    def test_invalid_reduction(self, xp, reduction):
        with pytest.raises(ValueError, match=rf"'batchmean'.*got '{reduction}'"):
            ce.kl_div(xp.asarray(np.zeros((1, 2))), xp.asarray(np.full((1, 2), 0.5)), reduction)

    def test_shape_mismatch_and_dtype(self):
        with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
            ce.kl_div(np.zeros((2, 3)), np.full((2, 2), 0.5))
        with pytest.raises(ce.DTypeError, match="target"):
            ce.kl_div(np.zeros((2, 3)), np.ones((2, 3), dtype=np.int64))

    def test_torch_autograd_through_the_function(self, rng):
        torch = pytest.importorskip("torch")
        x, t = _log_probs(rng, (3, 4)), np.exp(_log_probs(rng, (3, 4)))
        xt = torch.tensor(x, requires_grad=True)
        ce.kl_div(xt, torch.tensor(t), reduction="batchmean").backward()
        _, expected = torch_grad("kl_div", 0, x, t, reduction="batchmean")
        np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-12)

    @pytest.mark.parametrize("reduction", ["none", "sum"])
    def test_float16(self, rng, reduction):
        x, t = _log_probs(rng, (3, 4)), np.exp(_log_probs(rng, (3, 4)))
        x16, t16 = x.astype(np.float16), t.astype(np.float16)
        out = ce.kl_div(x16, t16, reduction=reduction)
        assert out.dtype == np.float16
        loss = rel_entr(t16.astype(np.float64), 1.0) - t16.astype(np.float64) * x16
        expected = loss if reduction == "none" else loss.sum()
        np.testing.assert_allclose(out.astype(np.float64), expected, rtol=2e-3, atol=2e-3)


class TestGeneralizedKLDiv:
    @pytest.mark.parametrize("reduction", ["none", "mean", "batchmean", "sum"])
    @pytest.mark.parametrize("log_target", [False, True])
    def test_kl_plus_mass_difference(self, xp, rng, reduction, log_target):
        x = rng.normal(-1, 1, size=(3, 4))
        p = rng.uniform(0, 2, size=(3, 4))
        p[0, 0] = 0.0
        t = np.log(np.where(p > 0, p, 1e-300)) if log_target else p
        pm = np.exp(t) if log_target else p
        per = np.where(pm > 0, pm * (np.log(np.where(pm > 0, pm, 1)) - x), 0) + np.exp(x) - pm
        expected = {"none": per, "mean": per.mean(), "sum": per.sum(), "batchmean": per.sum() / 3}[reduction]
        got = ce.generalized_kl_div(xp.asarray(x), xp.asarray(t), reduction, log_target)
        assert_close(got, expected, backend=xp, dtype="float64", rtol=1e-9, atol=1e-12)

    @pytest.mark.parametrize("log_target", [False, True])
    def test_gradients(self, rng, log_target):
        x, p = rng.normal(size=(2, 3)), rng.uniform(0.1, 2, size=(2, 3))
        t = np.log(p) if log_target else p
        _, (gx, gt) = ce.value_and_grad(ce.generalized_kl_div, (0, 1))(x, t, "batchmean", log_target)
        f = lambda a, b: ce.generalized_kl_div(a, b, "batchmean", log_target)  # noqa: E731
        assert_close(gx, finite_difference(lambda a: f(a, t), x), rtol=1e-6, atol=1e-9)
        assert_close(gt, finite_difference(lambda b: f(x, b), t), rtol=1e-6, atol=1e-9)

    def test_equals_kl_div_for_distributions(self, rng):
        q, p = rng.dirichlet(np.ones(5), size=3), rng.dirichlet(np.ones(5), size=3)
        assert_close(ce.generalized_kl_div(np.log(q), p, "batchmean"), ce.kl_div(np.log(q), p, "batchmean"))

    def test_optax_values(self):
        log_ps = np.array([[-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026],
                           [-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971]])  # fmt: skip
        qs = np.array([[0.2, 0.2, 0.2, 0.1, 0.15, 0.15], [0.05, 0.03, 0.02, 0.3, 0.5, 0.0]])
        got = ce.generalized_kl_div(log_ps, qs, reduction="none").sum(-1)
        np.testing.assert_allclose(got, [0.88757247, 0.859308], atol=1e-4)
