"""``crossentropy.kernels.quick``: the common call gives what the general path gives, or defers.

Every test compares a call that takes the quick path with the same call through
the general path (``quick_cross_entropy`` switched off), and PyTorch in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crossentropy as ce
from crossentropy.kernels import _launch, native, quick
from crossentropy.losses import classification

torch = pytest.importorskip("torch")
TF = torch.nn.functional


@pytest.fixture
def taken(monkeypatch):
    """Which calls the quick path answered (True) or left to the general path (False)."""
    seen = []
    real = quick.quick_cross_entropy

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(classification, "quick_cross_entropy", spy)
    return seen


def general(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the quick path switched off."""
    saved = classification.quick_cross_entropy
    classification.quick_cross_entropy = lambda *a, **k: None
    try:
        return fn(*args, **kwargs)
    finally:
        classification.quick_cross_entropy = saved


def _data(rng, n, c, dtype="float32", target_dtype="int64"):
    x = rng.normal(0, 2.0, size=(n, c)).astype(dtype)
    y = rng.integers(0, c, size=n).astype(target_dtype)
    return x, y


TOL = {"float32": {"rtol": 2e-6, "atol": 1e-7}, "float64": {"rtol": 1e-13, "atol": 1e-15}}


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(64, 10), (7, 1), (3, 33), (300, 100), (5, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_forward_equals_general_path(taken, rng, kind, dtype, shape, reduction):
    x, y = _data(rng, *shape, dtype=dtype)
    if kind == "torch":
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    options = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 5.0}
    out = ce.cross_entropy(x, y, **options)
    assert taken == [True]
    expected = general(ce.cross_entropy, x, y, **options)
    assert type(out) is type(expected) and out.dtype == expected.dtype
    assert tuple(out.shape) == tuple(expected.shape)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), **TOL[dtype])
    # PyTorch's equivalent: capped logits, then the z-loss added
    capped = 5.0 * torch.tanh(torch.as_tensor(np.asarray(x), dtype=torch.float64) / 5.0)
    ref = TF.cross_entropy(
        capped, torch.as_tensor(np.asarray(y)), reduction=reduction, label_smoothing=0.1
    )
    z = 1e-3 * torch.logsumexp(capped, 1) ** 2
    ref = ref + {"mean": z.mean(), "sum": z.sum(), "none": z}[reduction]
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(np.asarray(out), ref.numpy(), **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(64, 10), (300, 100)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_backward_equals_torch(taken, rng, dtype, shape, reduction):
    x, y = _data(rng, *shape, dtype=dtype)
    xt = torch.from_numpy(x).requires_grad_()
    loss = ce.cross_entropy(xt, torch.from_numpy(y), reduction=reduction, label_smoothing=0.05)
    assert taken == [True]
    assert type(loss.grad_fn).__name__ == "_CrossEntropyBackward"
    seed = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
    (loss * seed).sum().backward()
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ref = TF.cross_entropy(x64, torch.from_numpy(y), reduction=reduction, label_smoothing=0.05)
    (ref * seed.double()).sum().backward()
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-15}
    np.testing.assert_allclose(loss.detach().numpy(), ref.detach().numpy(), **tol)
    np.testing.assert_allclose(xt.grad.numpy(), x64.grad.numpy(), **tol)


def test_value_and_grad_numpy_and_tensors(taken, rng):
    x, y = _data(rng, 40, 6, dtype="float64")
    vg = ce.value_and_grad(ce.cross_entropy)
    for args in [(x, y), (torch.from_numpy(x), torch.from_numpy(y))]:
        value, g = vg(*args, reduction="sum")
        ref_value, ref_g = general(vg, *args, reduction="sum")
        np.testing.assert_allclose(np.asarray(value), np.asarray(ref_value), rtol=1e-13)
        np.testing.assert_allclose(np.asarray(g), np.asarray(ref_g), rtol=1e-13, atol=1e-16)
        assert type(g) is type(ref_g)
    assert taken == [True, True]


def test_second_backward_and_double_backward_recompute(rng):
    x, y = _data(rng, 8, 5, dtype="float64")
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.from_numpy(y)
    loss = ce.cross_entropy(xt, yt)
    (g1,) = torch.autograd.grad(loss, xt, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, xt, retain_graph=True)  # the saved gradient is spent
    torch.testing.assert_close(g1, g2, rtol=1e-14, atol=0)
    (g3,) = torch.autograd.grad(loss, xt, create_graph=True)
    hvp = torch.autograd.grad((g3 * torch.ones_like(g3)).sum(), xt)[0]
    x64 = xt.detach().clone().requires_grad_()
    (r,) = torch.autograd.grad(TF.cross_entropy(x64, yt), x64, create_graph=True)
    expected = torch.autograd.grad(r.sum(), x64)[0]
    torch.testing.assert_close(hvp, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("target_dtype", ["int32", "int64"])
@pytest.mark.parametrize("n", [5, 300])  # indices read from memory, or through NumPy
def test_targets_out_of_range_take_the_general_path(taken, rng, target_dtype, n):
    x, y = _data(rng, n, 4, target_dtype=target_dtype)
    for arrays in [(x, y), (torch.from_numpy(x), torch.from_numpy(y))]:
        xs, ys = arrays
        ys = ys.copy() if isinstance(ys, np.ndarray) else ys.clone()
        ys[3] = -100  # ignored (PyTorch's default ignore_index): counted out, on the quick path
        keep = np.arange(n) != 3
        expected = TF.cross_entropy(
            torch.as_tensor(x[keep], dtype=torch.float64), torch.as_tensor(y[keep]).long()
        )
        assert float(ce.cross_entropy(xs, ys)) == pytest.approx(float(expected), rel=1e-6)
        assert float(general(ce.cross_entropy, xs, ys)) == pytest.approx(float(expected), rel=1e-6)
        ys[3] = 4
        with pytest.raises(ce.TargetIndexError, match="Target 4 is out of bounds"):
            ce.cross_entropy(xs, ys)
        ys[3] = -1
        with pytest.raises(ce.TargetIndexError, match="Target -1 is out of bounds"):
            ce.cross_entropy(xs, ys)
    assert taken == [True, False, False] * 2  # an index out of range: declined, nothing written


def test_ignore_index_inside_the_classes(taken, rng):
    x, y = _data(rng, 50, 6, dtype="float64")
    y[::3] = 2
    for reduction in ["mean", "sum", "none"]:
        out = ce.cross_entropy(x, y, ignore_index=2, reduction=reduction)
        ref = TF.cross_entropy(
            torch.from_numpy(x), torch.from_numpy(y), ignore_index=2, reduction=reduction
        )
        np.testing.assert_allclose(out, ref.numpy(), rtol=1e-13, atol=1e-15)
    y[:] = 2  # every target ignored: NaN mean, as PyTorch
    assert np.isnan(ce.cross_entropy(x, y, ignore_index=2))
    assert taken == [True] * 4


@pytest.mark.parametrize(
    "case",
    ["weight", "non-contiguous", "3-d", "axis 0", "probabilities", "float16", "bool option",
     "nan smoothing", "requires-grad target dtype", "list target", "parameter"],
)  # fmt: skip
def test_other_calls_take_the_general_path(taken, rng, case):
    x, y = _data(rng, 6, 4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    calls = {
        "weight": lambda: ce.cross_entropy(x, y, np.ones(4, np.float32)),
        "non-contiguous": lambda: ce.cross_entropy(x.T.copy().T, y),
        "3-d": lambda: ce.cross_entropy(x[:, :, None], y[:, None]),
        "axis 0": lambda: ce.cross_entropy(x.T, y, axis=0),
        "probabilities": lambda: ce.cross_entropy(x, np.full_like(x, 0.25)),
        "float16": lambda: ce.cross_entropy(x.astype(np.float16), y),
        "bool option": lambda: ce.cross_entropy(x, y, label_smoothing=True),
        "nan smoothing": lambda: ce.cross_entropy(x, y, label_smoothing=float("nan")),
        "requires-grad target dtype": lambda: ce.cross_entropy(xt, yt.to(torch.int16)),
        "list target": lambda: ce.cross_entropy(x, y.tolist()),
        "parameter": lambda: ce.cross_entropy(torch.nn.Parameter(xt), yt),
    }
    try:
        calls[case]()
    except ValueError as e:  # the general path's own errors
        assert case == "nan smoothing" and "label_smoothing must be in [0.0, 1.0]" in str(e)
    assert taken == [False]


def test_the_probe_still_warns(taken):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)
    y = np.array([0, 2])
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning):
        ce.cross_entropy(probs, y)
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning):
        ce.cross_entropy(torch.from_numpy(probs), torch.from_numpy(y))
    wide = np.full((3, 200), 1 / 200)  # the probe's NumPy branch (C > 64)
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning):
        ce.cross_entropy(torch.from_numpy(wide), torch.tensor([0, 1, 2]))
    # the first row sums to 1 but the second is not in [0, 1]: no warning, as the probe says
    mixed = np.array([[0.5, 0.5], [2.0, -1.0]])
    assert not ce.looks_like_probabilities(mixed)
    ce.cross_entropy(mixed, np.array([0, 1]))
    assert taken == [True] * 4


@given(
    n=st.integers(1, 70),
    c=st.one_of(st.integers(1, 40), st.integers(41, 300)),  # columns and short-row kernels
    reduction=st.sampled_from(["mean", "sum", "none"]),
    smoothing=st.sampled_from([0.0, 0.3, 1]),
    ignore=st.sampled_from([-100, 0, 3]),
    seed=st.integers(0, 2**16),
)
def test_property_quick_equals_general(n, c, reduction, smoothing, ignore, seed):
    rng = np.random.default_rng(seed)
    x, y = _data(rng, n, c, dtype="float64")
    options = {"reduction": reduction, "label_smoothing": smoothing, "ignore_index": ignore}
    out = ce.cross_entropy(x, y, **options)
    expected = general(ce.cross_entropy, x, y, **options)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "c", [2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 255, 256, 1000, 1024, 1025, 2047, 2048, 2049, 4096, 4097]
)
@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.2}, {"z_loss": 1e-3}, {"label_smoothing": 1.0}, {"ignore_index": 1}],
)
def test_row_lengths_around_the_vector_width_equal_torch(taken, rng, dtype, c, options):
    """Rows whose length is a multiple of the kernel's vectors, one more or one less
    (the last vector overlaps the one before it), and at the edge of the short-row
    kernel (4096 float32 / 2048 float64 values) and of its two-row steps (256 to
    1024 float32 / 512 float64), against PyTorch in float64, value and gradient,
    with ignored rows (up to 32 classes: the columns kernel)."""
    _check_against_torch(rng, dtype, c, options)
    assert all(taken)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("c", [1, 2, 7, 8, 9, 15, 16, 17, 31, 32])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2}, {"ignore_index": 1}])
def test_rows_kernel_on_rows_shorter_than_32_classes(taken, monkeypatch, rng, dtype, c, options):
    """The rows kernel, which the call leaves to the columns kernel up to 32 classes,
    on such rows when asked (the extension's own callers may): shorter than a vector
    (padded with -inf), or a vector and a few lanes."""
    monkeypatch.setattr(_launch, "SMALL_C", 0)
    columns = []
    real = native.extension.quick
    monkeypatch.setattr(native.extension, "quick", lambda *a: columns.append(a[13]) or real(*a))
    _check_against_torch(rng, dtype, c, options if c > 1 else {})
    assert all(taken) and columns == [0]


def _check_against_torch(rng, dtype, c, options):
    """``value_and_grad(cross_entropy)`` on 11 rows of ``c`` classes, two of them
    ignored, against PyTorch in float64 (z-loss added to PyTorch's loss)."""
    opts = dict(options)
    z = opts.pop("z_loss", 0.0)
    ignore = opts.get("ignore_index", -100)
    x, y = _data(rng, 11, c, dtype=dtype)
    y[4] = y[7] = ignore  # (rows in pairs from 256 classes: an ignored first and second)
    value, g = ce.value_and_grad(ce.cross_entropy)(x, y, z_loss=z, **opts)
    x64 = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    t = torch.from_numpy(y)
    per_row = TF.cross_entropy(x64, t, reduction="none", **opts)
    counts = t != ignore
    per_row = per_row + z * torch.logsumexp(x64, 1) ** 2 * counts
    expected = per_row.sum() / counts.sum()
    expected.backward()
    tol = TOL[dtype]
    np.testing.assert_allclose(value, expected.item(), rtol=tol["rtol"] * 5, atol=tol["atol"])
    np.testing.assert_allclose(g, x64.grad.numpy(), rtol=tol["rtol"] * 5, atol=tol["atol"] * 10)


@pytest.mark.parametrize("reduction", [["mean"], {"mean": 1}, b"mean", None])
def test_odd_reduction_values_get_the_general_paths_error(taken, rng, reduction):
    """An unhashable or non-string reduction is not looked up by the quick path: the
    general path names it."""
    x, y = _data(rng, 4, 3)
    for xs, ys in [(x, y), (torch.from_numpy(x), torch.from_numpy(y))]:
        with pytest.raises(ValueError, match="reduction must be one of 'none', 'mean', 'sum'"):
            ce.cross_entropy(xs, ys, reduction=reduction)
    assert taken == [False, False]


def test_ignore_index_beyond_int64_takes_the_general_path(taken, rng):
    """An ``ignore_index`` the kernel cannot hold (beyond int64) is not passed to it:
    the general path answers, as it would for any other out-of-range value."""
    x, y = _data(rng, 6, 4, dtype="float64")
    out = ce.cross_entropy(x, y, ignore_index=1 << 70)
    expected = TF.cross_entropy(torch.from_numpy(x), torch.from_numpy(y))
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-13)
    assert taken == [False]
