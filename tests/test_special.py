"""Tests for crossentropy.special: logsumexp, softmax, log_softmax, sigmoid, log_sigmoid.

The oracle is PyTorch in float64 (``torch.logsumexp``, ``torch.softmax``,
``F.log_softmax``, ``torch.sigmoid``, ``F.logsigmoid``); gradients are checked
against PyTorch's autograd and central finite differences.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import crossentropy as ce
from tests.support import HAVE_JAX, assert_close, finite_difference

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")

INF = math.inf

# (shape, axis): 1-D, 2-D and 3-D inputs, positive and negative axes
SHAPES_AXES = [
    ((7,), -1),
    ((7,), 0),
    ((3, 5), -1),
    ((3, 5), 0),
    ((3, 5), -2),
    ((2, 3, 4), 1),
    ((2, 3, 4), -3),
    ((2, 3, 4), -1),
]
SHAPES = [(7,), (3, 5), (2, 3, 4)]
# the array libraries that have float16 (the Array API standard has none)
HALF_BACKENDS = [
    "numpy",
    "torch",
    pytest.param("jax", marks=pytest.mark.skipif(not HAVE_JAX, reason="jax not installed")),
]


def _t64(a: Any) -> Any:
    return torch.from_numpy(np.array(a, dtype=np.float64))


class _Common:
    """Checks shared by every function; subclasses set ``fn`` and ``torch_fn``.

    ``torch_fn(t, axis)`` is the PyTorch equivalent on a float64 tensor.
    """

    fn: Any
    torch_fn: Any

    def call(self, x: Any, axis: int = -1) -> Any:
        raise NotImplementedError

    def oracle(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        return type(self).torch_fn(_t64(x), axis).numpy()

    # -- extreme values -------------------------------------------------------------

    def test_extreme_float32(self, xp):
        a = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4 + 1, -1e4 + 2], [3.0, 1e4, 1e4]], np.float32)
        out = self.call(xp.asarray(a))
        assert np.all(np.isfinite(xp.to_numpy(out)))
        assert_close(out, self.oracle(a), backend=xp, dtype="float32", rtol=1e-6, atol=1e-7)

    def test_extreme_float64(self, xp):
        a = np.array([[1e30, -1e30, 0.0], [-1e30, -1e30, -1e30], [-1e30, 2.0, 1e30]])
        out = self.call(xp.asarray(a))
        assert np.all(np.isfinite(xp.to_numpy(out)))
        assert_close(out, self.oracle(a), backend=xp, dtype="float64", rtol=1e-12)

    def test_negative_infinity_entries(self, xp):
        # partial -inf rows and a row of only -inf, exactly as PyTorch treats them
        a = np.array([[-INF, 0.0, 1.0], [2.0, -INF, -INF], [-INF, -INF, -INF]])
        assert_close(self.call(xp.asarray(a)), self.oracle(a), backend=xp, dtype="float64")

    # -- dtypes ---------------------------------------------------------------------

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_dtype_preserved(self, xp, rng, dtype):
        a = rng.normal(size=(4, 5)).astype(dtype)
        rtol = 1e-6 if dtype == "float32" else 1e-12
        out = self.call(xp.asarray(a))
        assert_close(out, self.oracle(a), backend=xp, dtype=dtype, rtol=rtol, atol=rtol)

    @pytest.mark.parametrize("xp", HALF_BACKENDS, indirect=True)
    def test_float16(self, xp, rng):
        a = np.concatenate([rng.normal(scale=4, size=(3, 6)), [[1e4, -1e4, 0.5, 2, -3, 3e4]]])
        a = a.astype(np.float16)
        out = self.call(xp.asarray(a))
        got = xp.to_numpy(out)
        assert np.all(np.isfinite(got))
        # one rounding of the float64 result (float16 has 11 significant bits)
        assert_close(out, self.oracle(a), backend=xp, dtype="float16", rtol=1e-3, atol=1e-3)

    def test_bfloat16_torch(self, rng):
        a = np.concatenate([rng.normal(scale=4, size=(3, 6)), [[1e4, -1e4, 0.5, 2, -3, 3e4]]])
        x = torch.tensor(a, dtype=torch.bfloat16)
        out = self.call(x)
        assert out.dtype == torch.bfloat16
        got = out.float().numpy()
        assert np.all(np.isfinite(got))
        expected = self.oracle(x.float().numpy())  # the values bfloat16 actually holds
        np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-2)

    def test_integer_raises(self, xp):
        x = xp.asarray(np.arange(6).reshape(2, 3))
        with pytest.raises(ce.DTypeError, match=r"^x must have a floating-point dtype.*int"):
            self.call(x)

    def test_bool_raises(self):
        with pytest.raises(ce.DTypeError, match=r"x must have a floating-point dtype.*bool"):
            self.call(np.array([True, False]))

    # -- inputs and outputs ---------------------------------------------------------

    def test_input_not_mutated(self, xp, rng):
        a = rng.normal(scale=50, size=(3, 4))
        a[0, 1] = -INF
        for dtype in ("float64", "float32"):
            x = xp.asarray(a, dtype=dtype)
            before = xp.to_numpy(x).copy()
            self.call(x)
            np.testing.assert_array_equal(xp.to_numpy(x), before)

    def test_list_input_returns_numpy(self):
        data = [[1.0, 2.0, 3.0], [0.5, -0.5, 0.0]]
        out = self.call(data)
        assert type(out) is np.ndarray
        assert_close(out, self.oracle(np.array(data)))

    def test_torch_autograd(self, rng):
        a = rng.normal(scale=3, size=(3, 4))
        w = _t64(rng.normal(size=self.oracle(a).shape))  # a weighted sum: softmax sums to 1
        x = _t64(a).requires_grad_(True)
        out = self.call(x)
        assert out.requires_grad
        (out * w).sum().backward()
        ref = _t64(a).requires_grad_(True)
        (type(self).torch_fn(ref, -1) * w).sum().backward()
        assert_close(x.grad.numpy(), ref.grad.numpy(), rtol=1e-12, atol=1e-14)


class _Reduction(_Common):
    """Functions along an axis: logsumexp, softmax, log_softmax."""

    def call(self, x: Any, axis: int = -1) -> Any:
        return type(self).fn(x, axis=axis)

    @pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
    def test_matches_torch(self, xp, rng, shape, axis):
        a = rng.normal(scale=3, size=shape)
        assert_close(
            self.call(xp.asarray(a), axis), self.oracle(a, axis), backend=xp, dtype="float64"
        )

    def test_default_axis_is_last(self, xp, rng):
        a = rng.normal(size=(2, 3, 4))
        assert_close(type(self).fn(xp.asarray(a)), self.oracle(a, -1), backend=xp, dtype="float64")

    @pytest.mark.parametrize(("shape", "axis"), [((3,), 1), ((3,), -2), ((2, 3), 2), ((2, 3), -3)])
    def test_axis_out_of_range(self, xp, shape, axis):
        x = xp.asarray(np.ones(shape))
        with pytest.raises(ValueError, match=rf"axis={axis} is out of range.*{len(shape)} dim"):
            self.call(x, axis)

    @pytest.mark.parametrize("axis", [0, -1])
    @pytest.mark.parametrize("value", [1.5, -INF, INF])
    def test_scalar_as_torch(self, xp, axis, value):
        # a 0-d input has one axis to reduce over, 0 or -1, as PyTorch and SciPy take it
        a = np.asarray(value)
        out = self.call(xp.asarray(a), axis)
        assert_close(out, self.oracle(a, axis), backend=xp, dtype="float64")
        assert tuple(out.shape) == ()
        with pytest.raises(ValueError, match="axis=1 is out of range"):
            self.call(xp.asarray(a), 1)


class _Elementwise(_Common):
    """Elementwise functions: sigmoid, log_sigmoid."""

    def call(self, x: Any, axis: int = -1) -> Any:
        return type(self).fn(x)

    def oracle(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        return type(self).torch_fn(_t64(x)).numpy()

    @pytest.mark.parametrize("shape", SHAPES)
    def test_matches_torch(self, xp, rng, shape):
        a = rng.normal(scale=10, size=shape)
        assert_close(self.call(xp.asarray(a)), self.oracle(a), backend=xp, dtype="float64")

    def test_infinities(self, xp):
        a = np.array([INF, -INF, 0.0, 1e30, -1e30, 800.0, -800.0])
        assert_close(self.call(xp.asarray(a)), self.oracle(a), backend=xp, dtype="float64")

    def test_scalar_input(self, xp):
        # elementwise, so a 0-d array is fine (as torch.sigmoid on a 0-d tensor)
        out = self.call(xp.asarray(np.float64(-2.5)))
        assert_close(out, self.oracle(np.float64(-2.5)), backend=xp, dtype="float64")

    def test_torch_autograd(self, rng):
        a = rng.normal(scale=3, size=(3, 4))
        x = _t64(a).requires_grad_(True)
        self.call(x).sum().backward()
        ref = _t64(a).requires_grad_(True)
        type(self).torch_fn(ref).sum().backward()
        assert_close(x.grad.numpy(), ref.grad.numpy(), rtol=1e-12, atol=1e-14)


class TestLogsumexp(_Reduction):
    fn = staticmethod(ce.logsumexp)
    torch_fn = staticmethod(lambda t, axis: torch.logsumexp(t, dim=axis))
    # integers are taken, as SciPy and torch.logsumexp take them: tests/test_logsumexp_weighted.py
    test_integer_raises = None

    @pytest.mark.parametrize("axis", [(0, 2), (-1, 0), (1, 2), (0, 1, 2), (-2,)])
    @pytest.mark.parametrize("keepdims", [False, True])
    def test_tuple_axis_and_keepdims(self, xp, rng, axis, keepdims):
        a = rng.normal(scale=3, size=(2, 3, 4))
        expected = torch.logsumexp(_t64(a), dim=axis, keepdim=keepdims).numpy()
        out = ce.logsumexp(xp.asarray(a), axis=axis, keepdims=keepdims)
        assert_close(out, expected, backend=xp, dtype="float64")

    @pytest.mark.parametrize(("shape", "axis"), [((7,), 0), ((3, 5), -2), ((2, 3, 4), 1)])
    def test_keepdims(self, xp, rng, shape, axis):
        a = rng.normal(size=shape)
        expected = torch.logsumexp(_t64(a), dim=axis, keepdim=True).numpy()
        out = ce.logsumexp(xp.asarray(a), axis=axis, keepdims=True)
        assert_close(out, expected, backend=xp, dtype="float64")

    def test_tuple_axis_out_of_range(self, xp):
        with pytest.raises(ValueError, match=r"axis=\(0, 2\) is out of range.*2 dim"):
            ce.logsumexp(xp.asarray(np.ones((2, 3))), axis=(0, 2))

    def test_hand_values(self, xp):
        a = np.array([[0.0, 0.0], [1e4, 1e4], [-INF, -INF], [INF, 1.0], [INF, -INF], [-INF, 3.0]])
        expected = [math.log(2), 1e4 + math.log(2), -INF, INF, INF, 3.0]
        assert_close(ce.logsumexp(xp.asarray(a)), expected, backend=xp, dtype="float64")

    def test_empty_axis_is_minus_infinity(self, xp):
        # the log of an empty sum, as torch.logsumexp
        out = ce.logsumexp(xp.asarray(np.ones((2, 0))), axis=-1)
        assert_close(out, [-INF, -INF], backend=xp, dtype="float64")

    def test_bounds(self, rng):
        a = rng.normal(scale=100, size=(20, 6))
        lse = ce.logsumexp(a)
        assert np.all(lse >= a.max(axis=-1))
        assert np.all(lse <= a.max(axis=-1) + math.log(6) + 1e-12)

    @pytest.mark.parametrize(("shape", "axis"), [*SHAPES_AXES, ((2, 3, 4), (0, 2))])
    def test_value_and_grad(self, rng, shape, axis):
        a = rng.normal(scale=2, size=shape)
        value, g = ce.value_and_grad(ce.logsumexp)(a, axis)
        assert_close(value, ce.logsumexp(a, axis))
        assert_close(g, finite_difference(lambda z: ce.logsumexp(z, axis), a), rtol=1e-6, atol=1e-8)
        if not isinstance(axis, tuple):
            # the gradient of logsumexp is softmax (PyTorch's)
            assert_close(g, torch.softmax(_t64(a), dim=axis).numpy(), rtol=1e-12, atol=1e-15)

    def test_value_and_grad_backends(self, xp, rng):
        a = rng.normal(scale=2, size=(3, 4))
        value, g = ce.value_and_grad(ce.logsumexp)(xp.asarray(a), 0)
        assert_close(value, torch.logsumexp(_t64(a), dim=0).numpy(), backend=xp, dtype="float64")
        assert_close(g, torch.softmax(_t64(a), dim=0).numpy(), backend=xp, dtype="float64")

    def test_value_and_grad_extreme(self):
        a = np.array([[1e4, 0.0, -1e4], [-INF, 0.0, 0.0]])
        value, g = ce.value_and_grad(ce.logsumexp)(a)
        assert_close(value, [1e4, math.log(2)])
        assert_close(g, [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])


class TestSoftmax(_Reduction):
    fn = staticmethod(ce.softmax)
    torch_fn = staticmethod(lambda t, axis: torch.softmax(t, dim=axis))

    def test_hand_values(self):
        e = np.exp([2.0, 1.0, 0.1])
        assert_close(ce.softmax([2.0, 1.0, 0.1]), e / e.sum(), rtol=1e-15)
        assert_close(ce.softmax([1e4, 0.0]), [1.0, 0.0])
        assert_close(ce.softmax([-1e4, -1e4]), [0.5, 0.5])

    @pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
    def test_sums_to_one(self, xp, rng, shape, axis):
        a = rng.normal(scale=30, size=shape)
        s = xp.to_numpy(ce.softmax(xp.asarray(a), axis=axis))
        assert np.all((s >= 0) & (s <= 1))
        assert_close(s.sum(axis=axis), np.ones(np.delete(shape, axis % len(shape))), atol=1e-14)


class TestLogSoftmax(_Reduction):
    fn = staticmethod(ce.log_softmax)
    torch_fn = staticmethod(lambda t, axis: F.log_softmax(t, dim=axis))

    def test_hand_values(self):
        a = np.array([2.0, 1.0, 0.1])
        assert_close(ce.log_softmax(a), a - math.log(np.exp(a).sum()), rtol=1e-15)
        # log(softmax) would give log(0) = -inf here
        assert_close(ce.log_softmax([0.0, -1000.0]), [0.0, -1000.0])

    def test_is_x_minus_logsumexp(self, rng):
        a = rng.normal(scale=1e3, size=(4, 5))
        assert_close(ce.log_softmax(a, axis=0), a - ce.logsumexp(a, axis=0, keepdims=True))


class TestSigmoid(_Elementwise):
    fn = staticmethod(ce.sigmoid)
    torch_fn = staticmethod(torch.sigmoid)

    def test_hand_values(self):
        assert_close(
            ce.sigmoid([0.0, 2.0, -2.0]), [0.5, 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]
        )

    def test_symmetry(self, rng):
        a = rng.normal(scale=20, size=50)
        assert_close(ce.sigmoid(a) + ce.sigmoid(-a), np.ones(50), rtol=1e-15)


class TestLogSigmoid(_Elementwise):
    fn = staticmethod(ce.log_sigmoid)
    torch_fn = staticmethod(F.logsigmoid)

    def test_hand_values(self):
        # log sigma(-x) ~ -x for large x, where log(sigmoid) would give -inf
        assert_close(ce.log_sigmoid([0.0, -1e4, 40.0]), [-math.log(2), -1e4, -math.exp(-40)])

    def test_is_log_of_sigmoid(self, rng):
        a = rng.normal(scale=5, size=50)
        assert_close(ce.log_sigmoid(a), np.log(ce.sigmoid(a)), rtol=1e-13)


# -- autograd through the forward at the kink of |x| -------------------------------------


_AT_ZERO = [
    # (function of a 1-D array x, its derivative at x = 0, elementwise)
    (lambda x: ce.sigmoid(x), 0.25),  # s (1 - s)
    (lambda x: ce.log_sigmoid(x), 0.5),  # 1 - s
    (lambda x: ce.binary_cross_entropy_with_logits(x, x * 0 + 0.25, reduction="none"), 0.25),
    (lambda x: ce.sigmoid_focal_loss(x, x * 0 + 1.0, alpha=-1, gamma=0.0), -0.5),  # s - t
]


@pytest.mark.parametrize(("fn", "slope"), _AT_ZERO)
def test_torch_autograd_at_zero(fn, slope):
    """PyTorch's autograd through the forward (abs has slope 0 at its kink) must
    still give the derivative at x = 0, and on both sides of it."""
    torch = pytest.importorskip("torch")
    for x0 in (0.0, 1e-30, -1e-30):
        x = torch.full((3,), x0, dtype=torch.float64, requires_grad=True)
        fn(x).sum().backward()
        assert_close(x.grad.numpy(), np.full(3, slope), rtol=1e-12)


@pytest.mark.skipif(not HAVE_JAX, reason="JAX is not installed")
@pytest.mark.parametrize(("fn", "slope"), _AT_ZERO)
def test_jax_grad_at_zero(fn, slope):
    import jax
    import jax.numpy as jnp

    for x0 in (0.0, 1e-30, -1e-30):
        g = jax.grad(lambda x: fn(x).sum())(jnp.full((3,), x0, dtype=jnp.float32))
        assert_close(np.asarray(g), np.full(3, slope, dtype=np.float32), dtype="float32")


@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid"])
def test_torch_autograd_at_extremes(name):
    """Through the forward's branches, the gradients at +-inf, +-1e4 and +-30 are PyTorch's
    own (no NaN from the branch that is not taken)."""
    torch = pytest.importorskip("torch")
    values = [-math.inf, -1e4, -30.0, -1e-300, 0.0, 1e-300, 30.0, 1e4, math.inf]
    ours = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_()
    getattr(ce, name)(ours).sum().backward()
    getattr(torch.nn.functional, "logsigmoid" if name == "log_sigmoid" else "sigmoid")(
        theirs
    ).sum().backward()
    assert_close(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-12)
