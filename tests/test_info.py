"""Tests for crossentropy.info: entropy, information, cross_entropy, kl_divergence, js_divergence.

Oracles: ``scipy.stats.entropy`` (which renormalises, so it is only fed
normalised vectors), ``scipy.special.entr`` / ``rel_entr`` / ``xlogy``,
``scipy.spatial.distance.jensenshannon`` and naive float64 formulas; the
seeds' worked numbers exactly as they state them; gradients against central
finite differences.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.special as sp
import scipy.stats

import crossentropy as ce
from crossentropy import info
from tests.support import assert_close, finite_difference

LN2 = math.log(2)
BASES = [None, 2, 10, math.e]
# (shape, axis) of the arrays of probability vectors
SHAPES_AXES = [((5,), -1), ((5,), 0), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -3)]


def _probs(rng, shape, axis=-1, zeros=False):
    """Probability vectors along ``axis`` (normalised), optionally with zero entries."""
    a = rng.uniform(0.05, 1.0, size=shape)
    if zeros:
        a[rng.random(shape) < 0.3] = 0.0
        first = [slice(None)] * len(shape)
        first[axis] = 0
        a[tuple(first)] = 0.5  # never a vector of only zeros
    return a / a.sum(axis=axis, keepdims=True)


def _scale(base):
    return 1.0 if base is None else 1.0 / math.log(base)


def _naive_cross_entropy(p, q, axis=-1, base=None):
    return -np.sum(sp.xlogy(p, q), axis=axis) * _scale(base)


def _naive_kl(p, q, axis=-1, base=None):
    return np.sum(sp.rel_entr(p, q), axis=axis) * _scale(base)


def _naive_js(p, q, axis=-1, base=None):
    m = (p + q) / 2
    return (_naive_kl(p, m, axis) + _naive_kl(q, m, axis)) / 2 * _scale(base)


# -- entropy -------------------------------------------------------------------------


class TestEntropy:
    def test_seed_lottery(self):
        # the lottery of the seeds, in bits, as they state it
        assert float(ce.entropy([0.25, 0.25, 0.25, 0.25], base=2)) == 2.0
        assert round(float(ce.entropy([0.1, 0.1, 0.1, 0.7], base=2)), 4) == 1.3568
        assert round(float(ce.entropy([0.001, 0.001, 0.001, 0.999], base=2)), 4) == 0.0313

    def test_seed_vector_used_as_given(self):
        # [0.001]*3 + [0.999] sums to 1.002: the formula is applied to exactly those numbers
        p = np.array([0.001, 0.001, 0.001, 0.999])
        assert_close(ce.entropy(p, base=2), -np.sum(p * np.log2(p)), rtol=1e-14)
        renormalised = scipy.stats.entropy(p, base=2)  # what dividing by the sum would give
        assert abs(float(ce.entropy(p, base=2)) - renormalised) > 1e-3

    def test_top_level_is_info_entropy(self):
        assert ce.entropy is info.entropy

    @pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
    @pytest.mark.parametrize("base", BASES)
    def test_matches_scipy(self, xp, rng, shape, axis, base):
        p = _probs(rng, shape, axis, zeros=True)
        expected = scipy.stats.entropy(p, base=base, axis=axis)
        out = info.entropy(xp.asarray(p), axis=axis, base=base)
        assert_close(out, expected, backend=xp, dtype="float64", rtol=1e-12, atol=1e-15)
        assert_close(out, sp.entr(p).sum(axis=axis) * _scale(base), backend=xp, rtol=1e-12)

    def test_hand_values(self, xp):
        p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
        # 0 log 0 = 0; a certain outcome has no entropy; the uniform one has log C
        out = info.entropy(xp.asarray(p))
        assert_close(out, [LN2, 0.0, math.log(3)], backend=xp, dtype="float64", rtol=1e-15)

    def test_bits_to_nats_ratio_is_ln2(self, rng):
        p = _probs(rng, (6, 5))
        assert_close(info.entropy(p) / info.entropy(p, base=2), np.full(6, LN2), rtol=1e-14)

    def test_float32_preserved(self, xp, rng):
        p = _probs(rng, (3, 4), zeros=True)
        out = info.entropy(xp.asarray(p, dtype="float32"))
        expected = scipy.stats.entropy(p.astype(np.float32).astype(np.float64), axis=-1)
        assert_close(out, expected, backend=xp, dtype="float32", rtol=1e-5, atol=1e-6)

    def test_axis_and_base_are_keyword_only(self):
        with pytest.raises(TypeError):
            info.entropy([0.5, 0.5], -1)

    @pytest.mark.parametrize("base", [None, 2])
    @pytest.mark.parametrize("axis", [-1, 0])
    def test_value_and_grad(self, rng, axis, base):
        p = rng.uniform(0.05, 0.9, size=(3, 4))  # strictly positive, not normalised
        value, g = ce.value_and_grad(info.entropy)(p, axis=axis, base=base)
        assert_close(value, info.entropy(p, axis=axis, base=base))
        fd = finite_difference(lambda z: info.entropy(z, axis=axis, base=base), p)
        assert_close(g, fd, rtol=1e-6, atol=1e-8)
        assert_close(g, -(np.log(p) + 1) * _scale(base), rtol=1e-14)

    def test_value_and_grad_backends(self, xp, rng):
        p = rng.uniform(0.05, 0.9, size=(3, 4))
        value, g = ce.value_and_grad(info.entropy)(xp.asarray(p))
        assert_close(value, sp.entr(p).sum(axis=-1), backend=xp, dtype="float64")
        assert_close(g, -(np.log(p) + 1), backend=xp, dtype="float64")


# -- information -----------------------------------------------------------------------


class TestInformation:
    def test_hand_values(self, xp):
        p = np.array([1.0, 0.5, 0.25, 0.125])
        out = info.information(xp.asarray(p), base=2)
        assert_close(out, [0.0, 1.0, 2.0, 3.0], backend=xp, dtype="float64", rtol=1e-15)

    def test_impossible_event_is_infinite(self, xp):
        out = info.information(xp.asarray(np.array([0.0, 1.0])))
        assert_close(out, [math.inf, 0.0], backend=xp, dtype="float64")

    @pytest.mark.parametrize("base", BASES)
    def test_matches_minus_log(self, xp, rng, base):
        p = rng.uniform(0.0, 1.0, size=(3, 4))
        out = info.information(xp.asarray(p), base=base)
        assert_close(out, -np.log(p) * _scale(base), backend=xp, dtype="float64", rtol=1e-14)

    def test_float32_preserved(self, xp, rng):
        p = rng.uniform(0.01, 1.0, size=(5,)).astype(np.float32)
        out = info.information(xp.asarray(p))
        assert_close(out, -np.log(p.astype(np.float64)), backend=xp, dtype="float32", rtol=1e-6)

    def test_entropy_is_expected_information(self, rng):
        p = _probs(rng, (4,))
        assert_close(info.entropy(p), np.sum(p * info.information(p)), rtol=1e-14)


# -- cross-entropy H(p, q) ---------------------------------------------------------------


class TestCrossEntropy:
    P1 = [1.0, 0.0, 0.0, 0.0, 0.0]

    def test_seed_before_and_after_training(self):
        before = info.cross_entropy(self.P1, [0.4, 0.3, 0.05, 0.05, 0.2])
        after = info.cross_entropy(self.P1, [0.98, 0.01, 0.0, 0.0, 0.01])
        assert round(float(before), 3) == 0.916
        assert round(float(after), 2) == 0.02
        assert round(float(after), 4) == 0.0202
        assert_close(before, -math.log(0.4), rtol=1e-15)
        assert_close(after, -math.log(0.98), rtol=1e-15)

    def test_seed_cat_dog_horse(self):
        out = info.cross_entropy([0.0, 0.0, 1.0], [0.1, 0.1, 0.8])
        assert round(float(out), 4) == 0.2231
        assert round(float(out), 2) == 0.22
        assert_close(out, -math.log(0.8), rtol=1e-15)

    @pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
    @pytest.mark.parametrize("base", [None, 2])
    def test_matches_oracle(self, xp, rng, shape, axis, base):
        p = _probs(rng, shape, axis, zeros=True)
        q = _probs(rng, shape, axis)
        out = info.cross_entropy(xp.asarray(p), xp.asarray(q), axis=axis, base=base)
        expected = _naive_cross_entropy(p, q, axis, base)
        assert_close(out, expected, backend=xp, dtype="float64", rtol=1e-12)
        # H(p, q) = H(p) + KL(p || q), both from scipy
        h = scipy.stats.entropy(p, axis=axis, base=base)
        kl = scipy.stats.entropy(p, q, axis=axis, base=base)
        assert_close(out, h + kl, backend=xp, rtol=1e-12, atol=1e-15)

    def test_zero_probabilities(self, xp):
        p = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
        q = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
        # infinite where q = 0 < p; a zero p ignores its q, even q = 0
        out = info.cross_entropy(xp.asarray(p), xp.asarray(q))
        assert_close(out, [math.inf, LN2, 0.0], backend=xp, dtype="float64", rtol=1e-15)

    def test_broadcasting(self, xp, rng):
        p = _probs(rng, (3, 4))
        q = _probs(rng, (4,))
        out = info.cross_entropy(xp.asarray(p), xp.asarray(q))
        expected = _naive_cross_entropy(p, q[None, :])
        assert_close(out, expected, backend=xp, dtype="float64", rtol=1e-12)

    def test_of_itself_is_entropy(self, rng):
        p = _probs(rng, (4, 5), zeros=True)
        assert_close(info.cross_entropy(p, p), info.entropy(p), rtol=1e-14)

    def test_dtype_preserved_and_promoted(self, xp, rng):
        p, q = _probs(rng, (2, 3)), _probs(rng, (2, 3))
        expected = _naive_cross_entropy(p, q)
        p32, q32 = xp.asarray(p, dtype="float32"), xp.asarray(q, dtype="float32")
        assert_close(info.cross_entropy(p32, q32), expected, backend=xp, dtype="float32", rtol=1e-5)
        # float32 with float64: float64, as the array libraries promote
        mixed = info.cross_entropy(p32, xp.asarray(q))
        assert_close(mixed, expected, backend=xp, dtype="float64", rtol=1e-6)

    @pytest.mark.parametrize("base", [None, 2])
    @pytest.mark.parametrize("axis", [-1, 0])
    def test_value_and_grad(self, rng, axis, base):
        p = rng.uniform(0.05, 0.9, size=(3, 4))
        q = rng.uniform(0.05, 0.9, size=(3, 4))
        kw = {"axis": axis, "base": base}
        value, (gp, gq) = ce.value_and_grad(info.cross_entropy, (0, 1))(p, q, **kw)
        assert_close(value, _naive_cross_entropy(p, q, axis, base), rtol=1e-14)
        fd_p = finite_difference(lambda z: info.cross_entropy(z, q, **kw), p)
        fd_q = finite_difference(lambda z: info.cross_entropy(p, z, **kw), q)
        assert_close(gp, fd_p, rtol=1e-6, atol=1e-8)
        assert_close(gq, fd_q, rtol=1e-6, atol=1e-8)
        _, gp0 = ce.value_and_grad(info.cross_entropy, 0)(p, q, **kw)
        _, gq1 = ce.value_and_grad(info.cross_entropy, 1)(p, q, **kw)
        assert_close(gp0, gp)
        assert_close(gq1, gq)

    def test_value_and_grad_backends(self, xp, rng):
        p, q = rng.uniform(0.05, 0.9, size=(2, 3)), rng.uniform(0.05, 0.9, size=(2, 3))
        _, (gp, gq) = ce.value_and_grad(info.cross_entropy, (0, 1))(xp.asarray(p), xp.asarray(q))
        assert_close(gp, -np.log(q), backend=xp, dtype="float64")
        assert_close(gq, -p / q, backend=xp, dtype="float64")


# -- Kullback-Leibler ----------------------------------------------------------------------


class TestKLDivergence:
    def test_hand_values(self):
        expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
        assert_close(info.kl_divergence([0.5, 0.5], [0.9, 0.1]), expected, rtol=1e-15)
        assert round(float(info.kl_divergence([0.5, 0.5], [0.9, 0.1])), 4) == 0.5108

    @pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
    @pytest.mark.parametrize("base", [None, 2])
    def test_matches_scipy(self, xp, rng, shape, axis, base):
        p = _probs(rng, shape, axis, zeros=True)
        q = _probs(rng, shape, axis)
        out = info.kl_divergence(xp.asarray(p), xp.asarray(q), axis=axis, base=base)
        expected = scipy.stats.entropy(p, q, axis=axis, base=base)
        assert_close(out, expected, backend=xp, dtype="float64", rtol=1e-12, atol=1e-15)
        assert_close(out, _naive_kl(p, q, axis, base), backend=xp, rtol=1e-12, atol=1e-15)

    def test_matches_torch_kl_div(self, rng):
        torch = pytest.importorskip("torch")
        p, q = _probs(rng, (5,), zeros=True), _probs(rng, (5,))
        expected = torch.nn.functional.kl_div(
            torch.from_numpy(np.log(q)), torch.from_numpy(p), reduction="sum"
        )
        assert_close(info.kl_divergence(p, q), float(expected), rtol=1e-12)

    def test_zero_probabilities(self, xp):
        p = np.array([[0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])
        q = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
        # infinite where q = 0 < p, finite where p = 0
        out = info.kl_divergence(xp.asarray(p), xp.asarray(q))
        assert_close(out, [math.inf, LN2, 0.0], backend=xp, dtype="float64", rtol=1e-15)

    def test_zero_for_equal_and_not_symmetric(self, rng):
        p, q = _probs(rng, (4, 5), zeros=True), _probs(rng, (4, 5))
        assert np.all(info.kl_divergence(p, p) == 0.0)
        assert np.all(info.kl_divergence(p, q) > 0)
        assert not np.allclose(info.kl_divergence(p, q), info.kl_divergence(q, p))

    def test_float32_preserved(self, xp, rng):
        p, q = _probs(rng, (2, 3)), _probs(rng, (2, 3))
        out = info.kl_divergence(xp.asarray(p, dtype="float32"), xp.asarray(q, dtype="float32"))
        p64, q64 = p.astype(np.float32).astype(float), q.astype(np.float32).astype(float)
        assert_close(out, _naive_kl(p64, q64), backend=xp, dtype="float32", rtol=1e-4, atol=1e-6)

    @pytest.mark.parametrize("base", [None, 2])
    @pytest.mark.parametrize("axis", [-1, 0])
    def test_value_and_grad(self, rng, axis, base):
        p = rng.uniform(0.05, 0.9, size=(3, 4))
        q = rng.uniform(0.05, 0.9, size=(3, 4))
        kw = {"axis": axis, "base": base}
        value, (gp, gq) = ce.value_and_grad(info.kl_divergence, (0, 1))(p, q, **kw)
        assert_close(value, _naive_kl(p, q, axis, base), rtol=1e-13)
        fd_p = finite_difference(lambda z: info.kl_divergence(z, q, **kw), p)
        fd_q = finite_difference(lambda z: info.kl_divergence(p, z, **kw), q)
        assert_close(gp, fd_p, rtol=1e-6, atol=1e-8)
        assert_close(gq, fd_q, rtol=1e-6, atol=1e-8)
        assert_close(ce.grad(info.kl_divergence, 0)(p, q, **kw), gp)
        assert_close(ce.grad(info.kl_divergence, 1)(p, q, **kw), gq)

    def test_value_and_grad_backends(self, xp, rng):
        p, q = rng.uniform(0.05, 0.9, size=(2, 3)), rng.uniform(0.05, 0.9, size=(2, 3))
        _, (gp, gq) = ce.value_and_grad(info.kl_divergence, (0, 1))(xp.asarray(p), xp.asarray(q))
        assert_close(gp, np.log(p / q) + 1, backend=xp, dtype="float64", rtol=1e-12)
        assert_close(gq, -p / q, backend=xp, dtype="float64")


# -- Jensen-Shannon ----------------------------------------------------------------------------


class TestJSDivergence:
    @pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
    @pytest.mark.parametrize("base", [None, 2])
    def test_matches_scipy(self, xp, rng, shape, axis, base):
        p = _probs(rng, shape, axis, zeros=True)
        q = _probs(rng, shape, axis, zeros=True)
        out = info.js_divergence(xp.asarray(p), xp.asarray(q), axis=axis, base=base)
        # scipy returns the distance, the square root of the divergence
        distance = scipy.spatial.distance.jensenshannon(p, q, axis=axis, base=base)
        assert_close(out, distance**2, backend=xp, dtype="float64", rtol=1e-10, atol=1e-15)
        assert_close(out, _naive_js(p, q, axis, base), backend=xp, rtol=1e-12, atol=1e-15)

    def test_hand_values(self, xp):
        p = np.array([[1.0, 0.0], [0.5, 0.5], [1.0, 0.0]])
        q = np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
        # disjoint supports: log 2 (1 bit), finite where KL is not
        expected = [1.0, 0.0, (0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * LN2) / LN2]
        out = info.js_divergence(xp.asarray(p), xp.asarray(q), base=2)
        assert_close(out, expected, backend=xp, dtype="float64", rtol=1e-14, atol=1e-16)

    def test_symmetric_and_bounded(self, rng):
        p, q = _probs(rng, (20, 4), zeros=True), _probs(rng, (20, 4), zeros=True)
        js = info.js_divergence(p, q)
        assert_close(js, info.js_divergence(q, p), rtol=1e-14, atol=1e-16)
        assert np.all(js >= 0) and np.all(js <= LN2)
        assert np.all(info.js_divergence(p, q, base=2) <= 1.0)

    def test_float32_preserved(self, xp, rng):
        p, q = _probs(rng, (2, 3)), _probs(rng, (2, 3))
        out = info.js_divergence(xp.asarray(p, dtype="float32"), xp.asarray(q, dtype="float32"))
        p64, q64 = p.astype(np.float32).astype(float), q.astype(np.float32).astype(float)
        assert_close(out, _naive_js(p64, q64), backend=xp, dtype="float32", rtol=1e-4, atol=1e-6)

    def test_torch_autograd(self, rng):
        torch = pytest.importorskip("torch")
        p, q = rng.uniform(0.05, 0.9, size=(2, 3)), rng.uniform(0.05, 0.9, size=(2, 3))
        tp = torch.tensor(p, requires_grad=True)
        info.js_divergence(tp, torch.from_numpy(q)).sum().backward()
        fd = finite_difference(lambda z: info.js_divergence(z, q), p)
        assert_close(tp.grad.numpy(), fd, rtol=1e-6, atol=1e-8)


# -- arguments, shared by every function ------------------------------------------------------

ONE_ARG = {"entropy": info.entropy, "information": info.information}
TWO_ARGS = {
    "cross_entropy": info.cross_entropy,
    "kl_divergence": info.kl_divergence,
    "js_divergence": info.js_divergence,
}
HALF = np.array([0.5, 0.5])


def _call(name, p, q=HALF, **kw):
    if name in ONE_ARG:
        return ONE_ARG[name](p, **kw)
    return TWO_ARGS[name](p, q, **kw)


ALL = [*ONE_ARG, *TWO_ARGS]


class TestArguments:
    @pytest.mark.parametrize("name", ALL)
    @pytest.mark.parametrize("base", [1, 1.0, 0, -2, -0.5])
    def test_invalid_base(self, name, base):
        with pytest.raises(ValueError, match=rf"base must be positive and not 1, got {base}"):
            _call(name, HALF, base=base)

    @pytest.mark.parametrize("name", ALL)
    @pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
    def test_p_outside_unit_interval(self, xp, name, bad):
        p = xp.asarray(np.array([[0.2, 0.8], [bad, 0.5]]))
        with pytest.raises(ValueError, match=r"^p must hold probabilities in \[0, 1\], found"):
            _call(name, p, xp.asarray(HALF))

    @pytest.mark.parametrize("name", TWO_ARGS)
    @pytest.mark.parametrize("bad", [-0.1, 1.5])
    def test_q_outside_unit_interval(self, xp, name, bad):
        q = xp.asarray(np.array([bad, 1 - bad]))
        msg = rf"^q must hold probabilities in \[0, 1\], found {bad}"
        with pytest.raises(ValueError, match=msg):
            TWO_ARGS[name](xp.asarray(HALF), q)

    @pytest.mark.parametrize("name", TWO_ARGS)
    def test_shapes_not_broadcastable(self, xp, name):
        p, q = xp.asarray(np.full((2, 3), 1 / 3)), xp.asarray(np.full((4, 3), 1 / 3))
        msg = r"p of shape \(2, 3\) and q of shape \(4, 3\) cannot be broadcast together"
        with pytest.raises(ValueError, match=msg):
            TWO_ARGS[name](p, q)
        # along the axis of the vectors nothing broadcasts: a length-1 q is not a distribution
        msg = r"p and q must have the same length along axis=-1 .*got 2 and 1"
        with pytest.raises(ValueError, match=msg):
            TWO_ARGS[name](xp.asarray(HALF), xp.asarray(np.array([1.0])))

    @pytest.mark.parametrize("name", ALL)
    def test_integer_input(self, xp, name):
        with pytest.raises(ce.DTypeError, match=r"^p must have a floating-point dtype"):
            _call(name, xp.asarray(np.array([1, 0])), xp.asarray(HALF))

    @pytest.mark.parametrize("name", TWO_ARGS)
    def test_integer_q(self, name):
        with pytest.raises(ce.DTypeError, match=r"^q must have a floating-point dtype"):
            TWO_ARGS[name](HALF, np.array([1, 0]))

    @pytest.mark.parametrize("name", ["entropy", *TWO_ARGS])
    @pytest.mark.parametrize("axis", [2, -3])
    def test_axis_out_of_range(self, name, axis):
        p = np.full((2, 2), 0.5)
        with pytest.raises(ValueError, match=rf"axis={axis} is out of range for p with shape"):
            _call(name, p, p, axis=axis)

    @pytest.mark.parametrize("name", ALL)
    def test_inputs_not_mutated(self, xp, name, rng):
        p, q = _probs(rng, (3, 2), zeros=True), _probs(rng, (3, 2))
        xp_p, xp_q = xp.asarray(p), xp.asarray(q)
        _call(name, xp_p, xp_q)
        np.testing.assert_array_equal(xp.to_numpy(xp_p), p)
        np.testing.assert_array_equal(xp.to_numpy(xp_q), q)

    @pytest.mark.parametrize("name", ["entropy", *TWO_ARGS])
    def test_list_input_returns_numpy(self, name):
        p, q = [[0.25, 0.75], [1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]
        out = _call(name, p, q)
        assert type(out) is np.ndarray and out.dtype == np.float64
        assert_close(out, _call(name, np.array(p), np.array(q)), rtol=0, atol=0)

    @pytest.mark.parametrize("name", ["entropy", "cross_entropy", "kl_divergence"])
    def test_torch_autograd_matches_value_and_grad(self, rng, name):
        torch = pytest.importorskip("torch")
        p, q = rng.uniform(0.05, 0.9, size=(2, 3)), rng.uniform(0.05, 0.9, size=(2, 3))
        tp = torch.tensor(p, requires_grad=True)
        _call(name, tp, torch.from_numpy(q)).sum().backward()
        fn = ONE_ARG.get(name) or TWO_ARGS[name]
        args = (p,) if name in ONE_ARG else (p, q)
        assert_close(tp.grad.numpy(), ce.grad(fn)(*args), rtol=1e-12)
