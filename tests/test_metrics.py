"""Tests for crossentropy.metrics: the streaming accumulators and the one-shot functions.

The oracles are scikit-learn (``log_loss``, ``accuracy_score``, ``top_k_accuracy_score``,
``brier_score_loss``), SciPy's entropy, naive float64 NumPy loops for the calibration
error, and calibration errors worked out by hand.
"""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crossentropy as ce
from crossentropy import metrics
from tests.support import torch_oracle

sk = pytest.importorskip("sklearn.metrics")
sk_exceptions = pytest.importorskip("sklearn.exceptions")
scipy_stats = pytest.importorskip("scipy.stats")


def _data(rng: np.random.Generator, n: int = 60, c: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Logits with no ties, and labels right about half the time (every class present)."""
    x = rng.normal(size=(n, c)) * 2.0
    y = np.argmax(x + rng.normal(size=(n, c)) * 2.0, axis=1)
    y[:c] = np.arange(c)  # scikit-learn infers the classes from the labels
    return x, y


def _softmax(x: np.ndarray) -> np.ndarray:
    return torch_oracle("softmax", x, dim=-1)


def _ece_loop(conf: np.ndarray, right: np.ndarray, bins: int) -> float:
    """The calibration error by its definition, one bin at a time."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        in_bin = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if in_bin.any():
            total += in_bin.sum() / len(conf) * abs(right[in_bin].mean() - conf[in_bin].mean())
    return total


# -- against scikit-learn and SciPy ---------------------------------------------------------


class TestAgainstPeers:
    @pytest.mark.parametrize("from_", ["logits", "probs", "log_probs"])
    def test_log_loss_and_perplexity(self, rng, from_):
        x, y = _data(rng)
        p = _softmax(x)
        data = {"logits": x, "probs": p, "log_probs": np.log(p)}[from_]
        want = sk.log_loss(y, p, labels=range(5))
        assert metrics.log_loss(data, y, from_=from_) == pytest.approx(want, rel=1e-12)
        assert metrics.perplexity(data, y, from_=from_) == pytest.approx(math.exp(want), rel=1e-12)

    def test_log_loss_equals_the_library_loss(self, rng):
        x, y = _data(rng)
        assert metrics.log_loss(x, y) == pytest.approx(float(ce.cross_entropy(x, y)), rel=1e-14)

    def test_accuracy(self, rng):
        x, y = _data(rng)
        m = metrics.Accuracy().update(x, y)
        assert m.compute() == sk.accuracy_score(y, x.argmax(axis=1))
        assert m.correct == sk.accuracy_score(y, x.argmax(axis=1), normalize=False)

    @pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
    def test_top_k_accuracy(self, rng, k):
        x, y = _data(rng)
        with warnings.catch_warnings():  # scikit-learn warns that k = C is always right
            warnings.simplefilter("ignore", sk_exceptions.UndefinedMetricWarning)
            want = sk.top_k_accuracy_score(y, x, k=k, labels=range(5))
        assert metrics.top_k_accuracy(x, y, k=k) == want
        assert metrics.top_k_accuracy(_softmax(x), y, k=k, from_="probs") == want

    def test_top_k_ties_count_for_the_target(self):
        x = np.array([[1.0, 1.0, 1.0, 0.0]])  # the target ties with two other classes
        assert metrics.top_k_accuracy(x, np.array([2]), k=1) == 1.0
        assert metrics.top_k_accuracy(x, np.array([3]), k=3) == 0.0
        assert metrics.accuracy(x, np.array([2])) == 0.0  # the argmax is the first of the ties

    @pytest.mark.parametrize("c", [2, 3, 6])
    def test_brier_score_multiclass_definition(self, rng, c):
        x, y = _data(rng, c=c)
        p = _softmax(x)
        want = sk.brier_score_loss(y, p, labels=range(c), scale_by_half=False)
        assert metrics.brier_score(p, y, from_="probs") == pytest.approx(want, rel=1e-12)
        assert metrics.brier_score(x, y) == pytest.approx(want, rel=1e-12)
        if c >= 3:  # scikit-learn's default keeps the [0, 2] range from three classes on
            assert metrics.brier_score(x, y) == pytest.approx(
                sk.brier_score_loss(y, p, labels=range(c)), rel=1e-12
            )
        else:  # and halves it for two
            assert metrics.brier_score(x, y) / 2 == pytest.approx(
                sk.brier_score_loss(y, p[:, 1]), rel=1e-12
            )

    def test_brier_score_by_hand(self):
        p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        assert metrics.brier_score(p, np.array([0, 2]), from_="probs") == 1.0  # 0 and 1 + 1

    def test_mean_entropy(self, rng):
        x, _ = _data(rng)
        want = scipy_stats.entropy(_softmax(x), axis=1).mean()
        assert metrics.mean_entropy(x) == pytest.approx(want, rel=1e-12)
        assert metrics.mean_entropy(np.log(_softmax(x)), from_="log_probs") == pytest.approx(
            want, rel=1e-12
        )
        one_hot = np.eye(3)
        assert metrics.mean_entropy(one_hot, from_="probs") == 0.0


# -- calibration ---------------------------------------------------------------------------


class TestCalibration:
    def test_hand_derived(self):
        # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.3 (right) in 5 bins of 0.2:
        # bin (0.8, 1]: 2 rows, accuracy 0.5, confidence 0.9; bin (0.4, 0.6]: 1 row, 1 vs 0.6;
        # bin (0.2, 0.4]: 1 row, 1 vs 0.3 (a three-class row: 0.3, 0.3, 0.4 -> argmax class 2)
        p = np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]])
        y = np.array([0, 0, 0, 2])
        r = metrics.reliability_diagram(p, y, bins=5, from_="probs")
        expected = (2 * abs(0.5 - 0.9) + abs(1 - 0.6) + abs(1 - 0.4)) / 4
        assert r.ece == pytest.approx(expected, abs=1e-15)
        np.testing.assert_array_equal(r.count, [0, 1, 1, 0, 2])
        np.testing.assert_allclose(r.confidence, [np.nan, 0.4, 0.6, np.nan, 0.9], rtol=1e-15)
        np.testing.assert_array_equal(r.accuracy, [np.nan, 1.0, 1.0, np.nan, 0.5])
        np.testing.assert_allclose(r.edges, [0, 0.2, 0.4, 0.6, 0.8, 1.0])
        assert metrics.expected_calibration_error(p, y, bins=5, from_="probs") == r.ece

    def test_perfectly_calibrated_bin(self):
        # four rows of confidence 0.75, three right: no calibration error
        p = np.array([[0.75, 0.25]] * 4)
        assert metrics.expected_calibration_error(p, np.array([0, 0, 0, 1]), from_="probs") == 0.0

    def test_bin_edges_are_closed_on_the_right(self):
        # confidence exactly 0.5 falls in (0, 0.5], not (0.5, 1]
        r = metrics.reliability_diagram(
            np.array([[0.5, 0.5]]), np.array([1]), bins=2, from_="probs"
        )
        np.testing.assert_array_equal(r.count, [1, 0])
        assert r.ece == 0.5  # wrong at confidence 0.5

    @pytest.mark.parametrize("bins", [1, 7, 15])
    def test_matches_a_loop_over_bins(self, rng, bins):
        x, y = _data(rng, n=200)
        p = _softmax(x)
        conf, right = p.max(axis=1), p.argmax(axis=1) == y
        want = _ece_loop(conf, right, bins)
        assert metrics.expected_calibration_error(x, y, bins=bins) == pytest.approx(
            want, rel=1e-12, abs=1e-15
        )

    @pytest.mark.parametrize("bins", [0, -1, 1.5, True])
    def test_bad_bins(self, bins):
        with pytest.raises(ValueError, match="bins must be an integer >= 1"):
            metrics.ExpectedCalibrationError(bins)


# -- streaming: blocks and processes ---------------------------------------------------------


def _all_metrics() -> list[metrics.Metric]:
    return [
        metrics.LogLoss(),
        metrics.Perplexity(),
        metrics.Accuracy(),
        metrics.TopKAccuracy(3),
        metrics.BrierScore(),
        metrics.MeanEntropy(),
        metrics.ExpectedCalibrationError(10),
        metrics.PerClass(),
    ]


def _same(a: metrics.Metric, b: metrics.Metric) -> None:
    """Counts equal exactly, float sums to float64 rounding."""
    assert a.rows == b.rows
    got, want = a.compute(), b.compute()
    if isinstance(want, dict):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-13)
    else:
        assert got == pytest.approx(want, rel=1e-13, abs=1e-15)
    for name in ("correct", "count"):
        if hasattr(b, name):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


class TestStreaming:
    @given(cuts=st.lists(st.integers(0, 80), max_size=6), seed=st.integers(0, 2**32 - 1))
    def test_merged_blocks_equal_one_shot(self, cuts, seed):
        x, y = _data(np.random.default_rng(seed), n=80, c=6)
        edges = [0, *sorted(cuts), 80]
        for one in _all_metrics():
            whole = type(one)(*one.options()).update(x, y)
            parts = [
                type(one)(*one.options()).update(x[a:b], y[a:b])
                for a, b in zip(edges[:-1], edges[1:])
                if b > a
            ]
            merged = parts[0]
            for part in parts[1:]:
                merged.merge(part)
            _same(merged, whole)
            sequential = type(one)(*one.options())
            for a, b in zip(edges[:-1], edges[1:]):
                sequential.update(x[a:b], y[a:b])  # empty blocks add nothing
            _same(sequential, whole)

    def test_pickled_accumulators_merge(self, rng):
        x, y = _data(rng)
        for one in _all_metrics():
            a = type(one)(*one.options()).update(x[:25], y[:25])
            b = pickle.loads(pickle.dumps(type(one)(*one.options()).update(x[25:], y[25:])))
            _same(a.merge(b), type(one)(*one.options()).update(x, y))

    def test_one_batch_feeds_several_metrics(self, rng):
        x, y = _data(rng)
        batch = metrics.Predictions(x, y)
        loss, acc = metrics.LogLoss().add(batch), metrics.Accuracy().add(batch)
        assert loss.compute() == metrics.log_loss(x, y)
        assert acc.compute() == metrics.accuracy(x, y)

    def test_reset(self, rng):
        x, y = _data(rng)
        m = metrics.LogLoss().update(x, y)
        m.reset()
        assert m.rows == 0
        assert m.update(x[:3], y[:3]).compute() == metrics.log_loss(x[:3], y[:3])

    def test_merge_needs_the_same_metric_and_options(self):
        with pytest.raises(
            ValueError, match=r"cannot merge TopKAccuracy\(k=2\) into TopKAccuracy\(k=3\)"
        ):
            metrics.TopKAccuracy(3).merge(metrics.TopKAccuracy(2))
        with pytest.raises(ValueError, match="cannot merge"):
            metrics.LogLoss().merge(metrics.Perplexity())

    def test_per_class(self, rng):
        x, y = _data(rng, c=4)
        r = metrics.PerClass().update(x, y).compute()
        nll = torch_oracle("cross_entropy", x, y, reduction="none")
        for c in range(4):
            assert r["count"][c] == np.sum(y == c)
            assert r["log_loss"][c] == pytest.approx(nll[y == c].mean(), rel=1e-12)
            assert r["accuracy"][c] == np.mean(x[y == c].argmax(axis=1) == c)

    def test_per_class_absent_class_is_nan(self):
        r = metrics.PerClass().update(np.zeros((2, 3)), np.array([0, 0])).compute()
        np.testing.assert_array_equal(r["count"], [2, 0, 0])
        assert np.isnan(r["log_loss"][1]) and np.isnan(r["accuracy"][2])
        with pytest.raises(ValueError, match="a block of 4 classes after 3"):
            metrics.PerClass().update(np.zeros((2, 3)), np.array([0, 0])).update(
                np.zeros((1, 4)), np.array([0])
            )


# -- inputs: layouts, masks, libraries ---------------------------------------------------------


class TestInputs:
    def test_class_axis_and_k_dim_target(self, rng):
        x, y = _data(rng, n=24, c=5)
        # (N, C) -> (4, C, 6) with the class axis in the middle, targets (4, 6)
        xk = x.reshape(4, 6, 5).transpose(0, 2, 1)
        yk = y.reshape(4, 6)
        for fn in (metrics.log_loss, metrics.accuracy, metrics.brier_score):
            assert fn(xk, yk, axis=1) == pytest.approx(fn(x, y), rel=1e-13)
        assert metrics.top_k_accuracy(xk, yk, k=2, axis=1) == metrics.top_k_accuracy(x, y, k=2)

    def test_one_row(self):
        assert metrics.log_loss(np.array([2.0, 1.0, 0.1]), np.array(0)) == pytest.approx(
            0.4170300162778335, rel=1e-12
        )

    def test_where_leaves_rows_out(self, rng):
        x, y = _data(rng)
        keep = rng.random(60) < 0.6
        x_pad, y_pad = x.copy(), y.copy()
        x_pad[~keep] = np.nan  # padding rows may hold anything, labels too
        y_pad[~keep] = -100
        for m in _all_metrics():
            got = type(m)(*m.options()).update(x_pad, y_pad, where=keep)
            _same(got, type(m)(*m.options()).update(x[keep], y[keep]))

    def test_inputs_are_not_modified(self, rng):
        x, y = _data(rng)
        x[3, 1] = np.nan
        xc, yc = x.copy(), y.copy()
        batch = metrics.Predictions(x, y, invalid="skip")
        for m in _all_metrics():
            m.add(batch)
        np.testing.assert_array_equal(x, xc)
        np.testing.assert_array_equal(y, yc)

    def test_integer_probabilities(self):
        p = np.array([[1, 0], [0, 1]])
        assert metrics.accuracy(p, np.array([0, 0]), from_="probs") == 0.5
        assert metrics.log_loss(p, np.array([0, 1]), from_="probs") == 0.0

    def test_backends_agree_with_numpy(self, xp, rng):
        x, y = _data(rng)
        p = _softmax(x)
        for from_, data in (("logits", x), ("probs", p), ("log_probs", np.log(p))):
            for m in _all_metrics():
                want = type(m)(*m.options()).update(data, y, from_=from_)
                got = type(m)(*m.options()).update(xp.asarray(data), xp.asarray(y), from_=from_)
                _same(got, want)
        where = rng.random(60) < 0.5
        got = metrics.log_loss(xp.asarray(x), xp.asarray(y), where=xp.asarray(where))
        assert got == pytest.approx(metrics.log_loss(x[where], y[where]), rel=1e-12)
        # a NumPy target with the library's input, as PyTorch users often pass
        assert metrics.accuracy(xp.asarray(x), y) == metrics.accuracy(x, y)

    def test_float32_input(self, xp, rng):
        x, y = _data(rng)
        x32 = x.astype(np.float32)
        got = metrics.log_loss(xp.asarray(x32), xp.asarray(y))
        want = sk.log_loss(y, _softmax(x32.astype(np.float64)), labels=range(5))
        assert got == pytest.approx(want, rel=1e-5)

    def test_torch_input_with_grad(self, rng):
        torch = pytest.importorskip("torch")
        x, y = _data(rng)
        t = torch.tensor(x, requires_grad=True)
        assert metrics.log_loss(t, torch.tensor(y)) == pytest.approx(metrics.log_loss(x, y))

    def test_no_framework_import(self):
        code = (
            "import sys, numpy as np; from crossentropy import metrics;"
            "metrics.log_loss(np.zeros((2, 3)), np.array([0, 1]));"
            "heavy = [m for m in ('torch', 'jax', 'sklearn') if m in sys.modules];"
            "assert not heavy, heavy"
        )
        res = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert res.returncode == 0, res.stderr


# -- errors ----------------------------------------------------------------------------------


class TestErrors:
    def test_top_k_larger_than_classes(self):
        with pytest.raises(ValueError, match=r"k=5 is larger than the number of classes C=3"):
            metrics.top_k_accuracy(np.zeros((2, 3)), np.array([0, 1]), k=5)
        assert metrics.top_k_accuracy(np.zeros((2, 3)), np.array([0, 1]), k=3) == 1.0

    @pytest.mark.parametrize("k", [0, -2, 2.0, True])
    def test_bad_k(self, k):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            metrics.TopKAccuracy(k)

    def test_labels_out_of_range(self):
        with pytest.raises(
            ce.TargetIndexError,
            match=r"target: 2 label\(s\) out of range for C = 3 classes \(valid: 0..2\); first: 3 at row 1",
        ):
            metrics.accuracy(np.zeros((4, 3)), np.array([0, 3, 1, -1]))

    def test_label_beyond_int64(self):
        with pytest.raises(ce.TargetIndexError, match="first: 18446744073709551615 at row 0"):
            metrics.accuracy(np.zeros((1, 3)), np.array([2**64 - 1], dtype=np.uint64))

    def test_float_target(self):
        with pytest.raises(
            ce.DTypeError, match="target must hold integer class indices, got dtype float64"
        ):
            metrics.log_loss(np.zeros((2, 3)), np.array([0.0, 1.0]))

    @pytest.mark.parametrize(
        "x, message",
        [
            (np.zeros((2, 3), dtype=complex), "input must hold real numbers, got dtype complex128"),
            (np.zeros((2, 3), dtype=bool), "input must hold real numbers, got dtype bool"),
        ],
    )
    def test_bad_input_dtype(self, x, message):
        with pytest.raises(ce.DTypeError, match=message):
            metrics.log_loss(x, np.array([0, 1]))

    @pytest.mark.parametrize(
        "kw, message",
        [
            ({"from_": "softmax"}, "from_ must be one of"),
            ({"axis": 2}, r"axis=2 is out of range for input of shape \(2, 3\)"),
            ({"where": np.array([1, 0])}, r"where must be a boolean array of shape \(2,\)"),
        ],
    )
    def test_bad_options(self, kw, message):
        with pytest.raises(ValueError, match=message):
            metrics.log_loss(np.zeros((2, 3)), np.array([0, 1]), **kw)

    def test_target_shape(self):
        with pytest.raises(ValueError, match=r"target has shape \(3,\), expected \(2,\)"):
            metrics.log_loss(np.zeros((2, 3)), np.array([0, 1, 2]))

    def test_needs_a_target(self):
        with pytest.raises(ValueError, match="this metric needs a target"):
            metrics.LogLoss().update(np.zeros((2, 3)))

    def test_no_rows(self):
        with pytest.raises(ValueError, match=r"LogLoss.compute\(\): no rows were added"):
            metrics.LogLoss().compute()

    @pytest.mark.parametrize(
        "from_, x, message",
        [
            ("logits", [[0.0, np.nan], [1.0, 2.0], [np.nan, 1.0]], "2 row(s) with NaN (first: row 0)"),
            ("logits", [[0.0, np.inf], [1.0, 2.0], [1.0, 1.0]], "1 row(s) with +inf (first: row 0)"),
            ("logits", [[0.0, 1.0], [-np.inf, -np.inf], [1.0, 1.0]], "1 row(s) with only -inf (first: row 1)"),
            ("probs", [[0.5, 0.5], [1.2, -0.2], [1.0, 0.0]], "1 row(s) with entries outside [0, 1] (first: row 1)"),
            ("probs", [[0.5, 0.5], [0.5, 0.6], [1.0, 0.0]], "1 row(s) with probabilities not summing to 1 (first: row 1)"),
            ("log_probs", [[0.1, -3.0], [0.0, -np.inf], [-1.0, -1.0]], "1 row(s) with positive log-probabilities (first: row 0); 1 row(s) with log-probabilities not summing to 1 (first: row 2)"),
        ],
    )  # fmt: skip
    def test_rows_that_cannot_be_scored(self, from_, x, message):
        x, y = np.array(x), np.array([0, 1, 0])
        with pytest.raises(ValueError) as info:
            metrics.log_loss(x, y, from_=from_)
        assert str(info.value) == f"input ({from_}) has {message}"
        batch = metrics.Predictions(x, y, from_=from_, invalid="skip")
        assert batch.describe_invalid() == message
        good = ~np.logical_or.reduce(list(batch.invalid.values()))
        assert batch.rows == good.sum() < 3
        assert metrics.LogLoss().add(batch).compute() == pytest.approx(
            metrics.log_loss(x[good], y[good], from_=from_), rel=1e-15
        )

    def test_sum_tolerance(self):
        p = np.array([[0.5, 0.505]])
        with pytest.raises(ValueError, match="not summing to 1"):
            metrics.Predictions(p, np.array([0]), from_="probs")
        batch = metrics.Predictions(p, np.array([0]), from_="probs", sum_tolerance=0.01)
        assert metrics.LogLoss().add(batch).compute() == pytest.approx(-math.log(0.5))

    def test_zero_probability_target_is_infinite(self):
        p = np.array([[1.0, 0.0], [0.5, 0.5]])
        assert metrics.log_loss(p, np.array([1, 0]), from_="probs") == math.inf
        assert metrics.perplexity(p, np.array([1, 0]), from_="probs") == math.inf


# -- from hidden states ----------------------------------------------------------------------


class TestUpdateFromHidden:
    """``update_from_hidden``: the metrics of ``hidden @ head.T + bias``, a block at a time."""

    @staticmethod
    def _model(rng, n=45, d=6, v=11):
        h = rng.normal(size=(n, d))
        w, b = rng.normal(size=(v, d)), rng.normal(size=v)
        y = np.argmax(h @ w.T + b + rng.normal(size=(n, v)), axis=1)
        return h, w, b, y

    @pytest.mark.parametrize("block_rows", [None, 1, 7, 100])
    def test_equals_the_metrics_of_the_logits(self, rng, block_rows):
        h, w, b, y = self._model(rng)
        got = metrics.update_from_hidden(_all_metrics(), h, w, y, bias=b, block_rows=block_rows)
        for one, want in zip(got, _all_metrics()):
            _same(one, want.update(h @ w.T + b, y))
        assert metrics.log_loss(h @ w.T + b, y) == pytest.approx(
            float(torch_oracle("cross_entropy", h @ w.T + b, y)), rel=1e-13
        )

    def test_sequence_axes_and_where(self, rng):
        h, w, _, y = self._model(rng, n=24)
        keep = rng.random(24) > 0.3
        one = metrics.update_from_hidden(
            metrics.LogLoss(), h.reshape(4, 6, -1), w, y.reshape(4, 6),
            where=keep.reshape(4, 6), block_rows=5,
        )  # fmt: skip
        assert one.rows == keep.sum()
        assert one.compute() == pytest.approx(metrics.log_loss(h[keep] @ w.T, y[keep]), rel=1e-13)

    def test_torch_and_float32(self, rng):
        torch = pytest.importorskip("torch")
        h, w, b, y = self._model(rng)
        got = metrics.update_from_hidden(
            metrics.Perplexity(), torch.tensor(h, dtype=torch.float32),
            torch.tensor(w, dtype=torch.float32), torch.tensor(y), bias=torch.tensor(b),
        )  # fmt: skip
        assert got.compute() == pytest.approx(metrics.perplexity(h @ w.T + b, y), rel=1e-5)

    def test_without_target(self, rng):
        h, w, _, _ = self._model(rng)
        got = metrics.update_from_hidden(metrics.MeanEntropy(), h, w, block_rows=4).compute()
        assert got == pytest.approx(metrics.mean_entropy(h @ w.T), rel=1e-13)

    def test_errors(self, rng):
        h, w, b, y = self._model(rng)
        with pytest.raises(ValueError, match=r"hidden has shape \(45, 6\) and head \(11, 5\)"):
            metrics.update_from_hidden(metrics.LogLoss(), h, w[:, :5], y)
        with pytest.raises(ValueError, match=r"bias must have shape \(11,\), got \(10,\)"):
            metrics.update_from_hidden(metrics.LogLoss(), h, w, y, bias=b[:10])
        with pytest.raises(ValueError, match=r"target has shape \(44,\), expected \(45,\)"):
            metrics.update_from_hidden(metrics.LogLoss(), h, w, y[:44])
        with pytest.raises(ValueError, match="block_rows must be a positive integer"):
            metrics.update_from_hidden(metrics.LogLoss(), h, w, y, block_rows=0)
        with pytest.raises(ce.DTypeError, match="head must hold real floating numbers"):
            metrics.update_from_hidden(metrics.LogLoss(), h, w.astype(int), y)
        with pytest.raises(ce.TargetIndexError, match="out of range for C = 11"):
            metrics.update_from_hidden(metrics.LogLoss(), h, w, y + 11)
