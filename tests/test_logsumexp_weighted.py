"""logsumexp with SciPy's b= and return_sign=, integer and complex input: SciPy's own test
values (scipy/special/tests/test_logsumexp.py) and the live scipy.special.logsumexp."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.special import logsumexp as sp_lse

import crossentropy as ce
from tests.support import assert_close, finite_difference

INF = math.inf


def lse(a, **kw):
    """ce.logsumexp over every axis, as SciPy's default."""
    a = np.asarray(a)
    return ce.logsumexp(a, axis=tuple(range(a.ndim)), **kw)


class TestScipyValues:
    def test_b(self):
        a, b = np.arange(200.0), np.arange(200.0, 0.0, -1.0)
        assert_close(lse(a, b=b), np.log(np.sum(b * np.exp(a))), rtol=1e-13)
        assert_close(lse(np.array([1000, 1000]), b=np.array([1.2, 1.2])), 1000 + math.log(2 * 1.2), rtol=1e-15)
        x, b = np.full(100000, 1e-40), np.linspace(1, 1000, 100000)
        logX, B = np.stack([np.log(x), np.log(x)]), np.stack([b, b])
        assert_close(np.exp(lse(logX, b=B)), np.sum(B * np.stack([x, x])), rtol=1e-10, atol=0)
        assert_close(np.exp(ce.logsumexp(logX, b=B, axis=0)), (B * np.stack([x, x])).sum(0), rtol=1e-10, atol=0)
        assert_close(np.exp(ce.logsumexp(logX, b=B, axis=1)), (B * np.stack([x, x])).sum(1), rtol=1e-10, atol=0)

    def test_sign(self):
        r, s = lse([1, 1, 1], b=[1, -1, -1], return_sign=True)
        assert_close(r, 1.0)
        assert s == -1.0
        r, s = lse([1, 1], b=[1, -1], return_sign=True)  # the sum cancels exactly
        assert r == -INF and s == 0

    def test_sign_shapes(self):
        a = np.ones((1, 2, 3, 4))
        r, s = ce.logsumexp(a, axis=2, b=np.ones_like(a), return_sign=True)
        assert r.shape == s.shape == (1, 2, 4)
        r, s = ce.logsumexp(a, axis=(1, 3), b=np.ones_like(a), return_sign=True)
        assert r.shape == s.shape == (1, 3)

    def test_complex_sign(self):
        a = np.array([1 + 1j, 2 - 1j, -2 + 3j])
        r, s = lse(a, return_sign=True)
        total = np.sum(np.exp(a))
        assert_close(s.real, (total / abs(total)).real)
        assert_close(s.imag, (total / abs(total)).imag)
        np.testing.assert_allclose(s * np.exp(r), total, rtol=1e-14)

    def test_b_zero_removes_the_entry(self):
        assert_close(lse([1, 10000], b=[1, 0]), 1.0)
        assert_close(lse([1.0, INF, np.nan], b=[1, 0, 0]), 1.0)

    def test_b_broadcasts(self):
        a, b = np.zeros((4, 1, 2, 1)), np.ones((3, 1, 5))
        out = ce.logsumexp(a, axis=(0, 1, 2, 3), b=b)
        assert_close(out, math.log(4 * 3 * 2 * 5))

    @pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "complex64", "complex128"])
    def test_dtypes(self, dtype):
        out = lse(np.array([1000, 1000], dtype=dtype))
        expected_dtype = np.float64 if "int" in dtype else np.dtype(dtype)
        assert out.dtype == expected_dtype
        np.testing.assert_allclose(out, 1000 + math.log(2), rtol=1e-6)

    @pytest.mark.parametrize(("da", "db"), itertools.product(["float32", "float64", "int32", "int64"], repeat=2))
    def test_dtypes_ab(self, da, db):
        out = lse(np.array([2, 1], dtype=da), b=np.array([1, -1], dtype=db))
        expected = np.result_type(da, db)
        assert out.dtype == (np.float64 if np.issubdtype(expected, np.integer) else expected)
        np.testing.assert_allclose(out, math.log(math.exp(2) - math.exp(1)), rtol=1e-6)

    def test_small_remainder_keeps_precision(self):
        # gh-18295: log(1 + e^-40) is e^-40, not 0
        assert_close(lse([0.0, -40.0], b=[1.0, 1.0]), np.logaddexp(0.0, -40.0), rtol=1e-14, atol=0)

    @pytest.mark.parametrize("dtype", ["complex64", "complex128"])
    def test_complex_imaginary_part_in_principal_range(self, dtype):
        rng = np.random.default_rng(324984329582349862)
        x = (rng.uniform(1, 40, (10, 100)) + 1j * rng.uniform(1, 40, (10, 100))).astype(dtype)
        res = ce.logsumexp(x, axis=1)
        assert np.all(np.abs(res.imag) < np.pi)
        np.testing.assert_allclose(res, np.log(np.sum(np.exp(x), axis=1)), rtol=1e-5 if dtype == "complex64" else 1e-12)
        out, sgn = ce.logsumexp(x, axis=1, return_sign=True)
        ref = np.sum(np.exp(x), axis=1)
        np.testing.assert_allclose(out, np.real(np.log(ref)), rtol=1e-5)
        np.testing.assert_allclose(sgn, ref / np.abs(ref), rtol=1e-5)

    def test_small_imaginary_part(self):
        res = lse(np.array([0, 2.2204460492503132e-17j]))
        assert_close(res.real, 0.6931471805599453)
        np.testing.assert_allclose(res.imag, 1.1102230246251566e-17, rtol=1e-15)

    @pytest.mark.parametrize(("x", "y"), itertools.product(
        [-INF, INF, complex(-INF, 0.0), complex(INF, 0.0), complex(-INF, INF), complex(INF, -INF),
         complex(-INF, 2.3562), complex(INF, 3.9270)], repeat=2))  # fmt: skip
    def test_infinite_elements(self, x, y):
        with np.errstate(all="ignore"):
            ref = np.log(np.sum(np.exp(np.array([x, y]))))
        np.testing.assert_equal(lse(np.array([x, y])), ref)

    def test_negative_result_is_nan_without_sign(self):
        a = np.array([3.06409428, 0.37251854, 3.87471931])
        b = np.array([1.88190708, 2.84174795, -0.85016884])
        assert_close(lse(a, b=b), lse(a, b=b, return_sign=True)[0])
        assert np.isnan(lse(a, b=np.array([1.88190708, 2.84174795, -3.85016884])))

    @pytest.mark.parametrize(("b", "sign"), [(None, 1.0), ([-1.0], -1.0)])
    def test_infinite_value_has_a_sign(self, b, sign):
        val, s = lse(np.array([INF]), b=b, return_sign=True)
        assert val == INF and s == sign

    def test_inputs_not_mutated(self):
        a, b = np.array([5.0, 4.0]), np.array([3.0, 2.0])
        lse(a, b=b)
        np.testing.assert_array_equal(a, [5.0, 4.0])
        np.testing.assert_array_equal(b, [3.0, 2.0])


def test_matches_live_scipy(rng):
    a = rng.normal(0, 20, size=(4, 6))
    b = rng.normal(size=(4, 6))
    for axis in (0, 1, (0, 1)):
        r, s = ce.logsumexp(a, axis=axis, b=b, return_sign=True)
        rs, ss = sp_lse(a, axis=axis, b=b, return_sign=True)
        assert_close(r, rs, rtol=1e-12)
        np.testing.assert_array_equal(s, ss)
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(ce.logsumexp(a, axis=axis, b=b), sp_lse(a, axis=axis, b=b), rtol=1e-12)


def test_backends_integer_and_weighted(xp, rng):
    a, b = rng.integers(-5, 5, size=(3, 4)), rng.uniform(0.1, 2.0, size=(3, 4))
    out = ce.logsumexp(xp.asarray(a), axis=1, b=xp.asarray(b))
    assert_close(out, sp_lse(a, axis=1, b=b), backend=xp, dtype="float64")
    out = ce.logsumexp(xp.asarray(a))
    dtype = "float32" if xp.name == "torch" else "float64"  # each library's default floating dtype
    assert_close(out, sp_lse(a, axis=-1), backend=xp, dtype=dtype, rtol=1e-6)


def test_torch_integer_and_complex_like_torch():
    torch = pytest.importorskip("torch")
    t = torch.arange(6).reshape(2, 3)
    out = ce.logsumexp(t, axis=1)
    ref = torch.logsumexp(t, dim=1)
    assert out.dtype == ref.dtype
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-6)
    z = torch.tensor([[1 + 1j, 2 - 1j, -2 + 3j]], dtype=torch.complex128)
    np.testing.assert_allclose(ce.logsumexp(z, axis=1).numpy(), torch.logsumexp(z, dim=1).numpy(), rtol=1e-12)


@pytest.mark.parametrize("axis", [-1, 0, (0, 1)])
def test_weighted_gradient(rng, axis):
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)) + 2.0
    value, g = ce.value_and_grad(ce.logsumexp)(a, axis, b=b, return_sign=True)
    f = lambda z: ce.logsumexp(z, axis, b=b, return_sign=True)[0]  # noqa: E731
    assert_close(value[0], f(a))
    assert_close(g, finite_difference(f, a), rtol=1e-6, atol=1e-9)


def test_bool_raises_and_a_scalar_is_one_term():
    with pytest.raises(ce.DTypeError, match="x must have a floating-point dtype.*bool"):
        ce.logsumexp(np.array([True, False]))
    # a 0-d x is one term along axis 0 or -1, as in SciPy: log(b e^x)
    out, sign = ce.logsumexp(np.float64(1.0), b=-2.0, return_sign=True)
    ref = sp_lse(1.0, b=-2.0, return_sign=True)
    assert_close(out, ref[0])
    assert float(sign) == ref[1] == -1.0
    with pytest.raises(ValueError, match="axis=1 is out of range"):
        ce.logsumexp(np.float64(1.0), axis=1, b=1.0)
