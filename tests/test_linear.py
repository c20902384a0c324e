"""``linear_cross_entropy`` against the naive PyTorch float64 computation.

The oracle is ``F.cross_entropy(h @ W.T + b, t, ...)`` in float64 with torch
autograd for the gradients (plus the explicit z-loss and soft-capping terms,
which PyTorch does not have), and PyTorch's own ``F.linear_cross_entropy``
where it has the option.  Gradients are also checked against central finite
differences, and the memory bound with ``tracemalloc``.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crossentropy as ce
from crossentropy.linear import default_chunk_size, linear_cross_entropy
from tests.support import assert_close, finite_difference, torch_oracle

torch = pytest.importorskip("torch")
F = torch.nn.functional

REDUCTIONS = ["none", "mean", "sum"]
WRT = (0, 1, "linear_bias")
# (N, V, D) with chunk sizes that divide nothing evenly
UNEVEN = (252, 507, 123)
OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param({"weight": True}, id="weight"),
    pytest.param({"label_smoothing": 0.15}, id="smooth"),
    pytest.param({"label_smoothing": 0.15, "weight": True}, id="smooth-weight"),
    pytest.param({"z_loss": 0.02}, id="zloss"),
    pytest.param({"softcap": 3.0}, id="softcap"),
    pytest.param(
        {"softcap": 2.5, "z_loss": 0.01, "label_smoothing": 0.1, "weight": True}, id="all"
    ),
]


# -- inputs and oracle --------------------------------------------------------------


def _problem(rng, n, v, d, *, ignored=True, bias=True, scale=1.0):
    h = rng.normal(size=(n, d))
    w = rng.normal(scale=scale / np.sqrt(d), size=(v, d)) * 2
    b = rng.normal(size=v) if bias else None
    t = rng.integers(0, v, size=n)
    if ignored and n > 3:
        t[1::7] = -100
    return h, w, t, b


def _naive(h, w, t, b=None, *, weight=None, reduction="mean", ignore_index=-100,
           label_smoothing=0.0, z_loss=0.0, softcap=None, temperature=1.0):  # fmt: skip
    """Value and gradients (of the value's sum) of the naive float64 computation:
    ``[d input, d linear_weight, d linear_bias, d target]`` (``None`` where absent;
    the target's only for probabilities)."""
    th = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    tb = None if b is None else torch.tensor(b, dtype=torch.float64, requires_grad=True)
    probs = np.asarray(t).dtype.kind == "f"
    if probs:
        tt = torch.tensor(np.asarray(t), dtype=torch.float64, requires_grad=True)
    else:
        tt = torch.as_tensor(np.asarray(t), dtype=torch.int64)
    cw = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    y = th @ tw.T + (0 if tb is None else tb)
    if softcap is not None:
        y = softcap * torch.tanh(y / softcap)
    y = y / temperature
    kw = {"ignore_index": ignore_index, "label_smoothing": label_smoothing, "weight": cw}
    if probs:
        rows = F.cross_entropy(y.reshape(-1, w.shape[0]), tt.reshape(-1, w.shape[0]),
                               reduction="none", label_smoothing=label_smoothing, weight=cw)
        rows = (rows + z_loss * torch.logsumexp(y, -1).reshape(-1) ** 2).reshape(y.shape[:-1])
        value = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / rows.numel()}[reduction]
    elif z_loss:
        rows = F.cross_entropy(y, tt, reduction="none", **kw)
        counted = tt != ignore_index
        rows = rows + z_loss * torch.logsumexp(y, -1) ** 2 * counted
        wt = counted.to(y.dtype) if cw is None else cw[tt.clamp(min=0)] * counted
        value = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / wt.sum()}[reduction]
    else:
        value = F.cross_entropy(
            y.reshape(-1, w.shape[0]), tt.reshape(-1), reduction=reduction, **kw
        )
        value = value.reshape(tt.shape) if reduction == "none" else value
    value.sum().backward()
    grads = [th.grad.numpy(), tw.grad.numpy(), None if tb is None else tb.grad.numpy()]
    grads.append(tt.grad.numpy() if probs else None)
    return value.detach().numpy(), grads


def _kwargs(rng, v, options):
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = rng.uniform(0.5, 2.0, size=v)
    return kw


# -- values and gradients -----------------------------------------------------------


class TestLinearCrossEntropy:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", OPTIONS)
    def test_matches_naive_torch_float64(self, rng, options, reduction):
        n, v, d = UNEVEN
        h, w, t, b = _problem(rng, n, v, d)
        kw = _kwargs(rng, v, options)
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, reduction=reduction, chunk_size=(37, 100), **kw
        )
        expected, expected_grads = _naive(h, w, t, b, reduction=reduction, **kw)
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_every_backend(self, xp, rng, reduction):
        # even chunks: JAX compiles each new shape, so few shapes keep this fast
        h, w, t, b = _problem(rng, 14, 18, 5)
        cw = rng.uniform(0.5, 2.0, size=18)
        kw = {"reduction": reduction, "label_smoothing": 0.1, "z_loss": 0.01, "softcap": 4.0}
        args = [xp.asarray(a) for a in (h, w, t)]
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            *args, linear_bias=xp.asarray(b), weight=xp.asarray(cw), chunk_size=(7, 9), **kw
        )
        expected, expected_grads = _naive(h, w, t, b, weight=cw, **kw)
        assert_close(value, expected, backend=xp, dtype="float64")
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, backend=xp, dtype="float64")
        plain = linear_cross_entropy(*args, linear_bias=xp.asarray(b), weight=xp.asarray(cw), **kw)
        assert_close(plain, expected, backend=xp, dtype="float64")

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    def test_matches_torch_linear_cross_entropy(self, rng, reduction, weighted):
        n, v, d = UNEVEN
        h, w, t, b = _problem(rng, n, v, d)
        cw = rng.uniform(0.5, 2.0, size=v) if weighted else None
        expected = torch_oracle(
            "linear_cross_entropy", h, w, t, linear_bias=b, weight=cw, reduction=reduction,
            ignore_index=-100,
        )  # fmt: skip
        got = linear_cross_entropy(h, w, t, linear_bias=b, weight=cw, reduction=reduction)
        assert_close(got, expected)

    def test_float32_within_1e_5(self, rng):
        h, w, t, b = _problem(rng, 96, 300, 40)
        f32 = [a.astype(np.float32) for a in (h, w, b)]
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            f32[0], f32[1], t, linear_bias=f32[2], label_smoothing=0.1, z_loss=1e-3
        )
        expected, expected_grads = _naive(*f32[:2], t, f32[2], label_smoothing=0.1, z_loss=1e-3)
        assert value.dtype == np.float32
        assert_close(value, expected, rtol=1e-5, atol=0)
        for g, e, a in zip(grads, expected_grads, f32):
            assert g.dtype == np.float32
            assert_close(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())
            assert g.shape == a.shape

    @pytest.mark.parametrize("chunk_size", [None, 1, (1, 1), (5, 3), (64, 17), (1000, 1000)])
    def test_chunk_size_does_not_change_result(self, rng, chunk_size):
        h, w, t, b = _problem(rng, 29, 41, 7)
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, label_smoothing=0.2, chunk_size=chunk_size
        )
        expected, expected_grads = _naive(h, w, t, b, label_smoothing=0.2)
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e)

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_k_dim_input(self, rng, reduction):
        h = rng.normal(size=(2, 3, 4, 6))
        w = rng.normal(size=(9, 6))
        t = rng.integers(0, 9, size=(2, 3, 4))
        t[0, 1, 2] = -100
        value, (dh, dw) = ce.value_and_grad(linear_cross_entropy, (0, 1))(
            h, w, t, reduction=reduction, chunk_size=5
        )
        expected, (eh, ew, *_) = _naive(h, w, t, reduction=reduction)
        assert_close(value, expected)
        assert_close(dh, eh)
        assert_close(dw, ew)

    def test_unbatched(self, rng):
        h, w = rng.normal(size=6), rng.normal(size=(9, 6))
        value, dh = ce.value_and_grad(linear_cross_entropy)(h, w, np.array(4), reduction="none")
        expected, (eh, *_) = _naive(h[None], w, np.array([4]), reduction="none")
        assert value.shape == ()
        assert_close(value, expected[0])
        assert_close(dh, eh[0])

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    def test_all_ignored(self, rng, reduction):
        h, w, _, b = _problem(rng, 6, 8, 3)
        t = np.full(6, -100)
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, reduction=reduction
        )
        expected, expected_grads = _naive(h, w, t, b, reduction=reduction)
        if reduction == "mean":
            assert np.isnan(value) and np.isnan(expected)
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e)
            assert not np.any(g)

    def test_custom_ignore_index(self, rng):
        h, w, t, b = _problem(rng, 20, 10, 4, ignored=False)
        t[::3] = 3
        got = linear_cross_entropy(h, w, t, linear_bias=b, ignore_index=3, chunk_size=4)
        expected, _ = _naive(h, w, t, b, ignore_index=3)
        assert_close(got, expected)

    @pytest.mark.parametrize("offset", [1e4, -1e4, 300.0])
    @pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[3], OPTIONS[4]])
    def test_logits_beyond_exp_range(self, rng, offset, options):
        # exp overflows (or underflows to 0) on these logits: the chunks are
        # redone with the running-max shift, and stay exact
        h, w, t, b = _problem(rng, 10, 12, 3, ignored=False)
        b = b + offset
        kw = _kwargs(rng, 12, options)
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, chunk_size=(3, 5), **kw
        )
        expected, expected_grads = _naive(h, w, t, b, **kw)
        assert np.isfinite(value)
        assert_close(value, expected, rtol=1e-9 if abs(offset) < 1e3 else 1e-12)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, rtol=1e-9, atol=1e-11)

    def test_float32_logits_beyond_exp_range(self, rng):
        h, w, t, b = _problem(rng, 10, 12, 3, ignored=False)
        b = b + 120.0  # exp(120) overflows float32, not float64
        f32 = [a.astype(np.float32) for a in (h, w, b)]
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            f32[0], f32[1], t, linear_bias=f32[2], chunk_size=(3, 5)
        )
        expected, expected_grads = _naive(*f32[:2], t, f32[2])
        assert_close(value, expected, rtol=1e-5)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, rtol=1e-4, atol=1e-6)

    @pytest.mark.parametrize("options", OPTIONS[:1] + OPTIONS[-1:])
    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_gradient_finite_differences(self, rng, options, reduction):
        h, w, t, b = _problem(rng, 5, 6, 3)
        kw = _kwargs(rng, 6, options) | {"reduction": reduction, "chunk_size": (2, 4)}
        _, grads = ce.value_and_grad(linear_cross_entropy, WRT)(h, w, t, linear_bias=b, **kw)
        fd = [
            finite_difference(lambda x: linear_cross_entropy(x, w, t, linear_bias=b, **kw), h),
            finite_difference(lambda x: linear_cross_entropy(h, x, t, linear_bias=b, **kw), w),
            finite_difference(lambda x: linear_cross_entropy(h, w, t, linear_bias=x, **kw), b),
        ]
        for g, e in zip(grads, fd):
            assert_close(g, e, rtol=1e-6, atol=1e-8)

    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_blas_accumulation_and_matmul_fallback_agree(self, rng, monkeypatch, dtype):
        from crossentropy.kernels import blas

        h, w, t, b = (
            a.astype(dtype) if a.dtype.kind == "f" else a for a in _problem(rng, 40, 50, 7)
        )
        if np.dtype(dtype) not in blas.cblas():
            pytest.skip("this NumPy has no bundled OpenBLAS: matmul + add only")
        kw = {"linear_bias": b, "chunk_size": (16, 20), "softcap": 5.0}
        fast = ce.value_and_grad(linear_cross_entropy, WRT)(h, w, t, **kw)
        monkeypatch.setattr(blas, "cblas", lambda: {})
        slow = ce.value_and_grad(linear_cross_entropy, WRT)(h, w, t, **kw)
        tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-6}
        assert_close(fast[0], slow[0], **tol)
        for g, e in zip(fast[1], slow[1]):
            assert g.dtype == np.dtype(dtype)
            assert_close(g, e, **tol)
        expected, expected_grads = _naive(h, w, t, b, softcap=5.0)
        assert_close(slow[0], expected, rtol=1e-5 if dtype == "float32" else 1e-9)

    def test_argnums_by_name_and_single(self, rng):
        h, w, t, b = _problem(rng, 7, 5, 3)
        _, (eh, ew, eb, _) = _naive(h, w, t, b)
        _, db = ce.value_and_grad(linear_cross_entropy, "linear_bias")(h, w, t, linear_bias=b)
        assert_close(db, eb)
        dw = ce.grad(linear_cross_entropy, "linear_weight")(h, w, t, linear_bias=b)
        assert_close(dw, ew)
        _, (dh,) = ce.value_and_grad(linear_cross_entropy, (0,))(h, w, t, linear_bias=b)
        assert_close(dh, eh)

    def test_gradient_filter(self, rng):
        n, v, d = 16, 24, 4
        h, w, t, b = _problem(rng, n, v, d, ignored=False)
        t = t % 8
        b[8:] = -80.0  # softmax ~ e^-80 on the last two blocks of 8 columns
        exact = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, chunk_size=(5, 8)
        )
        value, (dh, dw, db) = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, chunk_size=(5, 8), filter_eps=1e-20
        )
        assert value == exact[0]  # the loss never changes
        assert not np.any(dw[8:]) and not np.any(db[8:])  # skipped blocks
        assert np.all(np.abs(exact[1][1][8:]) > 0)
        assert_close(dw[:8], exact[1][1][:8])
        assert_close(dh, exact[1][0])  # what was skipped is below 1e-30
        none = ce.value_and_grad(linear_cross_entropy, WRT)(h, w, t, linear_bias=b, filter_eps=0)
        assert_close(none[1][1], exact[1][1])


class TestNumpyFastPaths:
    """The NumPy path's fused exp-and-sum kernel, its row scale applied after the
    gradient products (``_fold_offsets``) and its one-GEMM input gradient
    (``_whole_chunk``), each against the path it replaces."""

    @staticmethod
    def _spy(monkeypatch, name="_fold_offsets"):
        """The list of whether each call of ``linear._softmax.<name>`` returned something."""
        from crossentropy.linear import _softmax as lin

        taken = []
        original = getattr(lin, name)

        def spy(*args):
            result = original(*args)
            taken.append(result is not None)
            return result

        monkeypatch.setattr(lin, name, spy)
        return taken

    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    @pytest.mark.parametrize("shape", [(300, 250), (1100, 3840)], ids=["1-thread", "2-threads"])
    def test_exp_sum_kernel_matches_numpy(self, rng, dtype, shape):
        from crossentropy.kernels import native

        if not native.enabled():
            pytest.skip("compiled kernels not built or disabled")
        rows, cols = shape  # 2**22 entries and more: threads split the columns
        top = 88.0 if dtype == "float32" else 709.0
        base = rng.uniform(-120, top - 7, size=(rows, cols + 10)).astype(dtype)
        base[:, :40] = rng.normal(size=(rows, 40))
        base[0, :4] = [np.inf, -np.inf, top + 2, -1e4]  # exp overflows in column 2
        block = base.copy()[:, :cols]  # rows cols + 10 apart: a view, as the logits blocks
        sums = np.full(cols, 0.5, dtype=dtype)
        assert native.exp_sum(block, sums)
        with np.errstate(over="ignore"):
            expected = np.exp(base[:, :cols])
        expected_sums = 0.5 + expected[:, 3:].astype(np.float64).sum(axis=0)
        rtol = 3e-7 if dtype == "float32" else 1e-15
        # one unit in the last place, subnormal results included
        tiny = np.finfo(dtype).smallest_subnormal
        np.testing.assert_allclose(block, expected, rtol=rtol, atol=tiny)
        assert block[0, 0] == np.inf and block[0, 1] == 0 and block[0, 2] == np.inf
        assert sums[0] == np.inf and sums[2] == np.inf
        # partial sums in the input precision over at most 512 rows, then in double
        sum_rtol = min(rows, 512) * np.finfo(dtype).eps
        np.testing.assert_allclose(sums[3:], expected_sums, rtol=sum_rtol, atol=0)

    def test_exp_sum_kernel_declines_other_layouts(self, rng):
        from crossentropy.kernels import native

        a = rng.normal(size=(6, 8))
        for block, sums in [
            (a[:, ::2], np.zeros(4)),  # strided columns
            (a.astype(np.float16), np.zeros(8, np.float16)),
            (a, np.zeros(8, np.float32)),  # mixed dtypes
            (a, np.zeros(7)),
            (a.T.copy().T, np.zeros(8)),  # column-major
        ]:
            before = block.copy()
            assert not native.exp_sum(block, sums)
            np.testing.assert_array_equal(block, before)
        with ce.kernels.disabled():
            assert not native.exp_sum(a.copy(), np.zeros(8))

    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({}, id="plain"),
            pytest.param({"weight": True, "z_loss": 0.02}, id="weight-zloss"),
            pytest.param({"zero_weight": True}, id="zero-weight"),
        ],
    )
    def test_folded_scale_matches_scaled_blocks(self, rng, monkeypatch, reduction, options):
        from crossentropy.kernels import blas
        from crossentropy.linear import _arrayops

        h, w, t, b = _problem(rng, 300, 507, 16)
        kw = _kwargs(rng, 507, {k: v for k, v in options.items() if k != "zero_weight"})
        if options.get("zero_weight"):
            kw["weight"] = rng.uniform(0.5, 2.0, size=507)
            kw["weight"][t[t >= 0][::3]] = 0.0  # rows whose gradient is zero, not 0 / 0
        kw["reduction"] = reduction
        call = {"linear_bias": b, "chunk_size": (100, 250)} | kw  # 3 chunks, 3 blocks
        expected, expected_grads = _naive(h, w, t, b, **kw)
        folded = self._spy(monkeypatch)
        whole = self._spy(monkeypatch, "_whole_chunk")

        def check(folds, wholes):
            value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(h, w, t, **call)
            assert folded[-3:] == [folds] * 3 and whole[-3:] == [wholes] * 3
            assert_close(value, expected)
            for g, e in zip(grads, expected_grads):
                assert_close(g, e)

        check(folds=True, wholes=True)  # folded, one GEMM for the input gradient
        with monkeypatch.context() as m:  # folded, block by block, NumPy's matmul
            m.setattr(blas, "cblas", lambda: {})
            check(folds=True, wholes=False)
        monkeypatch.setattr(_arrayops.NumpyOps, "fold_scale", False)
        with ce.kernels.disabled():  # the blocks scaled one by one, NumPy's exp
            value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(h, w, t, **call)
        assert folded[-3:] == [False] * 3 and len(whole) == 6
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e)

    def test_float32_folded_within_1e_5(self, rng, monkeypatch):
        h, w, t, _ = _problem(rng, 200, 900, 24, bias=False)
        f32 = [a.astype(np.float32) for a in (h, w)]
        whole = self._spy(monkeypatch, "_whole_chunk")
        value, grads = ce.value_and_grad(linear_cross_entropy, (0, 1))(
            *f32, t, chunk_size=(64, 256)
        )
        assert whole == [True] * 3  # 171 counted rows: 3 chunks
        expected, expected_grads = _naive(*f32, t)
        assert value.dtype == np.float32
        assert_close(value, expected, rtol=1e-5, atol=0)
        for g, e in zip(grads, expected_grads):
            assert g.dtype == np.float32
            assert_close(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())

    @pytest.mark.parametrize("offset", [60.0, -60.0])
    def test_row_sums_beyond_fold_range(self, rng, monkeypatch, offset):
        # exp(+-60) is within float64's range (no shift) but the row sums are
        # beyond 2**+-64: the blocks are scaled one by one instead
        h, w, t, b = _problem(rng, 40, 50, 7)
        b = b + offset
        taken = self._spy(monkeypatch)
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, chunk_size=(16, 20), z_loss=1e-4
        )
        assert taken and not any(taken)
        expected, expected_grads = _naive(h, w, t, b, z_loss=1e-4)
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, rtol=1e-9, atol=1e-13)


# -- PyTorch autograd ---------------------------------------------------------------


class TestTorchAutograd:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[-1]])
    def test_backward_matches_naive(self, rng, reduction, options):
        h, w, t, b = _problem(rng, 23, 19, 6)
        kw = _kwargs(rng, 19, options)
        upstream = rng.normal(size=23) if reduction == "none" else np.array(1.7)
        th, tw, tb = (torch.tensor(a, requires_grad=True) for a in (h, w, b))
        extra = {k: (torch.tensor(v) if k == "weight" else v) for k, v in kw.items()}
        loss = linear_cross_entropy(
            th, tw, torch.tensor(t), linear_bias=tb, reduction=reduction, chunk_size=(6, 7), **extra
        )
        assert loss.grad_fn is not None
        (loss * torch.tensor(upstream)).sum().backward()

        ref = [torch.tensor(a, requires_grad=True) for a in (h, w, b)]
        y = ref[0] @ ref[1].T + ref[2]
        if kw.get("softcap"):
            y = kw["softcap"] * torch.tanh(y / kw["softcap"])
        cw = None if "weight" not in kw else torch.tensor(kw["weight"])
        tt = torch.tensor(t)
        rows = F.cross_entropy(y, tt, weight=cw, reduction="none",
                               label_smoothing=kw.get("label_smoothing", 0.0))  # fmt: skip
        rows = rows + kw.get("z_loss", 0.0) * torch.logsumexp(y, 1) ** 2 * (tt != -100)
        wt = (tt != -100).double() * (1 if cw is None else cw[tt.clamp(min=0)])
        ref_loss = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / wt.sum()}[reduction]
        (ref_loss * torch.tensor(upstream)).sum().backward()
        assert_close(loss.detach().numpy(), ref_loss.detach().numpy())
        for ours, theirs in zip((th, tw, tb), ref):
            assert_close(ours.grad.numpy(), theirs.grad.numpy())

    def test_only_weight_requires_grad(self, rng):
        h, w, t, _ = _problem(rng, 9, 7, 3)
        tw = torch.tensor(w, requires_grad=True)
        linear_cross_entropy(torch.tensor(h), tw, torch.tensor(t)).backward()
        _, (_, ew, *_) = _naive(h, w, t)
        assert_close(tw.grad.numpy(), ew)

    @pytest.mark.parametrize("reduction", ["none", "mean"])
    def test_numpy_target_and_weight_with_tensors(self, rng, reduction):
        h, w, t, _ = _problem(rng, 9, 7, 3)
        cw = rng.uniform(0.5, 2.0, size=7)
        th = torch.tensor(h, requires_grad=True)
        loss = linear_cross_entropy(th, torch.tensor(w), t, weight=cw, reduction=reduction)
        loss.sum().backward()
        expected, (eh, *_) = _naive(h, w, t, weight=cw, reduction=reduction)
        assert_close(loss.detach().numpy(), expected)
        assert_close(th.grad.numpy(), eh)

    def test_scalar_backward_twice_raises(self, rng):
        h, w, t, _ = _problem(rng, 9, 7, 3)
        th = torch.tensor(h, requires_grad=True)
        loss = linear_cross_entropy(th, torch.tensor(w), torch.tensor(t))
        loss.backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="backward through the same scalar loss twice"):
            loss.backward()

    def test_none_backward_twice_recomputes(self, rng):
        h, w, t, _ = _problem(rng, 9, 7, 3)
        th = torch.tensor(h, requires_grad=True)
        loss = linear_cross_entropy(th, torch.tensor(w), torch.tensor(t), reduction="none").sum()
        loss.backward(retain_graph=True)
        first = th.grad.clone()
        loss.backward()
        assert_close(th.grad.numpy(), 2 * first.numpy())

    def test_no_grad_gives_plain_tensor(self, rng):
        h, w, t, _ = _problem(rng, 9, 7, 3)
        th = torch.tensor(h, requires_grad=True)
        with torch.no_grad():
            loss = linear_cross_entropy(th, torch.tensor(w), torch.tensor(t))
        assert loss.grad_fn is None
        assert_close(loss.numpy(), _naive(h, w, t)[0])

    @pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
    def test_half_precision(self, rng, dtype):
        h, w, t, b = _problem(rng, 40, 64, 16)
        tdt = getattr(torch, dtype)
        th, tw, tb = (torch.tensor(a).to(tdt).requires_grad_() for a in (h, w, b))
        loss = linear_cross_entropy(th, tw, torch.tensor(t), linear_bias=tb, chunk_size=(16, 24))
        loss.backward()
        assert loss.dtype == tdt and th.grad.dtype == tdt and tw.grad.dtype == tdt
        # oracle: float64 on the same rounded inputs; half precision rounds the
        # logits and gradients to 8 (bfloat16) or 11 (float16) bits
        rounded = [a.detach().double().numpy() for a in (th, tw, tb)]
        expected, grads = _naive(rounded[0], rounded[1], t, rounded[2])
        tol = 2e-2 if dtype == "bfloat16" else 3e-3
        assert_close(loss.detach().float().numpy(), expected, rtol=tol, atol=0)
        for ours, e in zip((th, tw, tb), grads):
            assert_close(ours.grad.float().numpy(), e, rtol=0, atol=tol * np.abs(e).max())

    def test_float32_matches_naive_float32_autograd(self, rng):
        h, w, t, b = _problem(rng, 50, 80, 12)
        mine = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in (h, w, b)]
        ref = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in (h, w, b)]
        linear_cross_entropy(mine[0], mine[1], torch.tensor(t), linear_bias=mine[2]).backward()
        F.cross_entropy(ref[0] @ ref[1].T + ref[2], torch.tensor(t)).backward()
        for a, e in zip(mine, ref):
            assert a.grad.dtype == torch.float32
            assert_close(a.grad.numpy(), e.grad.numpy(), rtol=1e-5, atol=1e-7)


# -- temperature and normalizer -----------------------------------------------------

# a step of 64 rows split into 4 micro-batches with uneven counts of counted tokens
MICRO_BATCHES = [(0, 9), (9, 32), (32, 45), (45, 64)]


def _step(rng, v=29, d=5):
    h, w, t, b = _problem(rng, 64, v, d, ignored=False)
    t[[0, 1, 2, 3, 4, 10, 33, 34, 35, 36, 37, 38, 50]] = -100  # 5, 1, 6 and 1 ignored
    return h, w, t, b


class TestTemperatureAndNormalizer:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", [OPTIONS[0], OPTIONS[3], OPTIONS[-1]])
    @pytest.mark.parametrize("temperature", [0.4, 2.5])
    def test_temperature_matches_naive(self, rng, options, reduction, temperature):
        n, v, d = UNEVEN
        h, w, t, b = _problem(rng, n, v, d)
        kw = _kwargs(rng, v, options) | {"reduction": reduction, "temperature": temperature}
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            h, w, t, linear_bias=b, chunk_size=(37, 100), **kw
        )
        expected, expected_grads = _naive(h, w, t, b, **kw)
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e)

    def test_temperature_finite_differences(self, rng):
        h, w, t, b = _problem(rng, 5, 6, 3)
        kw = {"temperature": 0.3, "softcap": 2.0, "z_loss": 0.01, "chunk_size": (2, 4)}
        _, (dh, dw) = ce.value_and_grad(linear_cross_entropy, (0, 1))(h, w, t, linear_bias=b, **kw)
        fd_h = finite_difference(lambda x: linear_cross_entropy(x, w, t, linear_bias=b, **kw), h)
        fd_w = finite_difference(lambda x: linear_cross_entropy(h, x, t, linear_bias=b, **kw), w)
        assert_close(dh, fd_h, rtol=1e-6, atol=1e-8)
        assert_close(dw, fd_w, rtol=1e-6, atol=1e-8)

    @pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
    def test_micro_batches_add_up_to_the_step_mean(self, rng, weighted):
        h, w, t, b = _step(rng)
        cw = rng.uniform(0.5, 2.0, size=29) if weighted else None
        counted = t != -100
        total = float(counted.sum() if cw is None else cw[t[counted]].sum())
        vg = ce.value_and_grad(linear_cross_entropy, WRT)
        whole, (eh, ew, eb) = vg(h, w, t, linear_bias=b, weight=cw, chunk_size=(7, 10))
        values, dh, dw, db = [], [], 0.0, 0.0
        for a, z in MICRO_BATCHES:
            v, (gh, gw, gb) = vg(h[a:z], w, t[a:z], linear_bias=b, weight=cw, normalizer=total,
                                 chunk_size=(7, 10))  # fmt: skip
            values.append(float(v))
            dh.append(gh)
            dw, db = dw + gw, db + gb
        own = [float(linear_cross_entropy(h[a:z], w, t[a:z], linear_bias=b, weight=cw))
               for a, z in MICRO_BATCHES]  # fmt: skip
        assert abs(np.mean(own) - float(whole)) > 1e-3  # a mean per micro-batch is not the step's
        assert_close(sum(values), whole, rtol=1e-12, atol=1e-12)
        assert_close(np.concatenate(dh), eh, rtol=1e-12, atol=1e-12)
        assert_close(dw, ew, rtol=1e-12, atol=1e-12)
        assert_close(db, eb, rtol=1e-12, atol=1e-12)

    def test_micro_batches_through_torch_autograd(self, rng):
        h, w, t, b = _step(rng)
        total = int((t != -100).sum())
        th, tw, tb = (torch.tensor(a, requires_grad=True) for a in (h, w, b))
        for a, z in MICRO_BATCHES:  # .grad accumulates over the backward calls
            linear_cross_entropy(th[a:z], tw, torch.tensor(t[a:z]), linear_bias=tb,
                                 normalizer=torch.tensor(total)).backward()  # fmt: skip
        _, expected = _naive(h, w, t, b)
        for ours, e in zip((th, tw, tb), expected):
            assert_close(ours.grad.numpy(), e, rtol=1e-12, atol=1e-12)

    def test_every_backend(self, xp, rng):
        h, w, t, b = _problem(rng, 14, 18, 5)
        kw = {"temperature": 1.7, "softcap": 4.0, "z_loss": 0.01, "label_smoothing": 0.1}
        args = [xp.asarray(a) for a in (h, w, t)]
        value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
            *args, linear_bias=xp.asarray(b), normalizer=9.0, chunk_size=(7, 9), **kw
        )
        expected, expected_grads = _naive(h, w, t, b, reduction="sum", **kw)
        assert_close(value, expected / 9.0, backend=xp, dtype="float64")
        for g, e in zip(grads, expected_grads):
            assert_close(g, e / 9.0, backend=xp, dtype="float64")

    @pytest.mark.parametrize(
        ("kw", "match"),
        [
            ({"temperature": 0.0}, "temperature must be a positive finite number"),
            ({"temperature": float("inf")}, "temperature must be a positive finite number"),
            ({"normalizer": 0}, "normalizer must be a positive finite number"),
            ({"normalizer": 5, "reduction": "none"}, "normalizer=5 needs reduction='mean'"),
        ],
    )
    def test_bad_options(self, rng, kw, match):
        h, w, t, _ = _problem(rng, 6, 8, 3)
        with pytest.raises(ValueError, match=match):
            linear_cross_entropy(h, w, t, **kw)


# -- class-probability targets and K-dimensional weights -----------------------------


def _probabilities(rng, n, v, sharp=1.0):
    return rng.dirichlet(np.full(v, sharp), size=n)


class TestProbabilityTargets:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("options", OPTIONS + [pytest.param({"temperature": 0.6}, id="temp")])
    def test_matches_naive_torch_float64(self, rng, options, reduction):
        n, v, d = UNEVEN
        h, w, _, b = _problem(rng, n, v, d)
        p = _probabilities(rng, n, v)
        kw = _kwargs(rng, v, options) | {"reduction": reduction}
        value, grads = ce.value_and_grad(linear_cross_entropy, (*WRT, 2))(
            h, w, p, linear_bias=b, chunk_size=(37, 100), **kw
        )
        expected, expected_grads = _naive(h, w, p, b, **kw)
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e)

    def test_k_dim_input_and_float32_target(self, rng):
        h = rng.normal(size=(2, 3, 4))
        w = rng.normal(size=(7, 4))
        p = _probabilities(rng, 6, 7).reshape(2, 3, 7).astype(np.float32)
        value, (dh, dp) = ce.value_and_grad(linear_cross_entropy, (0, 2))(h, w, p, reduction="none")
        expected, (eh, _, _, ep) = _naive(h, w, p.astype(np.float64), reduction="none")
        assert value.shape == (2, 3) and dp.dtype == np.float32
        assert_close(value, expected)
        assert_close(dh, eh)
        assert_close(dp, ep, rtol=1e-6, atol=1e-7)

    def test_every_backend(self, xp, rng):
        h, w, _, b = _problem(rng, 14, 18, 5)
        p = _probabilities(rng, 14, 18)
        kw = {"label_smoothing": 0.1, "z_loss": 0.01, "softcap": 4.0, "temperature": 0.8}
        value, grads = ce.value_and_grad(linear_cross_entropy, (*WRT, 2))(
            *(xp.asarray(a) for a in (h, w, p)), linear_bias=xp.asarray(b), chunk_size=(7, 9), **kw
        )
        expected, expected_grads = _naive(h, w, p, b, **kw)
        assert_close(value, expected, backend=xp, dtype="float64")
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, backend=xp, dtype="float64")

    @pytest.mark.parametrize("offset", [1e4, -1e4])
    def test_logits_beyond_exp_range(self, rng, offset):
        h, w, _, b = _problem(rng, 10, 12, 3)
        p = _probabilities(rng, 10, 12)
        value, grads = ce.value_and_grad(linear_cross_entropy, (*WRT, 2))(
            h, w, p, linear_bias=b + offset, chunk_size=(3, 5), label_smoothing=0.1
        )
        expected, expected_grads = _naive(h, w, p, b + offset, label_smoothing=0.1)
        assert_close(value, expected, rtol=1e-12)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, rtol=1e-9, atol=1e-11)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_torch_autograd(self, rng, reduction):
        h, w, _, b = _problem(rng, 11, 9, 4)
        p = _probabilities(rng, 11, 9)
        th, tw, tb, tp = (torch.tensor(a, requires_grad=True) for a in (h, w, b, p))
        loss = linear_cross_entropy(th, tw, tp, linear_bias=tb, reduction=reduction,
                                    chunk_size=(4, 5), label_smoothing=0.2)  # fmt: skip
        loss.sum().backward()
        expected, grads = _naive(h, w, p, b, reduction=reduction, label_smoothing=0.2)
        assert_close(loss.detach().numpy(), expected)
        for ours, e in zip((th, tw, tb, tp), grads):
            assert_close(ours.grad.numpy(), e)

    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inductor's, not ours
    def test_torch_compile(self, rng):
        # the compiled operator's output shape is the rows' (6,), not the probabilities'
        # (6, 7): the graph adds a (6,) vector to it
        h, w, _, _ = _problem(rng, 6, 7, 3)
        p = _probabilities(rng, 6, 7)
        th, tw, tp = (torch.tensor(a) for a in (h, w, p))
        expected, _ = _naive(h, w, p, reduction="none", temperature=0.7)
        offset = torch.arange(6, dtype=torch.float64)

        def f(a):
            return linear_cross_entropy(a, tw, tp, reduction="none", temperature=0.7) + offset

        with torch.no_grad():
            value = torch.compile(f, fullgraph=True)(th)
        assert_close(value.numpy(), expected + np.arange(6))

    def test_target_gradient_finite_differences(self, rng):
        h, w, _, b = _problem(rng, 5, 6, 3)
        p = _probabilities(rng, 5, 6)
        kw = {"linear_bias": b, "weight": rng.uniform(0.5, 2, 6), "label_smoothing": 0.1}
        dp = ce.grad(linear_cross_entropy, "target")(h, w, p, **kw)
        fd = finite_difference(lambda x: linear_cross_entropy(h, w, x, **kw), p)
        assert_close(dp, fd, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def opinfo_samples():
    """PyTorch's own OpInfo samples of ``F.linear_cross_entropy`` (every variant), float64."""
    from torch.testing._internal.common_methods_invocations import op_db

    samples = []
    for op in op_db:
        if op.name == "nn.functional.linear_cross_entropy":
            samples += list(op.sample_inputs("cpu", torch.float64, requires_grad=True))
    return samples


class TestKDimensionalWeight:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("probs", [False, True], ids=["indices", "probabilities"])
    def test_matches_torch_linear_cross_entropy(self, rng, reduction, probs):
        n, v, d, out = 7, 5, 4, (3, 2)
        h, w = rng.normal(size=(n, d)), rng.normal(size=(v, *out, d))
        b, cw = rng.normal(size=(v, *out)), rng.uniform(0.5, 2.0, size=v)
        if probs:
            t = np.moveaxis(_probabilities(rng, n * 6, v).reshape(n, *out, v), -1, 1)
            kw = {}
        else:
            t = rng.integers(0, v, size=(n, *out))
            t[1, 2, 0] = t[4, 0, 1] = -100
            kw = {"ignore_index": -100}
        tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in (h, w, t, b)]
        ref = F.linear_cross_entropy(*tensors[:3], linear_bias=tensors[3], weight=torch.tensor(cw),
                                     reduction=reduction, **kw)  # fmt: skip
        ref.sum().backward()
        wrt = (0, 1, "linear_bias") + ((2,) if probs else ())
        value, grads = ce.value_and_grad(linear_cross_entropy, wrt)(
            h, w, t, linear_bias=b, weight=cw, reduction=reduction, chunk_size=(3, 2)
        )
        assert_close(value, ref.detach().numpy())
        order = [tensors[0], tensors[1], tensors[3]] + ([tensors[2]] if probs else [])
        for g, e in zip(grads, order):
            assert_close(g, e.grad.numpy())

    def test_opinfo_samples(self, opinfo_samples):
        """Every OpInfo sample of PyTorch 2.13 (reference and chunked variants, class
        indices and probabilities, K-dimensional weights): the same value and gradients
        (input, linear_weight, linear_bias, probability target) as ``F.linear_cross_entropy``."""
        assert len(opinfo_samples) > 300
        for sample in opinfo_samples:
            x, (w, t) = sample.input, sample.args
            kw = {k: v for k, v in sample.kwargs.items() if k != "options"}
            leaves = [a for a in (x, w, t, kw.get("linear_bias")) if a is not None and a.requires_grad]
            ref = F.linear_cross_entropy(x, w, t, **kw)
            expected = torch.autograd.grad(ref.sum(), leaves)
            ours = linear_cross_entropy(x, w, t, **kw)
            grads = torch.autograd.grad(ours.sum(), leaves)
            what = f"input {tuple(x.shape)}, weight {tuple(w.shape)}, target {tuple(t.shape)}, {kw.keys()}"
            assert ours.shape == ref.shape, what
            assert_close(ours.detach().numpy(), ref.detach().numpy(), rtol=1e-9, atol=1e-12)
            for g, e in zip(grads, expected):
                assert_close(g.numpy(), e.numpy(), rtol=1e-9, atol=1e-12)

    def test_all_ignored_mean_is_nan(self, rng):
        h, w = rng.normal(size=(3, 2)), rng.normal(size=(4, 2, 2))
        value, dh = ce.value_and_grad(linear_cross_entropy)(h, w, np.full((3, 2), -100))
        assert np.isnan(value) and not np.any(dh)


# -- per-token statistics ------------------------------------------------------------


def _naive_stats(h, w, t, b=None, *, softcap=None, temperature=1.0, z_loss=0.0, **_):
    """log-prob of the target, logsumexp, entropy and argmax from ``log_softmax``."""
    y = torch.tensor(h) @ torch.tensor(w).T + (0 if b is None else torch.tensor(b))
    if softcap is not None:
        y = softcap * torch.tanh(y / softcap)
    y = y / temperature
    logp = F.log_softmax(y, -1)
    lse = torch.logsumexp(y, -1)
    safe = torch.tensor(np.where(t >= 0, t, 0))
    return {
        "logprob": logp.gather(-1, safe[..., None])[..., 0].numpy(),
        "logsumexp": lse.numpy(),
        "entropy": -(logp.exp() * logp).sum(-1).numpy(),
        "argmax": y.argmax(-1).numpy(),
        "z_loss": (z_loss * lse**2).numpy(),
    }


class TestStats:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize(
        "options",
        [OPTIONS[0], OPTIONS[-1], pytest.param({"temperature": 0.7, "z_loss": 0.02}, id="temp")],
    )
    def test_matches_naive_log_softmax(self, xp, rng, options, reduction):
        h, w, t, b = _problem(rng, 14, 18, 5)
        kw = _kwargs(rng, 18, options) | {"reduction": reduction}
        args = [xp.asarray(a) for a in (h, w, t)]
        extra = {k: (xp.asarray(v) if k == "weight" else v) for k, v in kw.items()}
        stats = ce.linear_cross_entropy_stats(*args, linear_bias=xp.asarray(b), chunk_size=(7, 9),
                                              **extra)  # fmt: skip
        assert isinstance(stats, ce.TokenStats)
        expected, _ = _naive(h, w, t, b, **kw)
        assert_close(stats.loss, expected, backend=xp, dtype="float64")
        naive = _naive_stats(h, w, t, b, **kw)
        counted = t != -100
        for name in ("logprob", "logsumexp", "entropy", "z_loss"):
            want = np.where(counted, naive[name], 0.0)
            assert_close(getattr(stats, name), want, backend=xp, dtype="float64")
        argmax = xp.to_numpy(stats.argmax)
        np.testing.assert_array_equal(argmax, np.where(counted, naive["argmax"], -1))
        np.testing.assert_array_equal(xp.to_numpy(stats.correct), counted & (naive["argmax"] == t))
        np.testing.assert_array_equal(xp.to_numpy(stats.counted), counted)

    def test_gradients_are_those_of_the_loss(self, rng):
        h, w, t, b = _problem(rng, 40, 23, 6)
        kw = {"linear_bias": b, "z_loss": 0.01, "label_smoothing": 0.1, "chunk_size": (9, 8)}
        stats, grads = ce.value_and_grad(ce.linear_cross_entropy_stats, WRT)(h, w, t, **kw)
        value, expected = ce.value_and_grad(linear_cross_entropy, WRT)(h, w, t, **kw)
        assert_close(stats.loss, value, rtol=1e-15)
        for g, e in zip(grads, expected):  # the same up to the rounding of exp
            assert_close(g, e, rtol=1e-12, atol=1e-15)

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    def test_torch_autograd(self, rng, reduction):
        h, w, t, b = _problem(rng, 23, 19, 6)
        th, tw = torch.tensor(h, requires_grad=True), torch.tensor(w, requires_grad=True)
        stats = ce.linear_cross_entropy_stats(th, tw, torch.tensor(t), reduction=reduction,
                                              chunk_size=(6, 7))  # fmt: skip
        assert not stats.logprob.requires_grad and stats.argmax.dtype == torch.int64
        stats.loss.sum().backward()
        expected, (eh, ew, *_) = _naive(h, w, t, reduction=reduction)
        assert_close(stats.loss.detach().numpy(), expected)
        assert_close(th.grad.numpy(), eh)
        assert_close(tw.grad.numpy(), ew)
        naive = _naive_stats(h, w, t)
        counted = t != -100
        assert_close(stats.entropy.numpy(), np.where(counted, naive["entropy"], 0.0))

    @pytest.mark.parametrize("offset", [1e4, 690.0])
    def test_logits_beyond_exp_range(self, rng, offset):
        # 1e4: exp overflows; 690: exp(y) does not, exp(y) * y does
        h, w, t, b = _problem(rng, 10, 12, 3, ignored=False)
        stats = ce.linear_cross_entropy_stats(h, w, t, linear_bias=b + offset, chunk_size=(3, 5))
        naive = _naive_stats(h, w, t, b + offset)
        for name in ("logprob", "logsumexp", "entropy"):
            assert_close(getattr(stats, name), naive[name], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(stats.argmax, naive["argmax"])

    def test_every_token_without_ignore_index(self, rng):
        h, w, t, _ = _problem(rng, 9, 7, 3, ignored=False)
        t[2] = -100  # an ordinary (out-of-range) value: not allowed unless ignored
        with pytest.raises(ce.TargetIndexError):
            ce.linear_cross_entropy_stats(h, w, t, ignore_index=None)
        t[2] = 0
        stats = ce.linear_cross_entropy_stats(h, w, t, ignore_index=None, reduction="none")
        assert stats.counted.all()
        assert_close(stats.logprob, _naive_stats(h, w, t)["logprob"])

    def test_jax_default_index_dtype(self, rng):
        # JAX without x64: argmax in int32, its index dtype (int64 would warn and truncate)
        jnp = pytest.importorskip("jax.numpy")
        h, w, t, _ = _problem(rng, 9, 7, 3)
        stats = ce.linear_cross_entropy_stats(
            *(jnp.asarray(a, dtype=jnp.float32) for a in (h, w)), jnp.asarray(t, dtype=jnp.int32)
        )
        naive = _naive_stats(h, w, t)
        assert stats.argmax.dtype == jnp.int32 and stats.entropy.dtype == jnp.float32
        counted = t != -100
        np.testing.assert_array_equal(np.asarray(stats.argmax), np.where(counted, naive["argmax"], -1))
        assert_close(np.asarray(stats.entropy), np.where(counted, naive["entropy"], 0), rtol=1e-5)

    def test_ties_take_the_first_class(self):
        h, w = np.array([[1.0, 1.0], [0.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        stats = ce.linear_cross_entropy_stats(h, w, np.array([2, 1]), chunk_size=(1, 1))
        np.testing.assert_array_equal(stats.argmax, [0, 1])  # torch.argmax's choice
        np.testing.assert_array_equal(stats.correct, [False, True])

    def test_refuses_probabilities_and_k_dim_weights(self, rng):
        h, w, _, _ = _problem(rng, 6, 8, 3)
        with pytest.raises(ValueError, match="needs class-index targets"):
            ce.linear_cross_entropy_stats(h, w, _probabilities(rng, 6, 8))
        with pytest.raises(ValueError, match=r"needs a 2-D linear_weight \(V, D\)"):
            ce.linear_cross_entropy_stats(h, np.zeros((8, 2, 3)), np.zeros((6, 2), dtype=int))


# -- memory -------------------------------------------------------------------------


class TestMemory:
    def test_never_holds_the_logits(self, rng):
        n, v, d = 128, 30000, 16
        h = rng.normal(size=(n, d)).astype(np.float32)
        w = rng.normal(size=(v, d)).astype(np.float32)
        t = rng.integers(0, v, size=n)
        logits_bytes = n * v * 4  # 41 MB
        chunk = 16
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            value, (dh, dw) = ce.value_and_grad(linear_cross_entropy, (0, 1))(
                h, w, t, chunk_size=chunk
            )
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        extra = peak - dh.nbytes - dw.nbytes
        assert extra < 2 * chunk * v * 4 + 2**20, (extra, logits_bytes)
        assert extra < logits_bytes / 5
        expected, (eh, ew, *_) = _naive(h, w, t)
        assert_close(value, expected, rtol=1e-5)

    def test_default_chunk_size_fits_budget(self):
        chunk = default_chunk_size(128000, 4)
        assert 64 <= chunk and chunk * 128000 * 4 <= 112 * 2**20
        assert default_chunk_size(10**9, 4) >= 1

    @pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
    def test_default_chunk_of_half_precision_tensors(self, dtype):
        """Half-precision GEMMs add into float32 (V, D) accumulators once per
        chunk: their default chunk is at least 896 rows; float32 keeps the
        112 MiB logits budget."""
        torch = pytest.importorskip("torch")
        from crossentropy.linear import LinearOptions
        from crossentropy.linear._prepare import prepare_linear_call

        v, dt = 200000, getattr(torch, dtype)
        h, w = torch.zeros((2000, 4), dtype=dt), torch.zeros((v, 4), dtype=dt)
        t = torch.zeros(2000, dtype=torch.int64)
        c = prepare_linear_call(h, w, t, None, None, LinearOptions.checked())
        assert c.chunk == (default_chunk_size(v, 4) if dtype == "float32" else 896)
        assert default_chunk_size(v, 4) < 896
        c = prepare_linear_call(h, w, t, None, None, LinearOptions.checked(chunk_size=100))
        assert c.chunk == 100  # the caller's choice stands
        assert default_chunk_size(v, 4, half_gemm=True) == 896
        assert default_chunk_size(1000, 4, half_gemm=True) == default_chunk_size(1000, 4)


# -- properties ---------------------------------------------------------------------


@given(
    n=st.integers(1, 9),
    v=st.integers(1, 11),
    rows=st.integers(1, 10),
    cols=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_chunking_is_invisible(n, v, rows, cols, seed):
    rng = np.random.default_rng(seed)
    h, w, t, b = _problem(rng, n, v, 3)
    value, grads = ce.value_and_grad(linear_cross_entropy, WRT)(
        h, w, t, linear_bias=b, reduction="sum", chunk_size=(rows, cols), label_smoothing=0.1
    )
    expected, expected_grads = _naive(h, w, t, b, reduction="sum", label_smoothing=0.1)
    assert_close(value, expected)
    for g, e in zip(grads, expected_grads):
        assert_close(g, e)


# -- errors -------------------------------------------------------------------------


class TestErrors:
    def _args(self, rng):
        return _problem(rng, 6, 8, 3)[:3]

    def test_feature_mismatch_names_both_shapes(self, rng):
        h, w, t = self._args(rng)
        with pytest.raises(
            ValueError, match=r"input has shape \(6, 4\).*linear_weight has shape \(8, 3\)"
        ):
            linear_cross_entropy(np.zeros((6, 4)), w, t)

    def test_weight_must_be_2d(self, rng):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match=r"linear_weight must be 2-D.*\(3,\)"):
            linear_cross_entropy(h, np.zeros(3), t)

    def test_k_dim_weight_shapes(self, rng):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match=r"target has shape \(6,\), expected \(6, 4\)"):
            linear_cross_entropy(h, np.zeros((2, 4, 3)), t)
        with pytest.raises(ValueError, match=r"needs a batched 2-D input \(N, D\).*\(3,\)"):
            linear_cross_entropy(h[0], np.zeros((2, 4, 3)), t[:4])
        with pytest.raises(ValueError, match=r"linear_bias must have shape \(2, 4\)"):
            linear_cross_entropy(h, np.zeros((2, 4, 3)), t[:, None] % 2 + np.zeros((1, 4), int),
                                 linear_bias=np.zeros(2))  # fmt: skip

    def test_target_shape(self, rng):
        h, w, _ = self._args(rng)
        with pytest.raises(ValueError, match=r"target has shape \(5,\), expected \(6,\)"):
            linear_cross_entropy(h, w, np.zeros(5, dtype=np.int64))

    def test_integer_target_of_probabilities_shape(self, rng):
        h, w, _ = self._args(rng)
        with pytest.raises(ce.DTypeError, match=r"class probabilities, which must be floating"):
            linear_cross_entropy(h, w, np.ones((6, 8), dtype=np.int64))

    def test_float_target_of_right_shape(self, rng):
        h, w, _ = self._args(rng)
        with pytest.raises(ce.DTypeError, match="integer class indices"):
            linear_cross_entropy(h, w, np.zeros(6))

    def test_target_out_of_range(self, rng):
        h, w, t = self._args(rng)
        t[2] = 8
        with pytest.raises(ce.TargetIndexError, match=r"Target 8 is out of bounds.*\[0, 7\]"):
            linear_cross_entropy(h, w, t)

    @pytest.mark.parametrize("name", ["linear_bias", "weight"])
    def test_vector_length(self, rng, name):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match=rf"{name} must be a 1-D array of length 8.*\(7,\)"):
            linear_cross_entropy(h, w, t, **{name: np.ones(7)})

    def test_integer_input(self, rng):
        _, w, t = self._args(rng)
        with pytest.raises(ce.DTypeError, match="input must have a floating-point dtype"):
            linear_cross_entropy(np.ones((6, 3), dtype=np.int64), w, t)

    @pytest.mark.parametrize("chunk_size", [0, -3, 2.5, (4, 0), (1, 2, 3), True])
    def test_bad_chunk_size(self, rng, chunk_size):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match="chunk_size"):
            linear_cross_entropy(h, w, t, chunk_size=chunk_size)

    def test_bad_filter_eps(self, rng):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match="filter_eps must be >= 0"):
            linear_cross_entropy(h, w, t, filter_eps=-1.0)

    @pytest.mark.parametrize(
        ("kw", "match"),
        [
            ({"reduction": "batchmean"}, "reduction must be one of"),
            ({"label_smoothing": 1.5}, "label_smoothing must be in"),
            ({"z_loss": -1.0}, "z_loss must be >= 0"),
            ({"softcap": 0.0}, "softcap must be a positive"),
        ],
    )
    def test_bad_options(self, rng, kw, match):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match=match):
            linear_cross_entropy(h, w, t, **kw)

    def test_bias_gradient_without_bias(self, rng):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match="linear_bias: it is None"):
            ce.value_and_grad(linear_cross_entropy, "linear_bias")(h, w, t)

    def test_target_not_differentiable(self, rng):
        h, w, t = self._args(rng)
        with pytest.raises(ValueError, match="with respect to target only for class probabilities"):
            ce.value_and_grad(linear_cross_entropy, 2)(h, w, t)
