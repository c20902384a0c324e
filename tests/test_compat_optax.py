"""crossentropy.compat.optax on optax's own test values (``optax/losses/_classification_test.py``)
and against the installed optax."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from crossentropy.compat import optax as co
from tests.support import finite_difference, jax_x64

optax = pytest.importorskip("optax")
jax = pytest.importorskip("jax")
jnp = jax.numpy


@pytest.fixture(autouse=True)
def _optax_in_float64():
    """optax in float64, as the tests' inputs: for this module's tests only
    (``jax_enable_x64`` is process-global; other modules test JAX's default)."""
    with jax_x64(True):
        yield

YS = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2]], dtype=np.float32)
TS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)


class TestSoftmaxCrossEntropy:
    def test_scalar_and_batched(self):
        np.testing.assert_allclose(co.softmax_cross_entropy(YS[0], TS[0]), 9.00013, atol=1e-4)
        np.testing.assert_allclose(co.softmax_cross_entropy(YS, TS), [9.00013, 3.0696733], atol=1e-4)

    @pytest.mark.parametrize("fn", ["softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels"])
    def test_per_logit_mask_gives_zero_for_fully_masked_rows(self, fn):
        where = np.array([[1, 0, 0], [0, 0, 0]], dtype=bool)
        labels = TS if fn == "softmax_cross_entropy" else np.array([1, 0])
        out = getattr(co, fn)(YS, labels, where=where)
        assert out[1] == 0.0

    @pytest.mark.parametrize("size", [5, 10])
    @pytest.mark.parametrize("fn", ["softmax_cross_entropy", "poly_loss_cross_entropy",
                                    "generalized_kl_divergence", "kl_divergence"])  # fmt: skip
    def test_mask_equals_dropping_the_entries(self, rng, size, fn):
        preds = rng.normal(size=size)
        targets = rng.dirichlet(np.ones(size))
        mask = rng.integers(0, 2, size=size).astype(bool)
        mask[0] = True
        f = getattr(co, fn)
        np.testing.assert_allclose(f(preds, targets, where=mask), f(preds[mask], targets[mask]), rtol=1e-12)
        live = getattr(optax.losses, fn)(jnp.asarray(preds), jnp.asarray(targets), where=jnp.asarray(mask))
        np.testing.assert_allclose(f(preds, targets, where=mask), live, rtol=1e-5)

    @pytest.mark.parametrize("axis", [0, 1, 2])
    def test_axis(self, rng, axis):
        preds = rng.normal(size=(4, 5, 6))
        targets = np.moveaxis(rng.dirichlet(np.ones((4, 5, 6)[axis]), size=[4, 5, 6][:axis] + [4, 5, 6][axis + 1 :]), -1, axis)
        got = co.softmax_cross_entropy(preds, targets, axis=axis)
        ref = co.softmax_cross_entropy(np.moveaxis(preds, axis, -1), np.moveaxis(targets, axis, -1))
        np.testing.assert_allclose(got, ref, rtol=1e-12)
        np.testing.assert_allclose(got, optax.losses.softmax_cross_entropy(preds, targets, axis=axis), rtol=1e-5)

    def test_row_mask_gradient_is_finite_and_zero_on_masked_rows(self):
        value, g = ce.value_and_grad(ce.cross_entropy)(
            YS.astype(np.float64), TS.astype(np.float64), reduction="sum", axis=-1, where=np.array([True, False])
        )
        assert np.all(np.isfinite(g)) and np.all(g[1] == 0)
        np.testing.assert_allclose(value, 9.00013, atol=1e-4)


class TestSafeSoftmaxCrossEntropy:
    def test_values(self):
        ys = np.array([[10.0, 1.0, -2.0], [1.0, 4.0, 0.2], [-np.inf, 0.0, 0.0], [-np.inf, 0.0, 0.0],
                       [-np.inf, 0.0, -np.inf]], dtype=np.float32)  # fmt: skip
        ts = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.4, 0.3, 0.3],
                       [0.0, 1.0, 0.0]], dtype=np.float32)  # fmt: skip
        np.testing.assert_allclose(
            co.safe_softmax_cross_entropy(ys, ts), [9.00013, 3.0696733, 0.693147, np.inf, 0.0], atol=1e-4
        )


class TestIntegerLabels:
    def test_consistent_with_one_hot(self):
        ts = np.array([1, 0])
        np.testing.assert_allclose(
            co.softmax_cross_entropy_with_integer_labels(YS, ts), co.softmax_cross_entropy(YS, np.eye(3)[ts]), rtol=1e-6
        )

    @pytest.mark.parametrize(
        "axis", [(1, 3), (3, 2), (2, 3), (-3, -1), (-1, -2), (-2, -1), (0, 1, 3), (-4, -3, -1)]
    )
    def test_axes(self, rng, axis):
        shape = (2, 3, 4, 5)
        logits_axis = tuple(a % 4 for a in axis)
        batch_axis = tuple(i for i in range(4) if i not in logits_axis)
        n = int(np.prod([shape[a] for a in logits_axis]))
        flat = rng.uniform(size=tuple(shape[a] for a in batch_axis) + (n,))
        labels = rng.integers(0, n, size=flat.shape[:-1])
        desired = co.softmax_cross_entropy_with_integer_labels(flat, labels)
        perm = batch_axis + logits_axis
        inverse = tuple(np.argsort(perm))
        logits = flat.reshape(tuple(shape[a] for a in perm)).transpose(inverse)
        actual = co.softmax_cross_entropy_with_integer_labels(logits, labels, axis)
        np.testing.assert_allclose(actual, desired, rtol=1e-12)
        live = optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels, axis)
        np.testing.assert_allclose(actual, live, rtol=1e-5)

    def test_optax_doc_example_axes(self):
        logits = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
        labels = np.ravel_multi_index((np.array([[1, 2]]), np.array([[1, 3]])), (3, 4))
        np.testing.assert_allclose(
            co.softmax_cross_entropy_with_integer_labels(logits, labels, axis=(2, 3)), [[6.4587, 0.4587]], atol=1e-4
        )


@pytest.mark.parametrize(
    ("preds", "labels", "expected"),
    [([-1e09, -1e-09], [1.0, 0.0], 5e08), ([-1e09, -1e-09], [0.0, 1.0], 0.3465736),
     ([1e09, 1e-09], [1.0, 0.0], 0.3465736), ([1e09, 1e-09], [0.0, 1.0], 5e08),
     ([-1e09, 1e-09], [1.0, 0.0], 5e08), ([-1e09, 1e-09], [0.0, 1.0], 0.3465736),
     ([1e09, -1e-09], [1.0, 0.0], 0.3465736), ([1e09, -1e-09], [0.0, 1.0], 5e08),
     ([0.0, 0.0], [1.0, 0.0], 0.6931472), ([0.0, 0.0], [0.0, 1.0], 0.6931472)],
)  # fmt: skip
def test_sigmoid_binary_cross_entropy(preds, labels, expected):
    got = np.mean(co.sigmoid_binary_cross_entropy(np.array(preds), np.array(labels)))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


class TestPolyLoss:
    LOGITS = np.array([0.14, 1.456, 2.356, -0.124, -2.47])
    LABELS = np.array([0.1, 0.15, 0.2, 0.25, 0.3])
    BL = np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
    BT = np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])

    @pytest.mark.parametrize(("eps", "expected"), [(2, 4.5317), (1, 3.7153), (-1, 2.0827), (0, 2.8990),
                             (-0.5, 2.4908), (1.15, 3.8378), (1.214, 3.8900), (5.45, 7.3480)])  # fmt: skip
    def test_scalar(self, eps, expected):
        np.testing.assert_allclose(co.poly_loss_cross_entropy(self.LOGITS, self.LABELS, epsilon=eps), expected, atol=1e-4)

    @pytest.mark.parametrize(("eps", "expected"), [(2, [0.4823, 1.2567]), (1, [0.3261, 1.0407]),
                             (0, [0.1698, 0.8247]), (-0.5, [0.0917, 0.7168]), (1.15, [0.3495, 1.0731]),
                             (1.214, [0.3595, 1.0870]), (5.45, [1.0211, 2.0018])])  # fmt: skip
    def test_batched(self, eps, expected):
        np.testing.assert_allclose(co.poly_loss_cross_entropy(self.BL, self.BT, epsilon=eps), expected, atol=1e-4)

    def test_equals_cross_entropy_when_epsilon_is_zero(self):
        np.testing.assert_allclose(
            co.poly_loss_cross_entropy(self.BL, self.BT, epsilon=0.0), co.softmax_cross_entropy(self.BL, self.BT), rtol=1e-12
        )

    @pytest.mark.parametrize("axis", [0, 1, 2])
    def test_axis_and_live(self, rng, axis):
        preds = rng.normal(size=(4, 5, 6))
        targets = rng.dirichlet(np.ones(6), size=(4, 5))
        targets = np.moveaxis(targets, -1, axis) if axis != 2 else targets
        if axis != 2:
            preds = np.moveaxis(preds, -1, axis)
        got = co.poly_loss_cross_entropy(preds, targets, axis=axis)
        np.testing.assert_allclose(got, optax.losses.poly_loss_cross_entropy(preds, targets, axis=axis), rtol=1e-5)


LOG_PS = np.array([[-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026],
                   [-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971]])  # fmt: skip
QS = np.array([[0.2, 0.2, 0.2, 0.1, 0.15, 0.15], [0.05, 0.03, 0.02, 0.3, 0.5, 0.0]])


def test_generalized_and_convex_kl():
    np.testing.assert_allclose(co.generalized_kl_divergence(LOG_PS, QS), [0.88757247, 0.859308], atol=1e-4)
    np.testing.assert_allclose(co.convex_kl_divergence(LOG_PS[0], QS[0]), 0.88757247, atol=1e-4)


def test_kl_divergence_values():
    np.testing.assert_allclose(co.kl_divergence(LOG_PS, QS), [0.8875577, 0.7592807], atol=1e-4)
    log_qs = np.array([[-1.6094, -1.6094, -1.6094, -2.3026, -1.8971, -1.8971],
                       [-2.9957, -3.5066, -3.9120, -1.2040, -0.6931, -2.3026]])  # fmt: skip
    np.testing.assert_allclose(
        co.kl_divergence_with_log_targets(LOG_PS, log_qs), [0.8875625, 0.7187435584901326], atol=1e-4
    )


def test_hinge_losses():
    np.testing.assert_allclose(co.hinge_loss(np.array([10.0, 20.0]), np.array([1.0, -1.0])), [0.0, 21.0])
    scores, label = np.array([[10.0, 3.0], [11.0, -2.0]]), np.array([1, 0])
    expected = [np.max(s + 1.0 - np.eye(2)[y]) - s[y] for s, y in zip(scores, label)]
    np.testing.assert_allclose(co.multiclass_hinge_loss(scores, label), expected)
    np.testing.assert_allclose(co.multiclass_hinge_loss(scores, label), optax.losses.multiclass_hinge_loss(scores, label))


class TestSigmoidFocalLoss:
    YS = np.array([[2.0, 0.1, -2.0], [0.3, -0.1, 1.2]], dtype=np.float32)
    TS = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=np.float32)

    def test_gamma_zero_is_cross_entropy(self):
        np.testing.assert_allclose(co.sigmoid_focal_loss(self.YS, self.TS, gamma=0.0),
                                   co.sigmoid_binary_cross_entropy(self.YS, self.TS), rtol=2e-5)  # fmt: skip

    def test_scale(self):
        p = 1 / (1 + np.exp(-self.YS.astype(np.float64)))
        p_t = p * self.TS + (1 - p) * (1 - self.TS)
        ratio = co.sigmoid_focal_loss(self.YS, self.TS, gamma=2) / co.sigmoid_binary_cross_entropy(self.YS, self.TS)
        np.testing.assert_allclose(ratio, (1 - p_t) ** 2, rtol=2e-5)

    def test_large_and_small_logits(self):
        logit = lambda x: np.log(x / (1.0 - x))  # noqa: E731
        for ys, alpha, factor in [(logit(np.array([0.9, 0.98, 0.3, 0.99])), 0.5, 2.0),
                                  (logit(np.array([0.1, 0.02, 0.09, 0.15])), None, 1.0)]:  # fmt: skip
            ones = np.ones(4)
            ratio = co.sigmoid_binary_cross_entropy(ys, ones) / co.sigmoid_focal_loss(ys, ones, gamma=2, alpha=alpha)
            np.testing.assert_allclose(ratio, factor / (1 - 1 / (1 + np.exp(-ys))) ** 2, rtol=2e-5)

    def test_alpha_selects_positives_or_negatives(self):
        bce = co.sigmoid_binary_cross_entropy(self.YS, self.TS)
        np.testing.assert_allclose(co.sigmoid_focal_loss(self.YS, self.TS, gamma=0.0, alpha=1), bce * self.TS, rtol=2e-5)
        assert np.all(co.sigmoid_focal_loss(self.YS, self.TS, alpha=0)[self.TS == 1] == 0)
        assert np.all(co.sigmoid_focal_loss(self.YS, self.TS, alpha=1)[self.TS == 0] == 0)

    @pytest.mark.parametrize("gamma", [0.5, 2.0])
    def test_extreme_logits_finite_gradients_and_live(self, gamma):
        x = np.array([100.0, -100.0, 75.0, -75.0, 50.0, -50.0])
        y = np.array([0.9, 0.1, 0.8, 0.2, 1.0, 0.0])
        value, g = ce.value_and_grad(ce.sigmoid_focal_loss)(x, y, -1, gamma, "sum")
        assert np.isfinite(value) and np.all(np.isfinite(g))
        np.testing.assert_allclose(co.sigmoid_focal_loss(x, y, gamma=gamma),
                                   optax.losses.sigmoid_focal_loss(x, y, gamma=gamma), rtol=1e-5)  # fmt: skip
        fd = finite_difference(lambda z: ce.sigmoid_focal_loss(z, y, -1, gamma, "sum"), x)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
