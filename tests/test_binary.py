"""Binary cross-entropy on probabilities and on logits, against PyTorch float64."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from tests.support import (
    assert_close,
    finite_difference,
    make_backend,
    torch_grad,
    torch_oracle,
)

REDUCTIONS = ["none", "mean", "sum"]
TOL = {"float64": {"rtol": 1e-9, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 1e-6}}


def _rounded(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` and back to float64, so the oracle sees what we see."""
    if dtype == "bfloat16":
        import torch

        return torch.from_numpy(a).to(torch.bfloat16).double().numpy()
    return a.astype(dtype).astype(np.float64)


def _half(backend_name: str, a: np.ndarray, dtype: str):
    """``a`` as a half-precision array of the named backend, and that backend."""
    b = make_backend(backend_name)
    if backend_name == "jax":
        import jax.numpy as jnp

        return b, jnp.asarray(a, dtype=getattr(jnp, dtype))
    return b, b.asarray(a, dtype)


HALF = [
    ("numpy", "float16"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
    ("jax", "float16"),
    ("jax", "bfloat16"),
]
HALF_RTOL = {"float16": 2e-3, "bfloat16": 1.6e-2}


def _probs(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    return rng.uniform(0.05, 0.95, size=shape)


def _soft_targets(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    t = rng.uniform(0.0, 1.0, size=shape)
    t.reshape(-1)[:2] = [0.0, 1.0]  # hard labels as well as soft ones
    return t


class TestBinaryCrossEntropy:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_matches_torch(self, xp, rng, reduction, dtype):
        x = _rounded(_probs(rng, (3, 4)), dtype)
        t = _rounded(_soft_targets(rng, (3, 4)), dtype)
        out = ce.binary_cross_entropy(
            xp.asarray(x, dtype), xp.asarray(t, dtype), reduction=reduction
        )
        expected = torch_oracle("binary_cross_entropy", x, t, reduction=reduction)
        assert_close(out, expected, backend=xp, dtype=dtype, **TOL[dtype])

    def test_naive_formula(self, xp, rng):
        x, t = _probs(rng, (5,)), _soft_targets(rng, (5,))
        expected = -(t * np.log(x) + (1 - t) * np.log(1 - x))
        out = ce.binary_cross_entropy(xp.asarray(x), xp.asarray(t), reduction="none")
        assert_close(out, expected, backend=xp, dtype="float64")

    @pytest.mark.parametrize("wshape", [(4,), (3, 1), (3, 4), ()])
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_weight_broadcasts(self, xp, rng, wshape, reduction):
        x, t = _probs(rng, (3, 4)), _soft_targets(rng, (3, 4))
        w = rng.uniform(0.2, 2.0, size=wshape)
        out = ce.binary_cross_entropy(
            xp.asarray(x), xp.asarray(t), xp.asarray(w), reduction=reduction
        )
        expected = torch_oracle("binary_cross_entropy", x, t, weight=w, reduction=reduction)
        assert_close(out, expected, backend=xp, dtype="float64")

    def test_weight_not_broadcastable(self):
        with pytest.raises(ValueError, match=r"weight.*\(5,\).*\(3, 4\)"):
            ce.binary_cross_entropy(np.full((3, 4), 0.5), np.ones((3, 4)), np.ones(5))

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_log_clamped_at_minus_100(self, xp, dtype):
        # p = 0 or 1 against the wrong label: -log 0 clamped to 100, as in PyTorch
        x = np.array([0.0, 1.0, 0.0, 1.0, 0.0])
        t = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
        out = ce.binary_cross_entropy(xp.asarray(x, dtype), xp.asarray(t, dtype), reduction="none")
        expected = np.array([100.0, 100.0, 0.0, 0.0, 50.0])
        assert_close(out, expected, backend=xp, dtype=dtype)
        assert_close(out, torch_oracle("binary_cross_entropy", x, t, reduction="none"), backend=xp)
        mean = ce.binary_cross_entropy(xp.asarray(x, dtype), xp.asarray(t, dtype))
        assert_close(mean, 250.0 / 5, backend=xp, dtype=dtype)

    def test_log1p_keeps_tiny_probabilities(self, xp):
        # -log(1 - 1e-20) = 1e-20; log(1 - p) would round to log(1) = 0
        x = np.array([1e-20, 1e-12])
        t = np.zeros(2)
        out = ce.binary_cross_entropy(xp.asarray(x), xp.asarray(t), reduction="none")
        assert_close(out, [1e-20, -np.log1p(-1e-12)], backend=xp, dtype="float64", atol=0)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", [False, True])
    def test_grad_matches_torch(self, xp, rng, reduction, weighted):
        x, t = _probs(rng, (3, 4)), _soft_targets(rng, (3, 4))
        w = rng.uniform(0.2, 2.0, size=(4,)) if weighted else None
        value, (gx, gt) = ce.value_and_grad(ce.binary_cross_entropy, (0, 1))(
            xp.asarray(x), xp.asarray(t), None if w is None else xp.asarray(w), reduction
        )
        kw = {"weight": w, "reduction": reduction}
        ev, egx = torch_grad("binary_cross_entropy", 0, x, t, **kw)
        _, egt = torch_grad("binary_cross_entropy", 1, x, t, **kw)
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(gx, egx, backend=xp, dtype="float64")
        assert_close(gt, egt, backend=xp, dtype="float64")

    def test_grad_float32(self, xp, rng):
        x = _rounded(_probs(rng, (2, 3)), "float32")
        t = _rounded(_soft_targets(rng, (2, 3)), "float32")
        _, g = ce.value_and_grad(ce.binary_cross_entropy)(
            xp.asarray(x, "float32"), xp.asarray(t, "float32")
        )
        _, expected = torch_grad("binary_cross_entropy", 0, x, t)
        assert_close(g, expected, backend=xp, dtype="float32", **TOL["float32"])

    def test_grad_at_zero_and_one_is_torchs_formula(self, xp):
        # PyTorch's backward: w (x - y) / max(x (1 - x), eps) with eps the float32 1e-12
        x = np.array([0.0, 1.0, 0.0, 1.0, 1e-7, 1e-13])
        t = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
        w = np.array([2.0, 1.0, 1.0, 1.0, 3.0, 1.0])
        expected = w * (x - t) / np.maximum(x * (1 - x), float(np.float32(1e-12)))
        g = ce.grad(ce.binary_cross_entropy)(
            xp.asarray(x), xp.asarray(t), xp.asarray(w), reduction="sum"
        )
        assert_close(g, expected, backend=xp, dtype="float64")
        _, torch_g = torch_grad("binary_cross_entropy", 0, x, t, weight=w, reduction="sum")
        assert_close(g, torch_g, backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_grad_vs_finite_differences(self, xp, rng, reduction):
        x, t = _probs(rng, (2, 3)), _soft_targets(rng, (2, 3))
        w = rng.uniform(0.5, 2.0, size=(3,))

        def f(a, b):
            out = ce.binary_cross_entropy(xp.asarray(a), xp.asarray(b), xp.asarray(w), reduction)
            return xp.to_numpy(out)

        gx, gt = ce.grad(ce.binary_cross_entropy, (0, 1))(
            xp.asarray(x), xp.asarray(t), xp.asarray(w), reduction
        )
        t_inner = np.clip(t, 1e-3, 1 - 1e-3)  # keep the target perturbation inside [0, 1]
        gt_inner = ce.grad(ce.binary_cross_entropy, 1)(
            xp.asarray(x), xp.asarray(t_inner), xp.asarray(w), reduction
        )
        assert_close(gx, finite_difference(lambda a: f(a, t), x), backend=xp, rtol=1e-6, atol=1e-8)
        assert_close(
            gt_inner,
            finite_difference(lambda b: f(x, b), t_inner),
            backend=xp,
            rtol=1e-6,
            atol=1e-8,
        )
        assert xp.owns(gt)

    @pytest.mark.parametrize("arg", ["input", "target"])
    @pytest.mark.parametrize("bad", [1.5, -0.25, float("nan")])
    def test_outside_unit_interval_raises(self, xp, arg, bad):
        x, t = np.array([0.2, 0.7, 0.4]), np.array([0.0, 1.0, 1.0])
        (x if arg == "input" else t)[1] = bad
        with pytest.raises(ValueError, match=rf"{arg}.*between 0 and 1.*{bad!r}"):
            ce.binary_cross_entropy(xp.asarray(x), xp.asarray(t))

    def test_shape_mismatch_names_both_shapes(self, xp):
        with pytest.raises(ValueError, match=r"\(3,\).*\(2, 3\)"):
            ce.binary_cross_entropy(xp.asarray(np.full((2, 3), 0.5)), xp.asarray(np.ones(3)))

    def test_integer_input_raises(self, xp):
        with pytest.raises(ce.DTypeError, match=r"input must have a floating-point dtype"):
            ce.binary_cross_entropy(xp.asarray(np.array([1, 0])), xp.asarray(np.array([1.0, 0.0])))

    @pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
    def test_integer_targets_are_probabilities(self, xp, rng, dtype):
        x, y = _probs(rng, (4, 3)), rng.integers(0, 2, size=(4, 3))
        value, g = ce.value_and_grad(ce.binary_cross_entropy)(
            xp.asarray(x), xp.asarray(y, dtype=dtype), reduction="sum"
        )
        ev, eg = torch_grad("binary_cross_entropy", 0, x, y.astype(np.float64), reduction="sum")
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(g, eg, backend=xp, dtype="float64")

    def test_integer_target_outside_unit_interval_raises(self):
        with pytest.raises(ValueError, match=r"target.*between 0 and 1.*2\.0"):
            ce.binary_cross_entropy(np.array([0.5, 0.5]), np.array([1, 2]))

    def test_invalid_reduction(self):
        with pytest.raises(ValueError, match=r"reduction must be one of.*'avg'"):
            ce.binary_cross_entropy(np.array([0.5]), np.array([1.0]), reduction="avg")

    @pytest.mark.parametrize(("backend", "dtype"), HALF)
    def test_half_precision(self, rng, backend, dtype):
        x = _rounded(_probs(rng, (3, 4)), dtype)
        t = _rounded(_soft_targets(rng, (3, 4)), dtype)
        b, hx = _half(backend, x, dtype)
        _, ht = _half(backend, t, dtype)
        out = ce.binary_cross_entropy(hx, ht, reduction="none")
        expected = torch_oracle("binary_cross_entropy", x, t, reduction="none")
        assert_close(out, expected, backend=b, dtype=dtype, rtol=HALF_RTOL[dtype], atol=1e-3)


class TestBinaryCrossEntropyWithLogits:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_matches_torch(self, xp, rng, reduction, dtype):
        x = _rounded(rng.normal(0, 3, size=(3, 4)), dtype)
        t = _rounded(_soft_targets(rng, (3, 4)), dtype)
        out = ce.binary_cross_entropy_with_logits(
            xp.asarray(x, dtype), xp.asarray(t, dtype), reduction=reduction
        )
        expected = torch_oracle("binary_cross_entropy_with_logits", x, t, reduction=reduction)
        assert_close(out, expected, backend=xp, dtype=dtype, **TOL[dtype])

    def test_equals_bce_of_sigmoid(self, xp, rng):
        x, t = rng.normal(0, 2, size=(4, 3)), _soft_targets(rng, (4, 3))
        p = 1 / (1 + np.exp(-x))
        out = ce.binary_cross_entropy_with_logits(xp.asarray(x), xp.asarray(t), reduction="none")
        expected = ce.binary_cross_entropy(p, t, reduction="none")
        assert_close(out, expected, backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("wshape", [None, (4,), (3, 1)])
    @pytest.mark.parametrize("with_pos_weight", [False, True])
    def test_weight_and_pos_weight(self, xp, rng, reduction, wshape, with_pos_weight):
        x, t = rng.normal(0, 2, size=(3, 4)), _soft_targets(rng, (3, 4))
        w = None if wshape is None else rng.uniform(0.2, 2.0, size=wshape)
        pw = rng.uniform(0.5, 4.0, size=(4,)) if with_pos_weight else None
        kw = {"weight": w, "reduction": reduction, "pos_weight": pw}
        ours = {k: (xp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
        value, (gx, gt) = ce.value_and_grad(ce.binary_cross_entropy_with_logits, (0, 1))(
            xp.asarray(x), xp.asarray(t), **ours
        )
        ev, egx = torch_grad("binary_cross_entropy_with_logits", 0, x, t, **kw)
        _, egt = torch_grad("binary_cross_entropy_with_logits", 1, x, t, **kw)
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(gx, egx, backend=xp, dtype="float64")
        assert_close(gt, egt, backend=xp, dtype="float64")

    def test_pos_weight_per_class_formula(self, xp):
        # l = -(pw y log s(x) + (1 - y) log(1 - s(x))), pw taken from the last axis
        x = np.array([[0.5, -1.0], [2.0, 0.0]])
        t = np.array([[1.0, 1.0], [0.0, 1.0]])
        pw = np.array([3.0, 0.5])
        s = 1 / (1 + np.exp(-x))
        expected = -(pw * t * np.log(s) + (1 - t) * np.log(1 - s))
        out = ce.binary_cross_entropy_with_logits(
            xp.asarray(x), xp.asarray(t), reduction="none", pos_weight=xp.asarray(pw)
        )
        assert_close(out, expected, backend=xp, dtype="float64")

    def test_pos_weight_not_broadcastable(self):
        with pytest.raises(ValueError, match=r"pos_weight.*\(3,\).*\(2, 4\)"):
            ce.binary_cross_entropy_with_logits(
                np.zeros((2, 4)), np.ones((2, 4)), pos_weight=np.ones(3)
            )

    @pytest.mark.parametrize(
        ("dtype", "big"), [("float32", 1e4), ("float64", 1e4), ("float64", 1e30)]
    )
    def test_extreme_logits_exact(self, xp, dtype, big):
        x = np.array([-big, big, big, -big, big])
        t = np.array([1.0, 0.0, 1.0, 0.0, 0.5])
        expected = np.array([big, big, 0.0, 0.0, big / 2])
        out = ce.binary_cross_entropy_with_logits(
            xp.asarray(x, dtype), xp.asarray(t, dtype), reduction="none"
        )
        assert_close(out, expected, backend=xp, dtype=dtype, rtol=1e-12, atol=0)
        assert_close(
            out,
            torch_oracle("binary_cross_entropy_with_logits", x, t, reduction="none"),
            backend=xp,
        )
        # the gradient sigmoid(x) - y saturates at exactly -1, +1, 0, 0, +0.5
        g = ce.grad(ce.binary_cross_entropy_with_logits)(
            xp.asarray(x, dtype), xp.asarray(t, dtype), reduction="sum"
        )
        assert_close(g, [-1.0, 1.0, 0.0, 0.0, 0.5], backend=xp, dtype=dtype, atol=0)
        pw = np.full(5, 3.0)
        out = ce.binary_cross_entropy_with_logits(
            xp.asarray(x, dtype),
            xp.asarray(t, dtype),
            reduction="none",
            pos_weight=xp.asarray(pw, dtype),
        )
        assert_close(out, [3 * big, big, 0.0, 0.0, big / 2], backend=xp, dtype=dtype, atol=0)

    @pytest.mark.parametrize("reduction", ["mean", "sum"])
    def test_grad_vs_finite_differences(self, xp, rng, reduction):
        x, t = rng.normal(0, 2, size=(2, 3)), rng.uniform(0.1, 0.9, size=(2, 3))
        w, pw = rng.uniform(0.5, 2.0, size=(2, 1)), rng.uniform(0.5, 3.0, size=(3,))

        def f(a, b):
            out = ce.binary_cross_entropy_with_logits(
                xp.asarray(a), xp.asarray(b), xp.asarray(w), reduction, xp.asarray(pw)
            )
            return xp.to_numpy(out)

        gx, gt = ce.grad(ce.binary_cross_entropy_with_logits, (0, 1))(
            xp.asarray(x), xp.asarray(t), xp.asarray(w), reduction, xp.asarray(pw)
        )
        assert_close(gx, finite_difference(lambda a: f(a, t), x), backend=xp, rtol=1e-6, atol=1e-8)
        assert_close(gt, finite_difference(lambda b: f(x, b), t), backend=xp, rtol=1e-6, atol=1e-8)

    def test_torch_autograd_through_the_function(self, rng):
        torch = pytest.importorskip("torch")
        x, t = rng.normal(0, 2, size=(3, 4)), _soft_targets(rng, (3, 4))
        pw = rng.uniform(0.5, 3.0, size=(4,))
        xt = torch.tensor(x, requires_grad=True)
        loss = ce.binary_cross_entropy_with_logits(xt, torch.tensor(t), pos_weight=torch.tensor(pw))
        loss.backward()
        _, expected = torch_grad("binary_cross_entropy_with_logits", 0, x, t, pos_weight=pw)
        np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-9)

    def test_shape_mismatch_and_integer_input(self):
        with pytest.raises(ValueError, match=r"\(2, 1\).*\(2, 3\)"):
            ce.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.ones((2, 1)))
        with pytest.raises(ce.DTypeError, match="input"):
            ce.binary_cross_entropy_with_logits(np.zeros(3, dtype=np.int32), np.ones(3))

    @pytest.mark.parametrize(("backend", "dtype"), HALF)
    def test_half_precision(self, rng, backend, dtype):
        x = _rounded(rng.normal(0, 3, size=(3, 4)), dtype)
        t = _rounded(_soft_targets(rng, (3, 4)), dtype)
        b, hx = _half(backend, x, dtype)
        _, ht = _half(backend, t, dtype)
        out = ce.binary_cross_entropy_with_logits(hx, ht, reduction="none")
        expected = torch_oracle("binary_cross_entropy_with_logits", x, t, reduction="none")
        assert_close(out, expected, backend=b, dtype=dtype, rtol=HALF_RTOL[dtype], atol=1e-3)
        mean = ce.binary_cross_entropy_with_logits(hx, ht)
        assert_close(mean, expected.mean(), backend=b, dtype=dtype, rtol=HALF_RTOL[dtype])
        g = ce.grad(ce.binary_cross_entropy_with_logits)(hx, ht, reduction="sum")
        assert_close(g, 1 / (1 + np.exp(-x)) - t, backend=b, dtype=dtype, rtol=0, atol=8e-3)


def _torchvision_focal(x, t, alpha, gamma, reduction):
    """torchvision.ops.sigmoid_focal_loss's formula in float64 PyTorch: (value, gradient of its sum)."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float64)
    p = torch.sigmoid(xt)
    ce_loss = torch.nn.functional.binary_cross_entropy_with_logits(xt, tt, reduction="none")
    p_t = p * tt + (1 - p) * (1 - tt)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * tt + (1 - alpha) * (1 - tt)) * loss
    loss = {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


class TestSigmoidFocalLoss:
    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    @pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1, 0.5), (0.8, 0.0), (0.5, 3.0)])
    def test_matches_torchvision_formula(self, xp, rng, reduction, alpha, gamma):
        x, t = rng.normal(0, 3, size=(4, 5)), rng.integers(0, 2, size=(4, 5)).astype(float)
        t[0] = rng.uniform(size=5)  # soft labels too
        value, g = ce.value_and_grad(ce.sigmoid_focal_loss)(
            xp.asarray(x), xp.asarray(t), alpha, gamma, reduction
        )
        ev, eg = _torchvision_focal(x, t, alpha, gamma, reduction)
        assert_close(value, ev, backend=xp, dtype="float64")
        assert_close(g, eg, backend=xp, dtype="float64", rtol=1e-8)

    def test_saturated_logits_exact_and_finite_gradient(self):
        x = np.array([-50.0, 50.0, 40.0, -40.0])
        t = np.array([0.0, 1.0, 0.0, 1.0])
        value, g = ce.value_and_grad(ce.sigmoid_focal_loss)(x, t, -1, 2.0)
        s = np.exp(-50.0)  # sigma(-50) to 1e-22: loss = s^2 * s
        np.testing.assert_allclose(value[:2], [s**3, s**3], rtol=1e-12)
        np.testing.assert_allclose(value[2:], [40.0, 40.0], rtol=1e-12)
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g[2:], [1.0, -1.0], rtol=1e-12)

    def test_integer_targets_and_float32(self):
        torch = pytest.importorskip("torch")
        torch_x = torch.tensor([0.0, 2.0], dtype=torch.float32, requires_grad=True)
        loss = ce.sigmoid_focal_loss(torch_x, torch.tensor([1, 0]), reduction="sum")
        loss.backward()
        assert loss.dtype == torch.float32
        ev, eg = _torchvision_focal(np.array([0.0, 2.0]), np.array([1.0, 0.0]), 0.25, 2.0, "sum")
        np.testing.assert_allclose(loss.item(), ev, rtol=1e-6)
        np.testing.assert_allclose(torch_x.grad.numpy(), eg, rtol=1e-6)

    @pytest.mark.parametrize(("kwargs", "match"), [({"alpha": 1.5}, "alpha must be at most 1"),
                                                   ({"gamma": -1.0}, "gamma must be >= 0"),
                                                   ({"reduction": "avg"}, "reduction must be one of")])  # fmt: skip
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            ce.sigmoid_focal_loss(np.zeros(2), np.zeros(2), **kwargs)
