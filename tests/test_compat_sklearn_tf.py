"""crossentropy.compat.sklearn against scikit-learn, and crossentropy.compat.tf against the
Keras ops that implement TensorFlow's formulas (and values derived by hand)."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import sklearn.metrics as skm

from crossentropy.compat import sklearn as cs
from crossentropy.compat import tf

os.environ.setdefault("KERAS_BACKEND", "jax")


class TestLogLoss:
    def test_scikit_learn_examples(self):
        y_true, y_pred = ["spam", "ham", "ham", "spam"], [[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.35, 0.65]]
        assert math.isclose(cs.log_loss(y_true, y_pred), 0.21616, abs_tol=5e-6)
        assert cs.log_loss(y_true, y_pred) == pytest.approx(skm.log_loss(y_true, y_pred), rel=1e-12)
        # scikit-learn's test: normalize=False, and a 1-D positive-class column
        y_pred = np.array([[0.5, 0.5], [0.1, 0.9], [0.01, 0.99], [0.9, 0.1], [0.75, 0.25], [0.001, 0.999]])
        y_true = [0, 0, 0, 1, 1, 1]
        assert cs.log_loss(y_true, y_pred) == pytest.approx(1.8817971, rel=1e-6)
        assert cs.log_loss(y_true, y_pred, normalize=False) == pytest.approx(1.8817971 * 6, rel=1e-6)
        assert cs.log_loss(y_true, y_pred[:, 1]) == pytest.approx(1.8817971, rel=1e-6)

    def test_zero_probability_is_clipped_not_infinite(self):
        y_true, y_pred = [0, 1, 1], [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
        ours = cs.log_loss(y_true, y_pred)
        assert ours == pytest.approx(-math.log(np.finfo(np.float64).eps) / 3, rel=1e-12)
        assert ours == pytest.approx(skm.log_loss(y_true, y_pred), rel=1e-12)

    def test_labels_weights_and_multiclass_live(self, rng):
        p = rng.dirichlet(np.ones(4), size=20)
        y = rng.choice(np.array(["a", "b", "c", "d"]), size=20)
        w = rng.uniform(0.1, 2.0, size=20)
        for kwargs in ({}, {"sample_weight": w}, {"normalize": False, "sample_weight": w}):
            assert cs.log_loss(y, p, **kwargs) == pytest.approx(skm.log_loss(y, p, **kwargs), rel=1e-12)
        y3 = rng.integers(0, 3, size=20)  # class 3 never appears: labels says it exists
        assert cs.log_loss(y3, p, labels=[0, 1, 2, 3]) == pytest.approx(
            skm.log_loss(y3, p, labels=[0, 1, 2, 3]), rel=1e-12
        )

    def test_indicator_matrix(self, rng):
        p = rng.dirichlet(np.ones(3), size=8)
        y = np.eye(3)[rng.integers(0, 3, 8)]
        assert cs.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-12)

    def test_rows_not_summing_to_one_warn(self):
        with pytest.warns(UserWarning, match="do not sum to one"):
            ours = cs.log_loss([0, 1], [[0.2, 0.3], [0.1, 0.6]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert ours == pytest.approx(skm.log_loss([0, 1], [[0.2, 0.3], [0.1, 0.6]]), rel=1e-12)

    def test_errors(self):
        with pytest.raises(ValueError, match="only one label"):
            cs.log_loss([1, 1], [[0.5, 0.5], [0.5, 0.5]])
        with pytest.raises(ValueError, match="greater than 1"):
            cs.log_loss([0, 1], [[0.5, 1.5], [0.5, 0.5]])
        with pytest.raises(ValueError, match="different number of classes"):
            cs.log_loss([0, 1, 2], [[0.5, 0.5]] * 3)
        with pytest.raises(ValueError, match=r"not belonging to the passed labels"):
            cs.log_loss([0, 5], [[0.5, 0.5]] * 2, labels=[0, 1])


class TestHingeLoss:
    def test_binary_example_and_live(self):
        assert cs.hinge_loss([-1, 1, 1], [-2.18, 2.36, 0.09]) == pytest.approx(0.30, abs=5e-3)
        for y, h in (([-1, 1, 1], [-2.18, 2.36, 0.09]), ([0, 1, 1, 0], [0.5, -0.2, 1.5, -3.0]),
                     (["no", "yes", "yes"], [0.3, 0.9, -0.4])):  # fmt: skip
            assert cs.hinge_loss(y, h) == pytest.approx(skm.hinge_loss(y, h), rel=1e-12)

    def test_crammer_singer_not_weston_watkins(self):
        # the values the two multi-class hinges give differ: scikit-learn's is Crammer-Singer
        y = np.array([0, 1, 2, 2])
        h = np.array([[1.27, 0.034, -0.68], [-1.4, 0.38, -0.66], [-0.98, -0.25, 0.91], [0.2, 0.5, -0.3]])
        w = np.array([0.5, 1.0, 2.0, 1.0])
        assert cs.hinge_loss(y, h) == pytest.approx(skm.hinge_loss(y, h), rel=1e-12)
        assert cs.hinge_loss(y, h, sample_weight=w) == pytest.approx(skm.hinge_loss(y, h, sample_weight=w), rel=1e-12)
        manual = [max(0, 1 - (r[t] - max(np.delete(r, t)))) for r, t in zip(h, y)]
        assert cs.hinge_loss(y, h) == pytest.approx(np.mean(manual), rel=1e-12)

    def test_labels_for_absent_classes(self):
        y, h = [0, 2, 3], np.array([[0.5, 0.1, -0.2, 0.3], [0.0, 0.2, 0.9, 0.1], [0.3, 0.3, 0.1, 0.6]])
        assert cs.hinge_loss(y, h, labels=[0, 1, 2, 3]) == pytest.approx(
            skm.hinge_loss(y, h, labels=[0, 1, 2, 3]), rel=1e-12
        )
        with pytest.raises(ValueError, match="cannot be 1d"):
            cs.hinge_loss([0, 1, 2], [0.1, 0.2, 0.3])


keras = pytest.importorskip("keras")


class TestTensorFlowNames:
    def test_softmax_cross_entropy_with_logits(self, rng):
        logits, labels = rng.normal(0, 3, size=(5, 4)), rng.dirichlet(np.ones(4), size=5)
        ours = tf.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        ref = keras.ops.categorical_crossentropy(labels, logits, from_logits=True)
        np.testing.assert_allclose(ours, ref, rtol=1e-5)
        ours0 = tf.softmax_cross_entropy_with_logits(labels=labels.T, logits=logits.T, axis=0)
        np.testing.assert_allclose(ours0, ours, rtol=1e-12)
        # hand value: equal logits give log C
        np.testing.assert_allclose(tf.softmax_cross_entropy_with_logits([[1.0, 0, 0]], [[7.0, 7.0, 7.0]]), [math.log(3)])

    def test_sparse_softmax_cross_entropy_with_logits(self, rng):
        logits, labels = rng.normal(0, 3, size=(2, 3, 5)), rng.integers(0, 5, size=(2, 3))
        ours = tf.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        ref = keras.ops.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        np.testing.assert_allclose(ours, ref, rtol=1e-5)
        # hand value: logits (0, log 3) and label 1: -log(3 / 4)
        np.testing.assert_allclose(tf.sparse_softmax_cross_entropy_with_logits([1], [[0.0, math.log(3)]]), [math.log(4 / 3)])
        with pytest.raises(IndexError, match="out of bounds"):
            tf.sparse_softmax_cross_entropy_with_logits(labels=[-100], logits=[[0.0, 1.0]])

    def test_sigmoid_and_weighted(self, rng):
        x, z = rng.normal(0, 4, size=(4, 3)), rng.integers(0, 2, size=(4, 3)).astype(float)
        ours = tf.sigmoid_cross_entropy_with_logits(labels=z, logits=x)
        np.testing.assert_allclose(ours, keras.ops.binary_crossentropy(z, x, from_logits=True), rtol=1e-5)
        # TensorFlow's documented form max(x, 0) - x z + log(1 + exp(-|x|))
        expected = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)
        q = 2.5  # documented: (1 - z) x + (1 + (q - 1) z) (log(1 + exp(-|x|)) + max(-x, 0))
        expected = (1 - z) * x + (1 + (q - 1) * z) * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0))
        np.testing.assert_allclose(tf.weighted_cross_entropy_with_logits(z, x, q), expected, rtol=1e-12, atol=1e-15)
        with pytest.raises(ValueError, match="labels= and logits="):
            tf.sigmoid_cross_entropy_with_logits(logits=x)

    def test_reduce_logsumexp(self, rng):
        x = rng.normal(size=(3, 4))
        np.testing.assert_allclose(tf.reduce_logsumexp(x), keras.ops.logsumexp(x), rtol=1e-6)
        np.testing.assert_allclose(tf.reduce_logsumexp(x, axis=1, keepdims=True),
                                   keras.ops.logsumexp(x, axis=1, keepdims=True), rtol=1e-6)  # fmt: skip
