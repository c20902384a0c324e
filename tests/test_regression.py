"""``mse_loss``, against PyTorch float64, and the seeds' "why not MSE?" numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

import crossentropy as ce
from tests.support import assert_close, finite_difference, torch_grad, torch_oracle

REDUCTIONS = ["none", "mean", "sum"]
TOL = {"float64": {"rtol": 1e-9, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}

ONEHOT = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
PRED1 = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
PRED2 = np.array([[0.1, 0.2, 0.7], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]])


class TestMSELoss:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    @pytest.mark.parametrize("shape", [(3, 4), (5,), (2, 3, 2), ()])
    def test_matches_torch(self, xp, rng, reduction, dtype, shape):
        x = rng.normal(0, 2, size=shape).astype(dtype).astype(np.float64)
        t = rng.normal(0, 2, size=shape).astype(dtype).astype(np.float64)
        out = ce.mse_loss(xp.asarray(x, dtype), xp.asarray(t, dtype), reduction)
        expected = torch_oracle("mse_loss", x, t, reduction=reduction)
        assert_close(out, expected, backend=xp, dtype=dtype, **TOL[dtype])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_grad_matches_torch(self, xp, rng, reduction, dtype):
        x = rng.normal(0, 2, size=(3, 4)).astype(dtype).astype(np.float64)
        t = rng.normal(0, 2, size=(3, 4)).astype(dtype).astype(np.float64)
        value, (gx, gt) = ce.value_and_grad(ce.mse_loss, (0, 1))(
            xp.asarray(x, dtype), xp.asarray(t, dtype), reduction=reduction
        )
        ev, egx = torch_grad("mse_loss", 0, x, t, reduction=reduction)
        _, egt = torch_grad("mse_loss", 1, x, t, reduction=reduction)
        assert_close(value, ev, backend=xp, dtype=dtype, **TOL[dtype])
        assert_close(gx, egx, backend=xp, dtype=dtype, **TOL[dtype])
        assert_close(gt, egt, backend=xp, dtype=dtype, **TOL[dtype])

    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_grad_vs_finite_differences(self, xp, rng, reduction):
        x, t = rng.normal(0, 2, size=(2, 3)), rng.normal(0, 2, size=(2, 3))

        def f(a, b):
            return xp.to_numpy(ce.mse_loss(xp.asarray(a), xp.asarray(b), reduction))

        gx, gt = ce.grad(ce.mse_loss, (0, 1))(xp.asarray(x), xp.asarray(t), reduction)
        assert_close(gx, finite_difference(lambda a: f(a, t), x), backend=xp, rtol=1e-6, atol=1e-8)
        assert_close(gt, finite_difference(lambda b: f(x, b), t), backend=xp, rtol=1e-6, atol=1e-8)

    def test_extreme_values(self, xp):
        # float32 squares overflow to inf exactly as in PyTorch, without a warning
        x = np.array([1e20, -3.0])
        t = np.array([0.0, 1e-30])
        out = ce.mse_loss(xp.asarray(x, "float32"), xp.asarray(t, "float32"), reduction="none")
        assert_close(out, [np.inf, 9.0], backend=xp, dtype="float32", rtol=1e-6)
        out64 = ce.mse_loss(xp.asarray(x), xp.asarray(t), reduction="none")
        assert_close(out64, [1e40, 9.0], backend=xp, dtype="float64")

    def test_empty(self, xp):
        x = np.zeros((0, 3))
        assert_close(ce.mse_loss(xp.asarray(x), xp.asarray(x)), np.nan, backend=xp)
        assert_close(ce.mse_loss(xp.asarray(x), xp.asarray(x), "sum"), 0.0, backend=xp)

    @pytest.mark.parametrize(
        ("ishape", "tshape"), [((3, 4), (4,)), ((3, 1), (3, 4)), ((2, 3), (3, 2)), ((3,), (1,))]
    )
    def test_shape_mismatch_raises(self, xp, ishape, tshape):
        # PyTorch broadcasts (with a warning) and returns a silently wrong loss; we refuse
        match = rf"target shape {re.escape(str(tshape))}.*input shape {re.escape(str(ishape))}"
        with pytest.raises(ValueError, match=match):
            ce.mse_loss(xp.asarray(np.zeros(ishape)), xp.asarray(np.zeros(tshape)))

    @pytest.mark.parametrize("arg", ["input", "target"])
    def test_integer_raises(self, xp, arg):
        arrays = {"input": np.zeros(3), "target": np.zeros(3)}
        arrays[arg] = np.zeros(3, dtype=np.int64)
        with pytest.raises(ce.DTypeError, match=rf"{arg} must have a floating-point dtype"):
            ce.mse_loss(xp.asarray(arrays["input"]), xp.asarray(arrays["target"]))

    def test_invalid_reduction(self):
        with pytest.raises(ValueError, match=r"reduction must be one of.*'batchmean'"):
            ce.mse_loss(np.zeros(2), np.zeros(2), reduction="batchmean")

    def test_float16_computed_in_float32(self):
        # 300^2 = 90000 overflows float16 (max 65504) but the mean, 22500, does not
        x = np.array([300.0, 0.0, 0.0, 0.0], dtype=np.float16)
        out = ce.mse_loss(x, np.zeros(4, dtype=np.float16))
        assert out.dtype == np.float16
        assert float(out) == 22496.0  # 22500 rounded to float16


class TestWhyNotMSE:
    """The seed's two tables: one-hot labels, predictions less and more confident."""

    def test_first_table_per_sample(self, xp):
        out = ce.mse_loss(xp.asarray(PRED1), xp.asarray(ONEHOT), reduction="none")
        per_sample = xp.to_numpy(out).sum(axis=1)
        np.testing.assert_allclose(per_sample, [0.54, 0.54, 1.34], rtol=1e-12)

    def test_second_table_batch_value(self, xp):
        total = ce.mse_loss(xp.asarray(PRED2), xp.asarray(ONEHOT), reduction="sum")
        assert_close(total, 1.02, backend=xp, dtype="float64")
        np.testing.assert_allclose(float(xp.to_numpy(total)) / 3, 0.34, rtol=1e-12)
        # 'mean' also divides by the 3 classes
        mean = ce.mse_loss(xp.asarray(PRED2), xp.asarray(ONEHOT))
        assert_close(mean, 0.34 / 3, backend=xp, dtype="float64")

    def test_first_table_against_torch(self, xp):
        expected = torch_oracle("mse_loss", PRED1, ONEHOT, reduction="sum") / 3
        total = ce.mse_loss(xp.asarray(PRED1), xp.asarray(ONEHOT), reduction="sum")
        np.testing.assert_allclose(float(xp.to_numpy(total)) / 3, expected, rtol=1e-12)
        np.testing.assert_allclose(expected, (0.54 + 0.54 + 1.34) / 3, rtol=1e-12)
