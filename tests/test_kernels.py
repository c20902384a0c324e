"""The fused CPU kernels (``crossentropy.kernels``) against the portable reference path.

Every comparison runs the same call twice, through the kernel (a spy on the
extension proves that it ran) and inside ``kernels.disabled()`` (the reference
Array API path), and compares values and gradients; the kernel is also checked
against float64 / long-double truth, against PyTorch float64 for what PyTorch
can express, and z_loss / softcap against PyTorch autograd on their formula.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crossentropy as ce
from crossentropy import kernels
from crossentropy.kernels import _launch, native, softmax
from tests.support import finite_difference, torch_grad, torch_oracle

value_and_grad_ce = ce.value_and_grad(ce.cross_entropy)


# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Counts of calls into the extension's entry points."""
    assert kernels.available(), "the C extension crossentropy.kernels._ce was not built"
    counts = {"cross_entropy": 0, "softmax": 0}
    # the one-step entry of the common call (kernels.quick) runs the cross-entropy kernel,
    # unless it declines the call (status bit 1: an index out of range, nothing computed)
    for name, counted in [("cross_entropy",) * 2, ("softmax",) * 2, ("quick", "cross_entropy")]:
        real = getattr(native.extension, name)

        def spy(*args, _real=real, _name=counted, _quick=name == "quick"):
            out = _real(*args)
            counts[_name] += not (_quick and out[1] & 1)
            return out

        monkeypatch.setattr(native.extension, name, spy)
    return counts


def both(calls: dict, fn, *args, entry: str = "cross_entropy", **kwargs):
    """``(through the kernel, through the reference path)``; asserts which ran."""
    before = calls[entry]
    fast = fn(*args, **kwargs)
    assert calls[entry] == before + 1, "the kernel did not run"
    with kernels.disabled():
        ref = fn(*args, **kwargs)
    assert calls[entry] == before + 1, "the kernel ran inside kernels.disabled()"
    return fast, ref


def close(actual, expected, dtype, scale=1.0, rtol=None):
    """Kernel vs reference: relative to rounding of the compute dtype; ``scale``
    bounds the magnitudes involved (absolute errors of order eps * scale)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    f32 = np.dtype(dtype) != np.float64
    rtol = rtol if rtol is not None else (2e-6 if f32 else 1e-12)
    atol = (4e-7 if f32 else 1e-14) * scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def make(rng, shape, axis=None, *, probs=False, ignore=False, weighted=False, dtype="float64"):
    ax = (1 if len(shape) > 1 else 0) if axis is None else axis % len(shape)
    C = shape[ax]
    x = rng.standard_normal(shape).astype(dtype) * np.asarray(2.0, dtype)
    batch = tuple(n for i, n in enumerate(shape) if i != ax)
    if probs:
        t = rng.random(shape).astype(dtype)
        t /= t.sum(axis=ax, keepdims=True)
    else:
        t = rng.integers(0, C, batch)
        if ignore:
            t[rng.random(batch) < 0.3] = -100
    w = rng.random(C).astype(dtype) + np.asarray(0.1, dtype) if weighted else None
    return x, t, w


OPTIONS = {
    "plain": {},
    "ignore": {"ignore": True},
    "weight": {"weighted": True, "ignore": True},
    "smooth": {"label_smoothing": 0.1},
    "smooth-weight": {"label_smoothing": 0.2, "weighted": True, "ignore": True},
    "z_loss": {"z_loss": 1e-2, "ignore": True},
    "softcap": {"softcap": 3.0},
    "everything": {"softcap": 3.0, "z_loss": 0.1, "label_smoothing": 0.1, "weighted": True, "ignore": True},
    "probs": {"probs": True},
    "probs-everything": {"probs": True, "weighted": True, "label_smoothing": 0.1, "softcap": 4.0, "z_loss": 0.01},
}  # fmt: skip

SHAPES = {
    "rows": ((24, 100), None),  # class axis contiguous, C > 32: the rows kernel
    "long-rows": ((3, 2500), None),  # several 1024-element chunks per row
    "columns": ((40, 7), None),  # small C: vectorized across rows
    "k-dim": ((3, 6, 5, 4), None),  # class axis 1 of (N, C, d1, d2): strided classes
    "k-dim-wide": ((2, 70, 9), None),
    "axis-last-3d": ((3, 5, 60), -1),
    "unbatched": ((50,), None),
}


def split(opts: dict) -> tuple[dict, dict]:
    data = {k: opts[k] for k in ("probs", "ignore", "weighted") if k in opts}
    return data, {k: v for k, v in opts.items() if k not in data}


# -- cross_entropy: kernel vs reference -------------------------------------------


class TestCrossEntropyKernel:
    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("layout", list(SHAPES))
    @pytest.mark.parametrize("option", list(OPTIONS))
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_value_and_grad_match_reference(self, calls, rng, dtype, layout, option, reduction):
        shape, axis = SHAPES[layout]
        data, kw = split(OPTIONS[option])
        if layout == "unbatched" and data.get("ignore"):
            data["ignore"] = False
        x, t, w = make(rng, shape, axis, dtype=dtype, **data)
        (v, g), (v_ref, g_ref) = both(
            calls, value_and_grad_ce, x, t, w, reduction=reduction, axis=axis, **kw
        )
        assert v.dtype == v_ref.dtype == np.dtype(dtype) and v.shape == v_ref.shape
        assert g.dtype == g_ref.dtype == np.dtype(dtype) and g.shape == x.shape
        close(v, v_ref, dtype, scale=10)
        close(g, g_ref, dtype, scale=np.abs(g_ref).max(), rtol=1e-5 if dtype == "float32" else None)
        # the forward alone gives exactly value_and_grad's value
        before = calls["cross_entropy"]
        plain = ce.cross_entropy(x, t, w, reduction=reduction, axis=axis, **kw)
        assert calls["cross_entropy"] == before + 1
        np.testing.assert_array_equal(plain, v)

    @pytest.mark.parametrize("option", ["plain", "weight", "smooth-weight", "probs-everything"])
    def test_probability_target_gradient(self, calls, rng, option):
        data, kw = split(OPTIONS[option])
        x, t, w = make(rng, (6, 40), probs=True, weighted=data.get("weighted", False))
        f = ce.value_and_grad(ce.cross_entropy, (0, 1))
        (v, (gx, gt)), (v_ref, (gx_ref, gt_ref)) = both(calls, f, x, t, w, **kw)
        close(v, v_ref, "float64")
        close(gx, gx_ref, "float64", scale=np.abs(gx_ref).max())
        close(gt, gt_ref, "float64", scale=np.abs(gt_ref).max())
        np.testing.assert_allclose(
            gt,
            finite_difference(lambda a: ce.cross_entropy(x, a, w, **kw), t),
            rtol=1e-6,
            atol=1e-8,
        )

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize(
        "layout", ["class-stride-2", "row-stride", "transposed", "k-dim-sliced", "fortran"]
    )
    def test_strided_views_are_read_in_place(self, calls, rng, dtype, layout):
        base = rng.standard_normal((40, 90)).astype(dtype)
        x, axis = {
            "class-stride-2": (base[:, ::2], None),
            "row-stride": (base[::3], None),
            "transposed": (base.T, 0),  # (90, 40) with classes on axis 0
            "k-dim-sliced": (base.reshape(4, 10, 90)[:, :, 5:80], 1),
            "fortran": (np.asfortranarray(base), None),
        }[layout]
        ax = 1 if axis is None else axis
        t = rng.integers(0, x.shape[ax], tuple(n for i, n in enumerate(x.shape) if i != ax))
        (v, g), (v_ref, g_ref) = both(
            calls, value_and_grad_ce, x, t, axis=axis, label_smoothing=0.1
        )
        close(v, v_ref, dtype)
        close(g, g_ref, dtype, scale=np.abs(g_ref).max(), rtol=1e-5)

    @pytest.mark.parametrize("dtype", ["int64", "int32", "int16", "uint8"])
    @pytest.mark.parametrize("order", ["C", "F", "sliced"])
    @pytest.mark.parametrize("shape", [(12, 5, 7), (12, 50, 7), (60, 40), (60, 3)])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_class_index_targets_are_read_as_given(
        self, calls, rng, dtype, order, shape, reduction
    ):
        """int64 and int32 indices are read in place in any layout that folds
        like the logits' rows; others are copied to int64 first."""
        x = rng.standard_normal(shape)
        lead = (shape[0],) + shape[2:]
        big = rng.integers(0, shape[1], (lead[0], 2 * lead[1]) if len(lead) == 2 else 2 * lead[0])
        big[rng.random(big.shape) < 0.2] = 0 if dtype == "uint8" else -100
        big = big.astype(dtype)
        half = big[..., : big.shape[-1] // 2]
        t = {"C": np.ascontiguousarray(half), "F": np.asfortranarray(half)}.get(order)
        t = big[..., ::2] if t is None else t
        w = rng.random(shape[1]) + 0.1
        kw = {"reduction": reduction, "label_smoothing": 0.1}
        (v, g), (v_ref, g_ref) = both(calls, value_and_grad_ce, x, t, w, **kw)
        close(v, v_ref, "float64")
        close(g, g_ref, "float64", scale=np.abs(g_ref).max())

    @pytest.mark.parametrize("ignore_index", [-100, 0, 3, 1 << 40, 1 << 70, -(1 << 70)])
    @pytest.mark.parametrize("C", [6, 300])
    def test_ignore_index_values(self, calls, rng, ignore_index, C):
        x = rng.standard_normal((80, C))
        t = rng.integers(0, C, 80)
        if -(1 << 63) <= ignore_index < (1 << 63):
            t[::4] = ignore_index
        (v, g), (v_ref, g_ref) = both(
            calls, value_and_grad_ce, x, t, ignore_index=ignore_index, reduction="sum"
        )
        close(v, v_ref, "float64")
        close(g, g_ref, "float64", scale=np.abs(g_ref).max())

    @pytest.mark.parametrize("mode", [-(1 << 30), -1000, -1])
    @pytest.mark.parametrize("option", ["everything", "probs-everything", "plain"])
    def test_exact_row_path(self, calls, rng, monkeypatch, mode, option):
        """The exact path (two passes, or one-pass statistics beyond -mode classes)
        that serves rows with a non-finite maximum, on finite rows."""
        data, kw = split(OPTIONS[option])
        x, t, w = make(rng, (5, 2500), **data)
        fast = value_and_grad_ce(x, t, w, **kw)
        monkeypatch.setattr(_launch, "ROW_MODE", mode)
        (v, g), (v_ref, g_ref) = both(calls, value_and_grad_ce, x, t, w, **kw)
        close(v, v_ref, "float64")
        close(g, g_ref, "float64", scale=np.abs(g_ref).max())
        close(fast[0], v, "float64")
        close(fast[1], g, "float64", scale=np.abs(g).max())

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("C", [7, 100, 300, 3000])
    @pytest.mark.parametrize("option", ["plain", "everything", "probs-everything"])
    def test_non_finite_logits_match_reference(self, calls, rng, dtype, C, option):
        """+inf, -inf and NaN logits, whole rows of -inf, and ignored rows: the same
        NaN / inf pattern and the same finite numbers as the reference."""
        data, kw = split(OPTIONS[option])
        x, t, w = make(rng, (8, C), dtype=dtype, **data)
        x[0, 1] = np.inf
        x[1, :] = -np.inf
        x[2, 3] = np.nan
        x[3, : C // 2] = -np.inf
        x[4, 0] = -np.inf
        if not data.get("probs"):
            t[5] = -100
            x[5, 2] = np.nan  # ignored row holding a NaN
            t[3] = C - 1  # a finite target logit in the half -inf row
        for reduction in ("none", "sum"):
            (v, g), (v_ref, g_ref) = both(
                calls, value_and_grad_ce, x, t, w, reduction=reduction, **kw
            )
            np.testing.assert_array_equal(np.isnan(v), np.isnan(v_ref))
            np.testing.assert_array_equal(np.isnan(g), np.isnan(g_ref))
            close(v, v_ref, dtype, scale=10)
            finite = np.isfinite(g_ref)
            close(g[finite], g_ref[finite], dtype, scale=1.0, rtol=1e-5)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_extreme_logits(self, calls, rng, dtype):
        """Logits of magnitude 1e4 (exp far out of range) and a row whose softmax
        underflows: the kernel flushes exp below the smallest normal to 0."""
        x = (rng.standard_normal((16, 200)) * 1e4).astype(dtype)
        x[1] = rng.standard_normal(200) * 40  # exponents around -90: subnormal range in float32
        t = rng.integers(0, 200, 16)
        (v, g), (v_ref, g_ref) = both(calls, value_and_grad_ce, x, t, reduction="none")
        close(v, v_ref, dtype, scale=4e4)
        tiny = np.finfo(dtype).smallest_normal
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=tiny)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_as_accurate_as_reference_against_truth(self, calls, rng, dtype):
        """Against long-double truth, the kernel's error is no larger than the
        reference path's (both round the same inputs)."""
        x = (rng.standard_normal((300, 100)) * 20).astype(dtype)
        t = rng.integers(0, 100, 300)
        v, v_ref = both(calls, ce.cross_entropy, x, t, reduction="none")
        xl = x.astype(np.longdouble)
        m = xl.max(axis=1, keepdims=True)
        truth = np.log(np.exp(xl - m).sum(axis=1)) + m[:, 0] - xl[np.arange(300), t]
        err, err_ref = np.abs(v - truth).max(), np.abs(v_ref - truth).max()
        assert err <= 1.5 * err_ref + np.finfo(dtype).eps

    def test_float16_input(self, calls, rng):
        x, t, _ = make(rng, (20, 50), dtype="float16")
        (v, g), (v_ref, g_ref) = both(calls, value_and_grad_ce, x, t)
        assert v.dtype == g.dtype == np.float16
        np.testing.assert_allclose(v.astype(float), v_ref.astype(float), rtol=1e-3)
        np.testing.assert_allclose(g.astype(float), g_ref.astype(float), rtol=1e-2, atol=1e-4)

    def test_matches_torch_oracle(self, calls, rng):
        x, t, w = make(rng, (30, 45), ignore=True, weighted=True)
        before = calls["cross_entropy"]
        value, grad = value_and_grad_ce(x, t, w, label_smoothing=0.15)
        assert calls["cross_entropy"] == before + 1
        tv, tg = torch_grad("cross_entropy", 0, x, t, w, label_smoothing=0.15)
        np.testing.assert_allclose(value, tv, rtol=1e-12)
        np.testing.assert_allclose(grad, tg, rtol=1e-10, atol=1e-15)
        x, t, _ = make(rng, (4, 6, 3, 5))
        np.testing.assert_allclose(
            ce.cross_entropy(x, t, reduction="none"),
            torch_oracle("cross_entropy", x, t, reduction="none"),
            rtol=1e-12,
        )

    def test_every_target_ignored(self, calls):
        x = np.arange(12.0).reshape(3, 4)
        t = np.full(3, -100)
        (v, g), (v_ref, g_ref) = both(calls, value_and_grad_ce, x, t)
        assert np.isnan(v) and np.isnan(v_ref)
        np.testing.assert_array_equal(g, g_ref)
        np.testing.assert_array_equal(g, np.zeros_like(x))

    def test_threads_do_not_change_results(self, calls, rng):
        x, t, w = make(rng, (256, 300), weighted=True, ignore=True, dtype="float32")
        results = []
        for n in (1, 2, 3):
            kernels.set_num_threads(n)
            try:
                results.append(value_and_grad_ce(x, t, w, label_smoothing=0.1, reduction="none"))
            finally:
                kernels.set_num_threads(None)
        for v, g in results[1:]:
            np.testing.assert_array_equal(v, results[0][0])
            np.testing.assert_array_equal(g, results[0][1])

    @given(
        n=st.integers(1, 40),
        c=st.integers(1, 80),
        eps=st.sampled_from([0.0, 0.3]),
        z=st.sampled_from([0.0, 0.05]),
        cap=st.sampled_from([None, 2.0]),
        target_dtype=st.sampled_from(["int64", "int32", "int16"]),
        ignored=st.sampled_from([0.0, 0.5, 1.0]),
        weighted=st.booleans(),
        reduction=st.sampled_from(["mean", "sum", "none"]),
        seed=st.integers(0, 2**32 - 1),
    )
    def test_property_kernel_equals_reference(
        self, n, c, eps, z, cap, target_dtype, ignored, weighted, reduction, seed
    ):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, c)) * 3
        t = rng.integers(0, c, n)
        t[rng.random(n) < ignored] = -100
        t = t.astype(target_dtype)
        w = rng.random(c) + 0.1 if weighted else None
        kw = {"label_smoothing": eps, "z_loss": z, "softcap": cap, "reduction": reduction}
        v, g = value_and_grad_ce(x, t, w, **kw)
        with kernels.disabled():
            v_ref, g_ref = value_and_grad_ce(x, t, w, **kw)
        close(v, v_ref, "float64", scale=10)
        close(g, g_ref, "float64", scale=max(np.abs(g_ref).max(), 1.0 / n))


# -- z_loss and softcap against PyTorch autograd on the formula -----------------------


class TestZLossSoftcapAgainstTorch:
    """``F.cross_entropy(c * tanh(x / c), y, w) + z * sum(valid * lse**2) / sum(w_y)``
    differentiated by PyTorch autograd in float64."""

    @staticmethod
    def torch_formula(x, t, w, z_loss, softcap, reduction, ignore_index=-100):
        torch = pytest.importorskip("torch")
        import torch.nn.functional as F

        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        tt = torch.from_numpy(t)
        wt = None if w is None else torch.from_numpy(w.astype(np.float64))
        logits = xt if softcap is None else softcap * torch.tanh(xt / softcap)
        per_row = F.cross_entropy(logits, tt, wt, reduction="none", ignore_index=ignore_index)
        valid = tt != ignore_index
        lse = torch.logsumexp(logits, dim=1)
        per_row = per_row + z_loss * torch.where(valid, lse * lse, torch.zeros_like(lse))
        if reduction == "none":
            out = per_row
        elif reduction == "sum":
            out = per_row.sum()
        else:
            w_y = torch.ones_like(lse) if wt is None else wt[torch.where(valid, tt, 0)]
            out = per_row.sum() / torch.where(valid, w_y, torch.zeros_like(w_y)).sum()
        out.sum().backward()
        return out.detach().numpy(), xt.grad.numpy()

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("shape", [(12, 9), (10, 300)])
    @pytest.mark.parametrize("z_loss,softcap", [(1e-2, None), (0.0, 2.5), (0.3, 5.0)])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("weighted", [False, True])
    def test_against_torch_autograd(
        self, calls, rng, dtype, shape, z_loss, softcap, reduction, weighted
    ):
        x, t, w = make(rng, shape, ignore=True, weighted=weighted)
        x *= 3
        before = calls["cross_entropy"]
        v, g = value_and_grad_ce(
            x.astype(dtype), t, None if w is None else w.astype(dtype), reduction=reduction,
            z_loss=z_loss, softcap=softcap,
        )  # fmt: skip
        assert calls["cross_entropy"] == before + 1
        tv, tg = self.torch_formula(x, t, w, z_loss, softcap, reduction)
        tol = {"rtol": 1e-11, "atol": 1e-13} if dtype == "float64" else {"rtol": 2e-5, "atol": 2e-6}
        np.testing.assert_allclose(v, tv, **tol)
        np.testing.assert_allclose(g, tg, **tol)

    def test_gradient_vs_finite_differences(self, rng):
        x, t, w = make(rng, (5, 40), ignore=True, weighted=True)
        kw = {"label_smoothing": 0.1, "z_loss": 0.05, "softcap": 2.0}
        g = ce.grad(ce.cross_entropy)(x, t, w, **kw)
        fd = finite_difference(lambda a: ce.cross_entropy(a, t, w, **kw), x)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


# -- PyTorch CPU tensors: the autograd.Function ----------------------------------------


class TestTorch:
    @pytest.fixture(autouse=True)
    def _torch(self):
        self.torch = pytest.importorskip("torch")
        import torch.nn.functional as F

        self.F = F

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("layout", ["rows", "columns", "k-dim", "axis-last-3d"])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_backward_matches_torch(self, calls, rng, dtype, layout, reduction):
        torch, F = self.torch, self.F
        shape, axis = SHAPES[layout]
        x, t, w = make(rng, shape, axis, ignore=True, weighted=True)
        tdt = getattr(torch, dtype)
        xt = torch.tensor(x, dtype=tdt, requires_grad=True)
        tt, wt = torch.from_numpy(t), torch.tensor(w, dtype=tdt)
        before = calls["cross_entropy"]
        loss = ce.cross_entropy(xt, tt, wt, reduction=reduction, label_smoothing=0.1, axis=axis)
        assert calls["cross_entropy"] == before + 1
        assert type(loss.grad_fn).__name__.startswith("_CrossEntropy")
        seed = torch.linspace(0.5, 2.0, loss.numel(), dtype=tdt).reshape(loss.shape)
        (loss * seed).sum().backward()
        xr = xt.detach().clone().requires_grad_(True)
        xm = xr if axis is None else xr.movedim(axis, 1)
        ref = F.cross_entropy(xm, tt, wt, reduction=reduction, label_smoothing=0.1)
        (ref * seed).sum().backward()
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-14}
        np.testing.assert_allclose(loss.detach().numpy(), ref.detach().numpy(), **tol)
        np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), **tol)

    def test_value_and_grad_on_tensors(self, calls, rng):
        torch = self.torch
        x, t, _ = make(rng, (20, 60), ignore=True)
        xt = torch.tensor(x)
        (v, g), (v_ref, g_ref) = both(calls, value_and_grad_ce, xt, torch.from_numpy(t), z_loss=0.1)
        assert isinstance(g, torch.Tensor) and g.dtype == torch.float64
        close(v.numpy(), v_ref.numpy(), "float64")
        close(g.numpy(), g_ref.numpy(), "float64", scale=1.0)
        # with autograd on: the value is a graph node, the gradient the same numbers
        v2, g2 = value_and_grad_ce(xt.clone().requires_grad_(True), torch.from_numpy(t), z_loss=0.1)
        assert v2.requires_grad
        np.testing.assert_array_equal(g2.numpy(), g.numpy())

    def test_no_grad_forward_uses_kernel(self, calls, rng):
        torch = self.torch
        x, t, _ = make(rng, (16, 33))
        with torch.no_grad():
            v, v_ref = both(
                calls, ce.cross_entropy, torch.tensor(x, requires_grad=True), torch.from_numpy(t)
            )
        close(v.numpy(), v_ref.numpy(), "float64")

    def test_weight_that_needs_a_gradient_takes_reference_path(self, calls, rng):
        torch = self.torch
        x, t, w = make(rng, (8, 40), weighted=True)
        wt = torch.tensor(w, requires_grad=True)
        loss = ce.cross_entropy(torch.tensor(x, requires_grad=True), torch.from_numpy(t), wt)
        assert calls["cross_entropy"] == 0
        loss.backward()
        assert wt.grad is not None and torch.isfinite(wt.grad).all()

    def test_backward_twice_with_retained_graph(self, calls, rng):
        torch = self.torch
        x, t, _ = make(rng, (8, 40))
        xt = torch.tensor(x, requires_grad=True)
        loss = ce.cross_entropy(xt, torch.from_numpy(t))
        loss.backward(retain_graph=True)
        first = xt.grad.clone()
        (3 * loss).backward()
        np.testing.assert_allclose(xt.grad.numpy(), 4 * first.numpy(), rtol=1e-14)

    def test_backward_again_with_the_kernels_disabled(self, rng):
        """The second backward recomputes the gradient: on the tensors themselves
        when the kernels were disabled since the forward."""
        torch = self.torch
        x, t, _ = make(rng, (8, 40))
        xt = torch.tensor(x, requires_grad=True)
        loss = ce.cross_entropy(xt, torch.from_numpy(t))
        loss.backward(retain_graph=True)
        first = xt.grad.clone()
        with ce.kernels.disabled():
            loss.backward()
        np.testing.assert_allclose(xt.grad.numpy(), 2 * first.numpy(), rtol=1e-12)
        np.testing.assert_allclose(first.numpy(), ce.grad(ce.cross_entropy)(x, t), rtol=1e-12)

    @pytest.mark.parametrize("dtype", ["float64", "float16"])  # host views / tensor batch
    @pytest.mark.parametrize("layout", ["rows", "columns", "k-dim"])
    @pytest.mark.parametrize("option", ["plain", "everything", "probs-everything"])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_double_backward(self, calls, rng, dtype, layout, option, reduction):
        """backward(create_graph=True) returns a gradient autograd can differentiate
        again: a gradient penalty and a Hessian-vector product, against the portable
        path (pure torch operations) and, for the plain case, F.cross_entropy."""
        torch, F = self.torch, self.F
        shape, axis = SHAPES[layout]
        data, kw = split(OPTIONS[option])
        x, t, w = make(rng, shape, axis, **data)
        tt, wt = torch.from_numpy(t), None if w is None else torch.from_numpy(w)
        v = torch.from_numpy(rng.standard_normal(shape))

        def penalty_and_hvp(fn):
            xt = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
            loss = fn(xt, tt, wt, reduction=reduction, **kw)
            seed = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
            (g,) = torch.autograd.grad(loss, xt, seed, create_graph=True)
            (hvp,) = torch.autograd.grad(g, xt, v.to(g.dtype), retain_graph=True)
            g.square().sum().backward()
            return g.detach(), hvp, xt.grad

        before = calls["cross_entropy"]
        ours = penalty_and_hvp(ce.cross_entropy)
        assert calls["cross_entropy"] == before + 1
        with kernels.disabled():
            reference = penalty_and_hvp(ce.cross_entropy)
        oracles = [reference]
        if option == "plain" and dtype == "float64":
            oracles.append(penalty_and_hvp(F.cross_entropy))
        tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-2, "atol": 2e-3}
        for oracle in oracles:
            for a, b in zip(ours, oracle):
                np.testing.assert_allclose(a.double().numpy(), b.double().numpy(), **tol)

    @pytest.mark.parametrize("target_dtype", ["int64", "int32", "int16", "uint8"])
    @pytest.mark.parametrize("layout", ["rows", "columns", "k-dim"])
    def test_class_index_tensors_of_a_tensor_batch(self, calls, rng, target_dtype, layout):
        """float16 input is prepared as tensors (not NumPy views): its int64 and
        int32 targets are read in place, the others copied to int64."""
        torch, F = self.torch, self.F
        shape, axis = SHAPES[layout]
        x, t, w = make(rng, shape, axis, ignore=target_dtype != "uint8", weighted=True)
        xt = torch.tensor(x, dtype=torch.float16, requires_grad=True)
        tt = torch.from_numpy(t).to(getattr(torch, target_dtype))
        before = calls["cross_entropy"]
        loss = ce.cross_entropy(xt, tt, torch.from_numpy(w), label_smoothing=0.1)
        loss.backward()
        assert calls["cross_entropy"] == before + 1
        x64 = xt.detach().double().requires_grad_()
        ref = F.cross_entropy(x64, tt.long(), torch.from_numpy(w), label_smoothing=0.1)
        ref.backward()
        np.testing.assert_allclose(loss.double().item(), ref.item(), rtol=2e-3)
        np.testing.assert_allclose(xt.grad.double().numpy(), x64.grad.numpy(), atol=2e-3)

    @pytest.mark.parametrize("function", ["cross_entropy", "logsumexp", "softmax", "log_softmax"])
    def test_torch_func_transforms_take_the_reference_path(self, calls, rng, function):
        """torch.func's tensors have no storage to read: the portable path serves
        them (and gives torch's gradients), the kernel serves the others."""
        torch, F = self.torch, self.F
        x = torch.tensor(rng.standard_normal((40, 500)))
        y = torch.from_numpy(rng.integers(0, 500, 40))
        ours, theirs = {
            "cross_entropy": (
                lambda a: ce.cross_entropy(a, y, label_smoothing=0.1),
                lambda a: F.cross_entropy(a, y, label_smoothing=0.1),
            ),
            "logsumexp": (
                lambda a: ce.logsumexp(a, axis=-1).square().sum(),
                lambda a: torch.logsumexp(a, -1).square().sum(),
            ),
            "softmax": (
                lambda a: ce.softmax(a, axis=-1).square().sum(),
                lambda a: torch.softmax(a, -1).square().sum(),
            ),
            "log_softmax": (
                lambda a: ce.log_softmax(a, axis=-1).square().sum(),
                lambda a: torch.log_softmax(a, -1).square().sum(),
            ),
        }[function]
        np.testing.assert_allclose(
            torch.func.grad(ours)(x).numpy(), torch.func.grad(theirs)(x).numpy(), atol=1e-12
        )
        stacked = torch.stack([x, 2 * x])
        np.testing.assert_allclose(
            torch.func.vmap(ours)(stacked).numpy(), torch.func.vmap(theirs)(stacked).numpy(),
            rtol=1e-12,
        )
        entry = "cross_entropy" if function == "cross_entropy" else "softmax"
        before = calls[entry]
        np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-12)
        assert calls[entry] == before + 1


class TestTorchThroughNumPyViews:
    """float32/float64 CPU tensors are checked and prepared as NumPy views of their
    memory; the kernel then runs exactly as on NumPy arrays, so the results must
    equal the NumPy call's bit for bit, and PyTorch float64 to rounding."""

    @pytest.fixture(autouse=True)
    def _torch(self, monkeypatch):
        self.torch = pytest.importorskip("torch")
        import torch.nn.functional as F

        from crossentropy.kernels import _inplace
        from crossentropy.losses import classification

        self.F = F
        self.inputs = []  # what prepare_class_call was given as input
        real = classification.prepare_class_call

        def spy(input, *args, **kwargs):
            self.inputs.append(input)
            return real(input, *args, **kwargs)

        monkeypatch.setattr(classification, "prepare_class_call", spy)
        monkeypatch.setattr(_inplace, "prepare_class_call", spy)

    @property
    def prepared(self) -> list:
        """The library of each input prepare_class_call has been given since the last call."""
        out = [type(a).__module__.split(".")[0] for a in self.inputs]
        self.inputs.clear()
        return out

    def tensors(self, x, t, w, dtype, grad=False):
        torch = self.torch
        xt = torch.from_numpy(x.astype(dtype)).requires_grad_(grad)
        tt = torch.from_numpy(t.astype(dtype) if t.dtype.kind == "f" else t)
        return xt, tt, None if w is None else torch.from_numpy(w)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("layout", ["rows", "columns", "k-dim", "axis-last-3d", "unbatched"])
    @pytest.mark.parametrize(
        "option",
        ["plain", "ignore", "weight", "smooth-weight", "everything", "probs", "probs-everything"],
    )
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_forward_and_backward_equal_numpy_call(
        self, calls, rng, dtype, layout, option, reduction
    ):
        torch = self.torch
        shape, axis = SHAPES[layout]
        data, kw = split(OPTIONS[option])
        x, t, w = make(rng, shape, axis, **data)  # float64 weight and probabilities
        kw.update(axis=axis, reduction=reduction)
        xn = x.astype(dtype)
        tn = t.astype(dtype) if data.get("probs") else t
        v_np, g_np = value_and_grad_ce(xn, tn, w, **kw)
        self.inputs.clear()

        # the common call (2-D, class indices, no weight) is validated without
        # prepare_class_call (crossentropy.kernels.quick)
        quick = option in ("plain", "ignore") and layout in ("rows", "columns")
        xt, tt, wt = self.tensors(x, t, w, dtype)
        with torch.no_grad():
            v = ce.cross_entropy(xt, tt, wt, **kw)
        if not quick:
            assert np.shares_memory(self.inputs[0], xt.numpy())
        assert self.prepared == ([] if quick else ["numpy"]) and calls["cross_entropy"] == 2
        assert isinstance(v, torch.Tensor) and v.dtype == getattr(torch, dtype)
        np.testing.assert_array_equal(v.numpy(), v_np)

        xg = xt.clone().requires_grad_(True)
        loss = ce.cross_entropy(xg, tt, wt, **kw)
        assert type(loss.grad_fn).__name__.startswith("_CrossEntropy")
        assert self.prepared == ([] if quick else ["numpy"]) and calls["cross_entropy"] == 3
        seed = torch.linspace(0.5, 2.0, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
        (loss * seed).sum().backward()
        np.testing.assert_array_equal(loss.detach().numpy(), v_np)
        s = seed.numpy()
        if reduction == "none":  # the class axis of the caller's layout
            s = np.expand_dims(s, (1 if len(shape) > 1 else 0) if axis is None else axis)
        np.testing.assert_array_equal(xg.grad.numpy(), g_np * s)
        assert xg.grad.shape == xg.shape and xg.grad.dtype == xg.dtype

        # and against PyTorch in float64 on what it can express
        if "z_loss" in kw or "softcap" in kw:
            return
        kw.pop("axis")
        x64 = torch.tensor(x if axis is None else np.moveaxis(x, axis, 1), requires_grad=True)
        t64 = torch.from_numpy(
            t if axis is None or not data.get("probs") else np.moveaxis(t, axis, 1)
        )
        w64 = None if w is None else torch.from_numpy(w)
        ref = self.F.cross_entropy(x64, t64, w64, **kw)
        (ref * seed.double()).sum().backward()
        g_ref = x64.grad.numpy() if axis is None else np.moveaxis(x64.grad.numpy(), 1, axis)
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-14}
        np.testing.assert_allclose(v.numpy(), ref.detach().numpy(), **tol)
        np.testing.assert_allclose(xg.grad.numpy(), g_ref, **tol)

    @pytest.mark.parametrize(
        "view",
        [
            lambda a: a.T.contiguous().T,  # column-major (N, C)
            lambda a: a[::2],  # every other row
            lambda a: a[:1].expand(a.shape[0], a.shape[1]),  # one row, stride 0
            lambda a: a[:, 1:-1],  # rows that do not start at the storage's start
        ],
        ids=["column-major", "row-step", "expanded", "offset"],
    )
    def test_strided_tensors_are_read_in_place(self, calls, rng, view):
        torch = self.torch
        xt = view(torch.from_numpy(rng.standard_normal((24, 40), dtype=np.float32)))
        xn = xt.numpy()  # the same memory and strides
        t = rng.integers(0, xt.shape[1], xt.shape[0])
        t[1] = -100
        w = rng.random(xt.shape[1]) + 0.1
        v_np, g_np = value_and_grad_ce(xn, t, w, label_smoothing=0.1)
        self.inputs.clear()
        xg = xt.detach().requires_grad_(True)
        loss = ce.cross_entropy(xg, torch.from_numpy(t), torch.from_numpy(w), label_smoothing=0.1)
        loss.backward()
        (seen,) = self.inputs
        assert np.shares_memory(seen, xn) and seen.strides == xn.strides
        assert self.prepared == ["numpy"] and calls["cross_entropy"] == 2
        np.testing.assert_array_equal(loss.detach().numpy(), v_np)
        np.testing.assert_array_equal(xg.grad.numpy(), g_np)
        ref = self.F.cross_entropy(
            torch.from_numpy(xn.astype(np.float64)), torch.from_numpy(t), torch.from_numpy(w),
            label_smoothing=0.1,
        )  # fmt: skip
        np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)

    def test_value_and_grad_with_respect_to_probabilities(self, calls, rng):
        torch = self.torch
        x, p, w = make(rng, (6, 40), probs=True, weighted=True)
        (v, g), (v_ref, g_ref) = both(
            calls, ce.value_and_grad(ce.cross_entropy, argnums=(0, 1)), torch.from_numpy(x),
            torch.from_numpy(p), torch.from_numpy(w), label_smoothing=0.1,
        )  # fmt: skip
        assert self.prepared == ["numpy", "torch"]  # the second inside kernels.disabled()
        assert all(isinstance(a, torch.Tensor) and a.dtype == torch.float64 for a in (v, *g))
        v_np, g_np = ce.value_and_grad(ce.cross_entropy, argnums=(0, 1))(
            x, p, w, label_smoothing=0.1
        )
        np.testing.assert_array_equal(v.numpy(), v_np)
        close(v.numpy(), v_ref.numpy(), "float64")
        for a, b, r in zip(g, g_np, g_ref):
            np.testing.assert_array_equal(a.numpy(), b)
            close(a.numpy(), r.numpy(), "float64", scale=np.abs(r.numpy()).max())

    def test_mixed_dtypes_and_numpy_arguments(self, calls, rng):
        torch = self.torch
        x, t, w = make(rng, (10, 30), ignore=True, weighted=True)
        x32 = x.astype(np.float32)
        for tn, wn in [
            (t.astype(np.int32), w.astype(np.float16)),
            (t.astype(np.int16), w),
            (t.astype(np.uint8) % 30, w.astype(np.float32)),
        ]:
            expected = ce.cross_entropy(x32, tn, wn)  # NumPy: the weight cast to float32
            self.inputs.clear()
            for tt, wt in [(torch.from_numpy(tn), torch.from_numpy(wn)), (tn, wn)]:
                v = ce.cross_entropy(torch.from_numpy(x32), tt, wt)
                assert isinstance(v, torch.Tensor) and v.dtype == torch.float32
                np.testing.assert_array_equal(v.numpy(), expected)
            assert self.prepared == ["numpy", "numpy"]
        np.testing.assert_allclose(
            v.numpy(), torch_oracle("cross_entropy", x32, tn, w.astype(np.float32)), rtol=1e-5
        )
        # a float64 probability target for float32 logits is rounded once, as in NumPy
        _, p, _ = make(rng, (10, 30), probs=True)
        v = ce.cross_entropy(torch.from_numpy(x32), torch.from_numpy(p))
        np.testing.assert_array_equal(v.numpy(), ce.cross_entropy(x32, p))

    def test_bad_input_raises_as_for_tensors(self, calls):
        torch = self.torch
        x = torch.zeros(4, 5)
        cases = [
            (torch.tensor([0, 1, 7, -1]), None, {}, ce.TargetIndexError,
             r"^Target 7 is out of bounds: class indices must lie in \[0, 4\] for C=5 classes "
             r"or equal ignore_index=-100 \(2 bad values\)$"),
            (torch.tensor([0, 1, -100, 3]), None, {"ignore_index": None}, ce.TargetIndexError,
             r"^Target -100 is out of bounds: .* for C=5 classes \(1 bad value\)$"),
            (torch.tensor([0, 1, 2]), None, {}, ValueError,
             r"Expected input batch size \(4\) to match target batch size \(3\)"),
            (torch.tensor([0, 1, 2, 3]), torch.ones(4), {}, ValueError,
             r"weight must be a 1-D array of length 5 .*got shape \(4,\)"),
            (torch.tensor([0, 1, 2, 3]), None, {"reduction": "avg"}, ValueError, "got 'avg'"),
            (torch.tensor([0, 1, 2, 3]), None, {"label_smoothing": 2}, ValueError,
             r"label_smoothing must be in \[0.0, 1.0\], got 2"),
            # dtype errors name PyTorch's dtypes: those calls are prepared as tensors
            (torch.zeros(4), None, {}, ce.DTypeError, "got dtype torch.float32 with shape"),
            (torch.tensor([0, 1, 2, 3]) > 1, None, {}, ce.DTypeError, "got dtype torch.bool"),
            (torch.tensor([0, 1, 2, 3]), torch.ones(5, dtype=torch.int64), {}, ce.DTypeError,
             "weight must have a floating-point dtype .*got torch.int64"),
        ]  # fmt: skip
        for t, w, kw, error, message in cases:
            with pytest.raises(error, match=message):
                ce.cross_entropy(x, t, w, **kw)
        assert calls["cross_entropy"] == 0
        with pytest.raises(ce.DTypeError, match="got torch.int64"):
            ce.cross_entropy(torch.zeros(4, 5, dtype=torch.int64), torch.tensor([0, 1, 2, 3]))
        with pytest.raises(ValueError, match="differentiable with respect to target only"):
            ce.value_and_grad(ce.cross_entropy, argnums=1)(x, torch.tensor([0, 1, 2, 3]))

    def test_probabilities_as_logits_warn_once(self, calls, rng):
        torch = self.torch
        x = torch.softmax(torch.from_numpy(rng.standard_normal((2, 5, 6, 8))), 1)
        t = torch.from_numpy(rng.integers(0, 5, (2, 6, 8)))
        for xs, ts, kernel in [(x, t, 1), (x[:, :, ::2, ::3], t[:, ::2, ::3], 0)]:
            # the second layout does not fold into the kernel's rows: the reference
            # path takes the tensors, validated once, without a second warning
            before = calls["cross_entropy"]
            with pytest.warns(ce.ProbabilitiesAsLogitsWarning) as record:
                v = ce.cross_entropy(xs, ts)
            assert len(record) == 1
            assert calls["cross_entropy"] == before + kernel
            ref = self.F.cross_entropy(xs, ts)
            close(v.numpy(), ref.numpy(), "float64")
            assert isinstance(v, torch.Tensor)
        assert self.prepared == ["numpy", "numpy"]

    def test_what_autograd_must_see_is_prepared_as_tensors(self, calls, rng):
        torch = self.torch
        x, p, w = make(rng, (8, 40), probs=True, weighted=True)
        xt = torch.tensor(x, requires_grad=True)
        pt, wt = torch.tensor(p, requires_grad=True), torch.tensor(w, requires_grad=True)
        ce.cross_entropy(xt, pt, wt).backward()
        x64, p64, w64 = (torch.tensor(a, requires_grad=True) for a in (x, p, w))
        self.F.cross_entropy(x64, p64, w64).backward()
        for a, b in [(xt, x64), (pt, p64), (wt, w64)]:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-12, atol=1e-15)
        assert self.prepared == ["torch"] and calls["cross_entropy"] == 0
        with torch.no_grad():  # nothing to record: the views again
            v = ce.cross_entropy(xt, pt, wt)
        assert self.prepared == ["numpy"] and calls["cross_entropy"] == 1
        np.testing.assert_array_equal(v.numpy(), ce.cross_entropy(x, p, w))
        self.inputs.clear()
        # float16 logits are computed in float32 by the tensor path
        ce.cross_entropy(xt.detach().half(), torch.from_numpy(rng.integers(0, 40, 8)))
        assert self.prepared == ["torch"] and calls["cross_entropy"] == 3

    def test_backward_twice_and_in_place_change(self, calls, rng):
        torch = self.torch
        x, t, _ = make(rng, (3, 6, 5, 4), ignore=True)
        xt = torch.tensor(x, requires_grad=True)
        loss = ce.cross_entropy(xt, torch.from_numpy(t), reduction="none")
        assert self.prepared == ["numpy"]
        seed = torch.from_numpy(rng.random(loss.shape))
        loss.backward(seed, retain_graph=True)
        first = xt.grad.clone()
        loss.backward(2 * seed)  # the second backward computes the gradient again
        np.testing.assert_allclose(xt.grad.numpy(), 3 * first.numpy(), rtol=1e-14)
        g_np = ce.grad(ce.cross_entropy)(x, t, reduction="none")
        np.testing.assert_array_equal(first.numpy(), g_np * seed.numpy()[:, None])
        loss = ce.cross_entropy(xt, torch.from_numpy(t), reduction="sum")
        loss.backward(retain_graph=True)
        with torch.no_grad():
            xt.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()

    def test_buffers_through_views(self, calls, rng):
        torch = self.torch
        x, t, w = make(rng, (3, 6, 5, 4), weighted=True, ignore=True, dtype="float32")
        kw = {"label_smoothing": 0.1, "z_loss": 0.01}
        v_np, g_np = value_and_grad_ce(x, t, w, **kw)
        self.inputs.clear()
        out = torch.full(x.shape, float("nan"))
        args = (torch.from_numpy(t), torch.from_numpy(w))
        v, g = kernels.cross_entropy_value_and_grad(torch.from_numpy(x), *args, out=out, **kw)
        assert g is out and isinstance(v, torch.Tensor) and v.dtype == torch.float32
        np.testing.assert_array_equal(v.numpy(), v_np)
        np.testing.assert_array_equal(out.numpy(), g_np)
        y = torch.tensor(x, requires_grad=True)
        v, g = kernels.cross_entropy_value_and_grad(y, *args, overwrite_input=True, **kw)
        assert g.data_ptr() == y.data_ptr() and not v.requires_grad
        np.testing.assert_array_equal(v.numpy(), v_np)
        np.testing.assert_array_equal(y.detach().numpy(), g_np)
        assert self.prepared == ["numpy", "numpy"] and calls["cross_entropy"] == 3


def test_probability_target_of_the_compute_dtype_is_not_copied(rng):
    from crossentropy._core.prepared import prepare_class_call

    def _prepare(x, p):
        return prepare_class_call(x, p, reduction="mean", ignore_index=-100, probabilities=True)

    x, p, _ = make(rng, (4, 6, 5), probs=True)
    b = _prepare(x, p)
    assert np.shares_memory(b.target, p)  # a view: class axis moved last
    np.testing.assert_array_equal(b.target, np.moveaxis(p, 1, -1))
    b = _prepare(x.astype(np.float32), p)
    assert b.target.dtype == np.float32 and not np.shares_memory(b.target, p)
    np.testing.assert_array_equal(b.target, np.moveaxis(p, 1, -1).astype(np.float32))


# -- out= and overwrite_input ---------------------------------------------------------


class TestBuffers:
    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("layout", ["rows", "columns", "k-dim"])
    def test_out_and_overwrite_input(self, calls, rng, dtype, layout):
        shape, axis = SHAPES[layout]
        x, t, w = make(rng, shape, axis, dtype=dtype, weighted=True, ignore=True)
        kw = {"label_smoothing": 0.1, "z_loss": 0.01, "softcap": 4.0, "axis": axis}
        v_ref, g_ref = value_and_grad_ce(x, t, w, **kw)
        out = np.full_like(x, np.nan)
        v, g = kernels.cross_entropy_value_and_grad(x, t, w, out=out, **kw)
        assert g is out
        np.testing.assert_array_equal(v, v_ref)
        np.testing.assert_array_equal(out, g_ref)
        before = calls["cross_entropy"]
        y = x.copy()
        v, g = kernels.cross_entropy_value_and_grad(y, t, w, overwrite_input=True, **kw)
        assert calls["cross_entropy"] == before + 1
        assert g is y
        np.testing.assert_array_equal(v, v_ref)
        np.testing.assert_array_equal(y, g_ref)

    def test_overwrite_torch_tensor(self, rng):
        torch = pytest.importorskip("torch")
        x, t, _ = make(rng, (6, 50))
        v_ref, g_ref = value_and_grad_ce(x, t)
        xt = torch.tensor(x)
        v, g = kernels.cross_entropy_value_and_grad(xt, torch.from_numpy(t), overwrite_input=True)
        assert g.data_ptr() == xt.data_ptr()
        np.testing.assert_array_equal(xt.numpy(), g_ref)
        close(v.numpy(), v_ref, "float64")  # torch.sum and np.sum add in different orders

    def test_out_falls_back_when_disabled(self, rng):
        x, t, _ = make(rng, (6, 50))
        v_ref, g_ref = value_and_grad_ce(x, t)
        out = np.empty_like(x)
        with kernels.disabled():
            v, g = kernels.cross_entropy_value_and_grad(x, t, out=out)
        assert g is out
        close(v, v_ref, "float64")
        close(out, g_ref, "float64", scale=1.0)

    def test_bad_buffers_raise(self, rng):
        x, t, _ = make(rng, (6, 50))
        with pytest.raises(ValueError, match=r"out must have input's shape \(6, 50\)"):
            kernels.cross_entropy_value_and_grad(x, t, out=np.empty((6, 49)))
        with pytest.raises(ValueError, match="dtype float64"):
            kernels.cross_entropy_value_and_grad(x, t, out=np.empty((6, 50), np.float32))
        with pytest.raises(ValueError, match="either out= or overwrite_input=True"):
            kernels.cross_entropy_value_and_grad(x, t, out=np.empty_like(x), overwrite_input=True)
        frozen = x.copy()
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            kernels.cross_entropy_value_and_grad(frozen, t, overwrite_input=True)


# -- memory -------------------------------------------------------------------------


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del result
    return peak


class TestMemory:
    """NumPy reports its allocations to tracemalloc: the peak is exact."""

    @pytest.mark.parametrize("shape", [(512, 2000), (4096, 10), (8192, 3), (8, 40, 300)])
    @pytest.mark.parametrize("option", ["plain", "weight", "smooth-weight"])
    def test_peak_extra_memory(self, rng, shape, option):
        """The gradient is the only logits-sized allocation: the kernel reads the
        caller's class indices, and a reduced loss of the columns kernel comes
        back as one sum per 32 rows.  The rest is the validation's temporary
        masks (a few bytes a row, freed before the gradient is allocated), plus
        the forward's look at 16 rows for probabilities passed as logits."""
        data, kw = split(OPTIONS[option])
        x, t, w = make(rng, shape, dtype="float32", **data)
        value_and_grad_ce(x[:2], t[:2], w, **kw)  # first calls import modules: not measured
        nbytes, per_row, t32 = x.nbytes, 8 * t.size, t.astype(np.int32)
        assert _peak(lambda: value_and_grad_ce(x, t, w, **kw)) <= 1.05 * nbytes + 4096
        assert _peak(lambda: value_and_grad_ce(x, t32, w, **kw)) <= 1.05 * nbytes + 4096
        assert _peak(lambda: ce.cross_entropy(x, t, w, **kw)) <= per_row + 16 * 8 * shape[1]
        assert (  # per-row temporaries, a copy of the class weights, Python objects
            _peak(lambda: kernels.cross_entropy_value_and_grad(x, t, w, overwrite_input=True, **kw))
            <= per_row + 8 * shape[1] + 8192
        )
        # 'none' returns the per-row losses: one value per row more
        loss_bytes = 4 * t.size
        assert _peak(lambda: value_and_grad_ce(x, t, w, reduction="none", **kw)) <= (
            1.05 * nbytes + loss_bytes + 4096
        )
        with kernels.disabled():  # what the kernel saves: the reference holds several copies
            assert _peak(lambda: value_and_grad_ce(x, t, w, **kw)) >= 2 * nbytes


# -- softmax family -------------------------------------------------------------------


class TestSoftmaxFamily:
    @pytest.fixture(autouse=True)
    def _small(self, monkeypatch):
        monkeypatch.setattr(softmax, "MIN_SIZE", 0)

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("shape", [(30, 7), (4, 3, 200), (2, 5000), (100,)])
    def test_match_reference_and_truth(self, calls, rng, dtype, shape):
        x = (rng.standard_normal(shape) * 5).astype(dtype)
        x.reshape(-1, shape[-1])[0, 2] = np.inf
        if x.ndim > 1:
            x.reshape(-1, shape[-1])[1] = -np.inf
        eps = np.finfo(dtype).eps
        xl = x.astype(np.longdouble)
        with np.errstate(all="ignore"):  # the rows of -inf and +inf
            m = np.max(xl, axis=-1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0)
            lse = np.log(np.exp(xl - m).sum(axis=-1, keepdims=True)) + m
            truths = [np.exp(xl - lse), xl - lse, lse[..., 0]]
        for fn, kind, truth in zip(
            (ce.softmax, ce.log_softmax, ce.logsumexp),
            ("softmax", "log_softmax", "logsumexp"),
            truths,
        ):
            out, ref = both(calls, fn, x, entry="softmax")
            assert out.dtype == ref.dtype and out.shape == ref.shape
            np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
            ok = np.isfinite(ref)
            np.testing.assert_array_equal(out[~ok], ref[~ok])
            # both paths round z = x - max once: errors of order eps * |x|
            atol = 8 * eps * np.abs(x[np.isfinite(x)]).max()
            np.testing.assert_allclose(out[ok], ref[ok], rtol=8 * eps, atol=atol, err_msg=kind)
            np.testing.assert_allclose(out[ok], truth[ok].astype(float), rtol=8 * eps, atol=atol)

    def test_logsumexp_gradient_and_keepdims(self, calls, rng):
        x = rng.standard_normal((20, 40))
        (v, g), (v_ref, g_ref) = both(calls, ce.value_and_grad(ce.logsumexp), x, entry="softmax")
        close(v, v_ref, "float64")
        close(g, g_ref, "float64", scale=1.0)
        k, k_ref = both(calls, ce.logsumexp, x, keepdims=True, entry="softmax")
        assert k.shape == (20, 1)
        close(k, k_ref, "float64")

    def test_other_axes_and_libraries_fall_through(self, calls, rng):
        x = rng.standard_normal((20, 40))
        ce.softmax(x, axis=0)
        ce.logsumexp(x, axis=(0, 1))
        ce.log_softmax(x.astype(np.float16))
        assert calls["softmax"] == 0

    def test_torch_tensor_without_grad(self, calls, rng):
        torch = pytest.importorskip("torch")
        x = torch.tensor(rng.standard_normal((10, 300)))
        out, ref = both(calls, ce.log_softmax, x, entry="softmax")
        assert isinstance(out, torch.Tensor)
        close(out.numpy(), ref.numpy(), "float64", scale=10)
        ce.softmax(x.clone().requires_grad_(True))  # autograd needs the portable path
        assert calls["softmax"] == 1


# -- switches ---------------------------------------------------------------------------


class TestSwitches:
    def test_environment_variable_disables(self, calls, rng, monkeypatch):
        x, t, _ = make(rng, (4, 50))
        monkeypatch.setenv("CROSSENTROPY_DISABLE_KERNELS", "1")
        assert not kernels.enabled()
        ce.cross_entropy(x, t)
        assert calls["cross_entropy"] == 0
        monkeypatch.setenv("CROSSENTROPY_DISABLE_KERNELS", "0")
        ce.cross_entropy(x, t)
        assert calls["cross_entropy"] == 1

    def test_disabled_context_nests_and_restores(self):
        assert kernels.enabled()
        with kernels.disabled():
            with kernels.disabled():
                assert not kernels.enabled()
            assert not kernels.enabled()
        assert kernels.enabled()

    def test_other_libraries_fall_through(self, calls, xp, rng):
        x, t, _ = make(rng, (6, 40))
        v = ce.cross_entropy(xp.asarray(x), xp.asarray(t))
        expected_calls = 1 if xp.name in ("numpy", "torch") else 0
        assert calls["cross_entropy"] == expected_calls
        assert xp.owns(v)
        np.testing.assert_allclose(xp.to_numpy(v), torch_oracle("cross_entropy", x, t), rtol=1e-12)

    def test_threads_setting(self, monkeypatch):
        monkeypatch.setenv("CROSSENTROPY_NUM_THREADS", "3")
        assert kernels.get_num_threads() == 3
        kernels.set_num_threads(5)
        try:
            assert kernels.get_num_threads() == 5
        finally:
            kernels.set_num_threads(None)
        assert kernels.get_num_threads() == 3
        with pytest.raises(ValueError, match=r"number of threads must be in \[1, 65536\], got 0"):
            kernels.set_num_threads(0)

    def test_info(self):
        info = kernels.info()
        assert info["available"] is True and info["cpus"] >= 1 and info["threads"] >= 1
        assert isinstance(info["isa"], str)


def test_empty_batch_takes_reference_path(calls):
    v, g = value_and_grad_ce(np.zeros((0, 5)), np.zeros(0, dtype=np.int64))
    assert calls["cross_entropy"] == 0
    assert np.isnan(v) and g.shape == (0, 5)
