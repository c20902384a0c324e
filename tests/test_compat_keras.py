"""crossentropy.compat.keras against Keras 3 (JAX backend) and Keras's own test values.

The fixed values are those of ``keras/src/losses/losses_test.py`` (Keras computes in
float32, so the inputs are float32 here too); every case is also run through the
installed Keras and compared to more digits.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from crossentropy.compat import keras as ck

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")

P3 = [[0.9, 0.05, 0.05], [0.5, 0.89, 0.6], [0.05, 0.01, 0.94]]
L3 = [[8.0, 1.0, 1.0], [0.0, 9.0, 1.0], [2.0, 3.0, 5.0]]
EYE = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
SW3 = np.array([[1.2], [3.4], [5.6]])
HT, HP = [[0.0, 1.0], [0.0, 0.0]], [[0.6, 0.4], [0.4, 0.6]]
BT, BP = np.array([1, 0, 1, 0]).reshape(2, 2), np.array([0.9, 0.8, 0.7, 0.2]).reshape(2, 2)
LT, LL = [[1, 0, 1], [0, 1, 1]], [[10.0, -10.0, 10.0], [10.0, 10.0, -10.0]]
FT, FL = [[1, 1, 0], [0, 1, 0]], [[1.5, -2.7, 2.9], [-3.8, 1.2, -4.5]]
KT = np.array([0.5, 0.8, 0.12, 0.7, 0.43, 0.8]).reshape(2, 3)
KP = np.array([0.4, 0.9, 0.12, 0.36, 0.3, 0.4]).reshape(2, 3)
_KL = KT * np.log(KT / KP)

# (class, constructor options, y_true, y_pred, sample_weight, Keras's value, decimals)
CASES = [
    ("Hinge", {}, HT, HP, None, 1.3, 3),
    ("Hinge", {"reduction": "sum"}, HT, HP, None, 2.6, 3),
    ("Hinge", {"reduction": None}, HT, HP, None, [1.1, 1.5], 5),
    ("Hinge", {}, HT, HP, [1, 0], 0.55, 3),
    ("Hinge", {"reduction": "sum"}, HT, HP, [1, 0], 1.1, 3),
    ("Hinge", {}, HT, HP, 0.0, 0.0, 6),
    ("SquaredHinge", {}, HT, HP, None, 1.86, 3),
    ("SquaredHinge", {"reduction": "sum"}, HT, HP, None, 3.72, 3),
    ("SquaredHinge", {"reduction": None}, HT, HP, None, [1.46, 2.26], 5),
    ("SquaredHinge", {}, HT, HP, [1, 0], 0.73, 3),
    ("CategoricalHinge", {}, HT, HP, None, 1.4, 3),
    ("CategoricalHinge", {"reduction": "sum"}, HT, HP, None, 2.8, 3),
    ("CategoricalHinge", {"reduction": None}, HT, HP, None, [1.2, 1.6], 5),
    ("CategoricalCrossentropy", {}, EYE, P3, None, 0.3239, 3),
    ("CategoricalCrossentropy", {"from_logits": True}, EYE, L3, None, 0.0573, 3),
    ("CategoricalCrossentropy", {}, EYE, P3, 2.3, 0.7449, 3),
    ("CategoricalCrossentropy", {"from_logits": True}, EYE, L3, 2.3, 0.1317, 3),
    ("CategoricalCrossentropy", {}, EYE, P3, SW3, 1.0696, 3),
    ("CategoricalCrossentropy", {"from_logits": True}, EYE, L3, SW3, 0.31829, 3),
    ("CategoricalCrossentropy", {"from_logits": True, "reduction": None}, EYE, L3, None,
     [0.001822, 0.000459, 0.169846], 5),
    ("CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.1},
     [[1, 0, 0]], [[100.0, -100.0, -100.0]], None, 400.0 * 0.1 / 3.0, 3),
    ("SparseCategoricalCrossentropy", {}, [0, 1, 2], P3, None, 0.3239, 3),
    ("SparseCategoricalCrossentropy", {"from_logits": True}, [0, 1, 2], L3, None, 0.0573, 3),
    ("SparseCategoricalCrossentropy", {}, [[0], [1], [2]], P3, 2.3, 0.7449, 3),
    ("SparseCategoricalCrossentropy", {"from_logits": True}, [[0], [1], [2]], L3, SW3, 0.31829, 3),
    ("BinaryCrossentropy", {}, EYE, [[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.1, 0.2, 0.7]], None,
     0.20046903, 5),
    ("BinaryCrossentropy", {}, BT, [[1, 1], [1, 0]], None, 3.98559, 3),
    ("BinaryCrossentropy", {"from_logits": True}, LT, LL, None, 3.3333, 3),
    ("BinaryCrossentropy", {}, BT, [[1, 1], [1, 0]], 2.3, 9.1668, 3),
    ("BinaryCrossentropy", {"from_logits": True}, LT, LL, 2.3, 7.666, 3),
    ("BinaryCrossentropy", {}, BT, [[1, 1], [1, 0]], np.array([[1.2], [3.4]]), 4.7827, 3),
    ("BinaryCrossentropy", {"from_logits": True}, LT, LL, [4, 3], 10.0, 3),
    ("BinaryCrossentropy", {"from_logits": True, "reduction": None}, LT, LL, None, [0.0, 6.666], 3),
    ("BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, [[1, 0, 1]],
     [[10.0, -10.0, -10.0]], None, (10.0 + 5.0 * 0.1) / 3.0, 3),
    ("BinaryFocalCrossentropy", {"gamma": 2.0}, BT, BP, None, 0.268, 3),
    ("BinaryFocalCrossentropy", {"gamma": 3.0, "from_logits": True}, FT, FL, None, 0.799, 3),
    ("BinaryFocalCrossentropy", {"gamma": 2.0}, BT, BP, 1.23, 0.3296, 3),
    ("CategoricalFocalCrossentropy", {}, EYE, P3, None, 0.02059, 3),
    ("CategoricalFocalCrossentropy", {"from_logits": True}, EYE, L3, None, 0.000345, 3),
    ("CategoricalFocalCrossentropy", {}, EYE, P3, 2.3, 0.047368, 3),
    ("CategoricalFocalCrossentropy", {"from_logits": True}, EYE, L3, 2.3, 0.000794, 4),
    ("CategoricalFocalCrossentropy", {}, EYE, P3, SW3, 0.06987, 3),
    ("CategoricalFocalCrossentropy", {"from_logits": True}, EYE, L3, SW3, 0.001933, 3),
    ("CategoricalFocalCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, [[1, 0, 0]],
     [[4.9, -0.5, 2.05]], None, 0.06685, 3),
    ("CategoricalGeneralizedCrossEntropy", {}, [0, 1, 0, 1],
     [[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]], None,
     np.mean((1 - np.sqrt([0.7, 0.8, 0.6, 0.6])) / 0.5), 5),
    ("CategoricalGeneralizedCrossEntropy", {"q": 0.8}, [0, 1, 0, 1],
     [[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]], None,
     np.mean((1 - np.power([0.7, 0.8, 0.6, 0.6], 0.8)) / 0.8), 5),
    ("CategoricalGeneralizedCrossEntropy", {}, [0, 1, 0, 1],
     [[0.7, 0.3, 0.0], [0.2, 0.2, 0.6], [0.6, 0.4, 0.0], [0.2, 0.2, 0.6]], None,
     np.mean((1 - np.sqrt([0.7, 0.2, 0.6, 0.2])) / 0.5), 5),
    ("KLDivergence", {}, KT, KP, None, _KL.sum() / 2, 3),
    ("KLDivergence", {}, KT, KP, 2.3, 2.3 * _KL.sum() / 2, 3),
    ("KLDivergence", {}, KT, KP, np.array([[1.2], [3.4]]),
     (_KL * np.array([[1.2], [3.4]])).sum() / 2, 3),
]  # fmt: skip


def _f32(a):
    return None if a is None else np.asarray(a, dtype=np.float32)


@pytest.mark.parametrize(("cls", "options", "y_true", "y_pred", "sw", "expected", "places"), CASES)
def test_keras_test_values(cls, options, y_true, y_pred, sw, expected, places):
    ours = getattr(ck, cls)(**options)(np.asarray(y_true), _f32(y_pred), sample_weight=sw)
    np.testing.assert_allclose(np.asarray(ours, np.float64), expected, atol=1.5 * 10.0**-places)
    theirs = getattr(keras.losses, cls)(**options)(
        np.asarray(y_true), _f32(y_pred), sample_weight=None if sw is None else _f32(sw)
    )
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=2e-5, atol=2e-6)


FUNCTIONS = [
    ("categorical_crossentropy", {}, "probs"),
    ("categorical_crossentropy", {"from_logits": True, "label_smoothing": 0.2}, "logits"),
    ("categorical_crossentropy", {"from_logits": True, "axis": 1}, "logits3"),
    ("sparse_categorical_crossentropy", {}, "probs"),
    ("sparse_categorical_crossentropy", {"from_logits": True}, "logits"),
    ("binary_crossentropy", {"label_smoothing": 0.1}, "binary"),
    ("binary_crossentropy", {"from_logits": True}, "binary_logits"),
    ("binary_focal_crossentropy", {"apply_class_balancing": True, "alpha": 0.4}, "binary"),
    ("binary_focal_crossentropy", {"from_logits": True, "gamma": 1.5}, "binary_logits"),
    ("categorical_focal_crossentropy", {"alpha": [0.2, 0.3, 0.5, 0.1]}, "probs"),
    ("categorical_focal_crossentropy", {"from_logits": True, "gamma": 0.5}, "logits"),
    ("categorical_generalized_cross_entropy", {"q": 0.3}, "probs"),
    ("hinge", {}, "hinge"),
    ("squared_hinge", {}, "hinge"),
    ("categorical_hinge", {}, "logits"),
    ("kl_divergence", {}, "probs"),
]


def _inputs(kind, rng):
    labels = rng.integers(0, 4, size=6)
    hot = np.eye(4)[labels]
    logits = rng.normal(0, 2, size=(6, 4))
    if kind == "probs":
        return hot, rng.dirichlet(np.ones(4), size=6), labels
    if kind == "logits":
        return hot, logits, labels
    if kind == "logits3":
        return np.moveaxis(np.eye(4)[rng.integers(0, 4, (2, 5))], -1, 1), rng.normal(size=(2, 4, 5)), None
    if kind == "binary":
        return rng.integers(0, 2, size=(6, 3)), rng.uniform(0.01, 0.99, size=(6, 3)), None
    if kind == "binary_logits":
        return rng.integers(0, 2, size=(6, 3)), rng.normal(0, 3, size=(6, 3)), None
    return rng.choice([-1.0, 1.0], size=(6, 3)), rng.normal(size=(6, 3)), None


@pytest.mark.parametrize(("name", "options", "kind"), FUNCTIONS)
def test_functions_match_live_keras(rng, name, options, kind):
    y_true, y_pred, labels = _inputs(kind, rng)
    if name in ("sparse_categorical_crossentropy", "categorical_generalized_cross_entropy"):
        y_true = labels
    ours = getattr(ck, name)(y_true, y_pred, **options)
    theirs = getattr(keras.losses, name)(y_true, y_pred.astype(np.float32), **options)
    assert ours.dtype == np.float64  # the caller's dtype, not Keras's float32
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=3e-5, atol=3e-6)


def test_float64_is_computed_in_float64(rng):
    logits, labels = rng.normal(0, 30, size=(5, 7)), rng.integers(0, 7, 5)
    ours = ck.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    np.testing.assert_allclose(ours, lse - logits[np.arange(5), labels], rtol=1e-13, atol=1e-12)


def test_ignore_class_left_out_of_the_mean():
    y_true = np.array([0, 2, -1, 1])
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [5.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    loss = ck.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    theirs = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    per_row = ck.sparse_categorical_crossentropy(y_true, logits, from_logits=True, ignore_class=-1)
    assert per_row[2] == 0.0
    np.testing.assert_allclose(float(loss(y_true, logits)), per_row.sum() / 3, rtol=1e-12)
    np.testing.assert_allclose(float(loss(y_true, logits)), float(theirs(y_true, logits)), rtol=1e-5)


def test_mean_with_sample_weight_and_zero_divisor():
    y_true, y_pred = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.3, 0.7], [0.8, 0.2]])
    per = ck.binary_crossentropy(y_true, y_pred)
    w = np.array([2.0, 0.5])
    loss = ck.BinaryCrossentropy(reduction="mean_with_sample_weight")
    np.testing.assert_allclose(float(loss(y_true, y_pred, w)), (per * w).sum() / 2.5, rtol=1e-12)
    assert float(loss(y_true, y_pred, np.zeros(2))) == 0.0


def test_torch_tensors_keep_autograd(rng):
    torch = pytest.importorskip("torch")
    x = torch.tensor(rng.normal(size=(4, 3)), requires_grad=True)
    y = torch.tensor(np.eye(3)[[0, 2, 1, 1]])
    ck.CategoricalCrossentropy(from_logits=True)(y, x).backward()
    expected = (torch.softmax(x.detach(), -1) - y) / 4
    np.testing.assert_allclose(x.grad.numpy(), expected.numpy(), rtol=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="reduction must be one of"):
        ck.Hinge(reduction="abc")
    with pytest.raises(ValueError, match=r"q must be in the interval \(0, 1\)"):
        ck.CategoricalGeneralizedCrossEntropy(q=1.5)
    with pytest.raises(ValueError, match="one-hot rows"):
        ck.categorical_hinge([[0.5, 0.5]], [[0.1, 0.2]])
    with pytest.raises(ValueError, match="labels -1 or \\+1"):
        ck.hinge([[0.5, 2.0]], [[0.1, 0.2]])
