"""Property tests: the identities and bounds every input must satisfy.

Logits range over [-1e4, 1e4] in float64, where a naive ``exp`` overflows;
probability vectors include exact zeros.  Shapes stay small so that each
property runs in well under a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import crossentropy as ce
from crossentropy import info
from tests.support import assert_close

LN2 = math.log(2)
BIG = 1e4

# the loss functions warn when logits look like probabilities (rows in [0, 1] summing
# to 1), which generated logits sometimes do; that warning is not what is tested here
pytestmark = pytest.mark.filterwarnings("ignore::crossentropy.ProbabilitiesAsLogitsWarning")


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _array(shape: tuple[int, ...], lo: float = -BIG, hi: float = BIG) -> st.SearchStrategy:
    return hnp.arrays(np.float64, shape, elements=_floats(lo, hi))


@st.composite
def logits(draw, max_rows: int = 5, max_classes: int = 6, min_classes: int = 1) -> np.ndarray:
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(min_classes, max_classes))
    return draw(_array((n, c)))


def _normalise(w: np.ndarray) -> np.ndarray:
    w = np.where(w.sum(axis=-1, keepdims=True) == 0, 1.0, w)  # no all-zero rows
    return w / w.sum(axis=-1, keepdims=True)


@st.composite
def distributions(draw, shape: tuple[int, ...]) -> np.ndarray:
    """Probability vectors along the last axis, with exact zeros now and then."""
    w = draw(hnp.arrays(np.float64, shape, elements=st.one_of(st.just(0.0), _floats(0, 1))))
    return _normalise(w)


@st.composite
def distribution_pairs(draw) -> tuple[np.ndarray, np.ndarray]:
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 6)))
    return draw(distributions(shape)), draw(distributions(shape))


# -- softmax family ------------------------------------------------------------------------


@given(x=logits(), axis=st.sampled_from([0, 1, -1]))
def test_softmax_is_a_distribution(x, axis):
    s = ce.softmax(x, axis=axis)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=0, atol=1e-12)


@given(data=st.data(), x=logits())
def test_softmax_invariant_to_a_constant_per_row(data, x):
    c = data.draw(_array((x.shape[0], 1)), label="c")
    np.testing.assert_allclose(ce.softmax(x + c), ce.softmax(x), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ce.log_softmax(x + c), ce.log_softmax(x), rtol=0, atol=1e-8)


@given(x=logits(), axis=st.sampled_from([0, -1]))
def test_log_softmax_is_log_of_softmax(x, axis):
    s = ce.softmax(x, axis=axis)
    ls = ce.log_softmax(x, axis=axis)
    assert np.all(ls <= 0)
    keep = s > 1e-200  # where softmax is not tiny (log of a rounded-to-0 value is -inf)
    np.testing.assert_allclose(ls[keep], np.log(s[keep]), rtol=1e-12, atol=1e-10)


@given(x=logits(), axis=st.sampled_from([0, 1, -1]))
def test_logsumexp_bounds(x, axis):
    lse = ce.logsumexp(x, axis=axis)
    m = x.max(axis=axis)
    assert np.all(lse >= m)
    assert np.all(lse <= m + math.log(x.shape[axis]) * (1 + 1e-12) + 1e-12)


# -- information theory ----------------------------------------------------------------------


@given(pq=distribution_pairs(), base=st.sampled_from([None, 2]))
def test_kl_divergence_non_negative(pq, base):
    p, q = pq
    assert np.all(info.kl_divergence(p, q, base=base) >= -1e-12)
    assert np.all(info.kl_divergence(p, p, base=base) == 0)


@given(pq=distribution_pairs())
def test_cross_entropy_is_entropy_plus_kl(pq):
    p, q = pq
    h_pq = info.cross_entropy(p, q)
    np.testing.assert_allclose(
        h_pq, info.entropy(p) + info.kl_divergence(p, q), rtol=1e-9, atol=1e-12
    )
    assert np.all(h_pq >= info.entropy(p) - 1e-12)


@given(pq=distribution_pairs())
def test_js_divergence_bounded_and_symmetric(pq):
    p, q = pq
    js = info.js_divergence(p, q)
    assert np.all(np.isfinite(js))
    assert np.all((js >= -1e-12) & (js <= LN2 + 1e-12))
    np.testing.assert_allclose(js, info.js_divergence(q, p), rtol=1e-12, atol=1e-15)


@given(pq=distribution_pairs())
def test_entropy_between_zero_and_log_c(pq):
    p, _ = pq
    h = info.entropy(p)
    assert np.all((h >= 0) & (h <= math.log(p.shape[-1]) + 1e-12))


# -- losses ------------------------------------------------------------------------------------


@st.composite
def classification_batches(draw, min_classes: int = 1):
    """``(logits, target, kwargs)`` for cross_entropy / nll_loss, index or probability targets."""
    x = draw(logits(min_classes=min_classes))
    n, c = x.shape
    if draw(st.booleans()):
        target = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    else:
        target = draw(distributions((n, c)))
    weight = draw(st.none() | _array((c,), 0.01, 5.0))
    return (
        x,
        target,
        {"weight": weight, "reduction": draw(st.sampled_from(["mean", "sum", "none"]))},
    )


@given(batch=classification_batches(), smoothing=st.just(0.0) | _floats(0, 1))
def test_cross_entropy_non_negative(batch, smoothing):
    x, target, kw = batch
    loss = ce.cross_entropy(x, target, label_smoothing=smoothing, **kw)
    assert np.all(loss >= 0)


@st.composite
def index_batches(draw):
    """(N, C) or (N, C, d) logits with class-index targets, some of them ignored."""
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    extra = draw(st.sampled_from([(), (3,)]))
    x = draw(_array((n, c, *extra)))
    labels = st.integers(0, c - 1) | st.just(-100)
    target = draw(hnp.arrays(np.int64, (n, *extra), elements=labels))
    weight = draw(st.none() | _array((c,), 0.01, 5.0))
    return (
        x,
        target,
        {"weight": weight, "reduction": draw(st.sampled_from(["mean", "sum", "none"]))},
    )


@given(batch=index_batches())
def test_cross_entropy_is_log_softmax_then_nll(batch):
    # nn.CrossEntropyLoss = nn.LogSoftmax(dim=1) + nn.NLLLoss
    x, target, kw = batch
    loss = ce.cross_entropy(x, target, **kw)
    assert_close(loss, ce.nll_loss(ce.log_softmax(x, axis=1), target, **kw), rtol=1e-12, atol=1e-9)


@given(x=logits(), data=st.data())
def test_cross_entropy_gradient_rows_sum_to_zero(x, data):
    n, c = x.shape
    if data.draw(st.booleans(), label="index target"):
        target = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    else:
        target = data.draw(distributions((n, c)))
    _, g = ce.value_and_grad(ce.cross_entropy)(x, target)
    assert g.shape == x.shape
    np.testing.assert_allclose(g.sum(axis=1), 0.0, rtol=0, atol=1e-12)


@st.composite
def binary_batches(draw, lo: float = -BIG, hi: float = BIG):
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    x = draw(_array(shape, lo, hi))
    y = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0]) | _floats(0, 1)))
    weight = draw(st.none() | _array(shape[-1:], 0.0, 5.0))
    return x, y, weight


@given(batch=binary_batches(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_binary_cross_entropy_with_logits_non_negative(batch, reduction):
    x, y, weight = batch
    loss = ce.binary_cross_entropy_with_logits(x, y, weight, reduction=reduction)
    assert np.all(loss >= 0)


@given(batch=binary_batches(-10.0, 10.0))
def test_bce_with_logits_is_bce_of_sigmoid(batch):
    # for |x| <= 10 sigmoid is far from saturating to 0 or 1 in float64
    x, y, weight = batch
    fused = ce.binary_cross_entropy_with_logits(x, y, weight, reduction="none")
    naive = ce.binary_cross_entropy(ce.sigmoid(x), y, weight, reduction="none")
    np.testing.assert_allclose(fused, naive, rtol=1e-9, atol=1e-12)


@given(x=logits(), data=st.data(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_mse_loss_non_negative(x, data, reduction):
    y = data.draw(_array(x.shape), label="target")
    assert np.all(ce.mse_loss(x, y, reduction=reduction) >= 0)


@given(x=logits(), data=st.data(), margin=_floats(-2, 2))
def test_hinge_loss_non_negative(x, data, margin):
    y = data.draw(hnp.arrays(np.float64, x.shape, elements=st.sampled_from([-1.0, 1.0])))
    loss = ce.hinge_loss(x, y, margin=margin, reduction="none")
    assert np.all(loss >= 0)
    np.testing.assert_array_equal(loss, np.maximum(0, margin - y * x))


@given(
    batch=classification_batches(min_classes=1),
    p=st.sampled_from([1, 2]),
    margin=_floats(0, 2),
)
def test_multi_margin_loss_non_negative(batch, p, margin):
    x, target, kw = batch
    if target.dtype.kind == "f":  # class indices only
        target = np.argmax(target, axis=1)
    loss = ce.multi_margin_loss(x, target, p=p, margin=margin, **kw)
    assert np.all(loss >= 0)


# -- the softmax variants and the margin family -------------------------------------


@given(data=st.data(), x=logits(min_classes=2), gamma=_floats(0.0, 5.0))
def test_focal_loss_between_zero_and_cross_entropy(data, x, gamma):
    y = data.draw(hnp.arrays(np.int64, x.shape[0], elements=st.integers(0, x.shape[1] - 1)))
    focal = ce.focal_cross_entropy(x, y, gamma, reduction="none")
    plain = ce.cross_entropy(x, y, reduction="none")
    assert np.all(focal >= 0)
    assert np.all(focal <= plain * (1 + 1e-12) + 1e-300)


@given(data=st.data(), x=logits(min_classes=2), q=_floats(0.01, 1.0), eps=_floats(-1.0, 5.0))
def test_generalized_and_poly1_bounds(data, x, q, eps):
    y = data.draw(hnp.arrays(np.int64, x.shape[0], elements=st.integers(0, x.shape[1] - 1)))
    gce = ce.generalized_cross_entropy(x, y, q, reduction="none")
    assert np.all(gce >= 0) and np.all(gce <= 1 / q * (1 + 1e-12))
    plain = ce.cross_entropy(x, y, reduction="none")
    poly = ce.poly1_cross_entropy(x, y, eps, reduction="none")
    p_t = np.exp(-plain)  # 1 - p_t is in [0, 1]: poly-1 lies between CE + min(eps, 0) and CE + max(eps, 0)
    assert_close(poly, plain + eps * (1 - p_t), rtol=1e-9, atol=1e-9)


@given(data=st.data(), x=logits(min_classes=2))
def test_crammer_singer_between_zero_and_weston_watkins_sum(data, x):
    y = data.draw(hnp.arrays(np.int64, x.shape[0], elements=st.integers(0, x.shape[1] - 1)))
    cs = ce.multiclass_hinge_loss(x, y, reduction="none")
    ww = ce.multi_margin_loss(x, y, reduction="none") * x.shape[1]  # the sum over wrong classes
    assert np.all(cs >= 0)
    assert np.all(cs <= ww * (1 + 1e-12) + 1e-9)


@given(a=_array((3, 4), -50, 50), b=_array((3, 4), -3, 3))
def test_signed_logsumexp_recovers_the_sum(a, b):
    r, s = ce.logsumexp(a, b=b, return_sign=True)
    assert_close(s * np.exp(r), np.sum(b * np.exp(a), axis=-1), rtol=1e-9, atol=1e-300)
