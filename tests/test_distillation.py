"""``linear_distillation_loss`` against the naive float64 formulas on materialised logits.

The oracle builds both logits matrices in float64 PyTorch, their
``log_softmax`` and the divergence written out (forward KL, reverse KL,
generalised JSD with the mixture through ``logsumexp``, as TRL writes it), and
differentiates it with torch autograd; the forward KL is also checked against
``F.kl_div``.  Gradients are also checked against central finite differences,
and the memory bound with ``tracemalloc``.
"""

from __future__ import annotations

import gc
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import crossentropy as ce
from crossentropy import linear_distillation_loss as distill
from tests.support import assert_close, finite_difference, jax_x64

torch = pytest.importorskip("torch")
F = torch.nn.functional

DIVERGENCES = [
    pytest.param(("kl", None), id="kl"),
    pytest.param(("reverse_kl", None), id="reverse_kl"),
    pytest.param(("jsd", None), id="jsd"),
    pytest.param(("jsd", 0.2), id="jsd-beta0.2"),
]
REDUCTIONS = ["none", "mean", "sum"]
WRT = (0, 1, "student_bias")


def _problem(rng, n=37, v=53, ds=7, dt=5, *, ignored=True, scale=1.0):
    hs, ht = rng.normal(size=(n, ds)), rng.normal(size=(n, dt))
    ws = rng.normal(scale=scale, size=(v, ds))
    wt = rng.normal(scale=1.5 * scale, size=(v, dt))
    bs, bt = rng.normal(size=v), rng.normal(size=v)
    t = rng.integers(0, v, size=n)
    if ignored:
        t[1::5] = -100
    return hs, ws, ht, wt, bs, bt, t


def _naive(hs, ws, ht, wt, bs=None, bt=None, target=None, *, divergence="kl", beta=None,
           temperature=1.0, reduction="mean", ignore_index=-100, normalizer=None):  # fmt: skip
    """Value and the gradients (of the value's sum) of the student's input, weight, bias."""
    xs = torch.tensor(hs, requires_grad=True)
    w = torch.tensor(ws, requires_grad=True)
    b = None if bs is None else torch.tensor(bs, requires_grad=True)
    zs = xs @ w.T + (0 if b is None else b)
    zt = torch.tensor(ht) @ torch.tensor(wt).T + (0 if bt is None else torch.tensor(bt))
    log_q, log_p = F.log_softmax(zs / temperature, -1), F.log_softmax(zt / temperature, -1)
    p, q = log_p.exp(), log_q.exp()
    if divergence == "kl":
        rows = (p * (log_p - log_q)).sum(-1)
    elif divergence == "reverse_kl":
        rows = (q * (log_q - log_p)).sum(-1)
    else:
        beta = 0.5 if beta is None else beta
        log_m = torch.logsumexp(
            torch.stack([log_q + math.log(1 - beta), log_p + math.log(beta)]), dim=0
        )
        rows = beta * (p * (log_p - log_m)).sum(-1) + (1 - beta) * (q * (log_q - log_m)).sum(-1)
    counted = torch.ones(rows.shape, dtype=torch.float64)
    if target is not None:
        counted = torch.tensor(np.asarray(target) != ignore_index, dtype=torch.float64)
    rows = rows * counted
    denom = counted.sum() if normalizer is None else normalizer
    value = {"none": rows, "sum": rows.sum(), "mean": rows.sum() / denom}[reduction]
    value.sum().backward()
    grads = [xs.grad.numpy(), w.grad.numpy(), None if b is None else b.grad.numpy()]
    return value.detach().numpy(), grads


class TestAgainstNaiveFormulas:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
    @pytest.mark.parametrize("ignored", [False, True], ids=["all-count", "ignored"])
    @pytest.mark.parametrize("div", DIVERGENCES)
    def test_loss_and_student_gradients(self, rng, div, ignored, temperature, reduction):
        divergence, beta = div
        hs, ws, ht, wt, bs, bt, t = _problem(rng, ignored=ignored)
        kw = {"divergence": divergence, "beta": beta, "temperature": temperature,
              "reduction": reduction}  # fmt: skip
        target = t if ignored else None
        value, grads = ce.value_and_grad(distill, WRT)(
            hs, ws, ht, wt, target, student_bias=bs, teacher_bias=bt, chunk_size=(8, 11), **kw
        )
        expected, expected_grads = _naive(hs, ws, ht, wt, bs, bt, target, **kw)
        assert_close(value, expected)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, rtol=1e-9, atol=1e-13)
        if ignored and reduction == "none":
            assert not np.any(value[t == -100])

    def test_forward_kl_is_torch_kl_div(self, rng):
        hs, ws, ht, wt, _, _, _ = _problem(rng)
        log_q = F.log_softmax(torch.tensor(hs @ ws.T), -1)
        log_p = F.log_softmax(torch.tensor(ht @ wt.T), -1)
        expected = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
        assert_close(distill(hs, ws, ht, wt), expected.numpy())

    @pytest.mark.parametrize("div", DIVERGENCES)
    def test_every_backend(self, xp, rng, div):
        divergence, beta = div
        hs, ws, ht, wt, bs, bt, t = _problem(rng, n=14, v=18)
        kw = {"divergence": divergence, "beta": beta, "temperature": 1.5}
        value, grads = ce.value_and_grad(distill, WRT)(
            *(xp.asarray(a) for a in (hs, ws, ht, wt, t)), student_bias=xp.asarray(bs),
            teacher_bias=xp.asarray(bt), chunk_size=(7, 9), **kw,
        )  # fmt: skip
        expected, expected_grads = _naive(hs, ws, ht, wt, bs, bt, t, **kw)
        assert_close(value, expected, backend=xp, dtype="float64")
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, backend=xp, dtype="float64")

    @pytest.mark.parametrize("offset", [(1e4, 0.0), (0.0, -1e4), (800.0, 800.0)])
    @pytest.mark.parametrize("div", DIVERGENCES)
    def test_logits_beyond_exp_range(self, rng, div, offset):
        # exp overflows (or underflows) on one head or both: the chunks are redone with
        # running maxima and stay exact
        divergence, beta = div
        hs, ws, ht, wt, bs, bt, t = _problem(rng, n=12, v=14)
        bs, bt = bs + offset[0], bt + offset[1]
        kw = {"divergence": divergence, "beta": beta}
        value, grads = ce.value_and_grad(distill, WRT)(
            hs, ws, ht, wt, t, student_bias=bs, teacher_bias=bt, chunk_size=(5, 4), **kw
        )
        expected, expected_grads = _naive(hs, ws, ht, wt, bs, bt, t, **kw)
        assert np.isfinite(value)
        assert_close(value, expected, rtol=1e-9, atol=1e-12)
        for g, e in zip(grads, expected_grads):
            assert_close(g, e, rtol=1e-9, atol=1e-11)

    def test_identical_heads_give_zero(self, rng):
        hs, ws, *_ = _problem(rng)
        for divergence in ("kl", "reverse_kl", "jsd"):
            value, dh = ce.value_and_grad(distill)(hs, ws, hs, ws, divergence=divergence)
            assert abs(float(value)) < 1e-14 and np.abs(dh).max() < 1e-14

    def test_float32_within_1e_5(self, rng):
        hs, ws, ht, wt, bs, bt, t = _problem(rng, n=64, v=300, ds=24, dt=16, scale=0.3)
        f32 = [a.astype(np.float32) for a in (hs, ws, ht, wt, bs, bt)]
        for divergence in ("kl", "reverse_kl", "jsd"):
            value, grads = ce.value_and_grad(distill, WRT)(
                *f32[:4], t, student_bias=f32[4], teacher_bias=f32[5], divergence=divergence
            )
            expected, expected_grads = _naive(*f32, t, divergence=divergence)
            assert value.dtype == np.float32
            assert_close(value, expected, rtol=1e-5, atol=1e-7)
            for g, e in zip(grads, expected_grads):
                assert g.dtype == np.float32
                assert_close(g, e, rtol=1e-5, atol=1e-5 * np.abs(e).max())

    @pytest.mark.parametrize("div", DIVERGENCES)
    def test_finite_differences(self, rng, div):
        divergence, beta = div
        hs, ws, ht, wt, bs, bt, t = _problem(rng, n=5, v=6, ds=3, dt=2)
        kw = {"divergence": divergence, "beta": beta, "temperature": 0.7, "chunk_size": (2, 4),
              "teacher_bias": bt}  # fmt: skip
        _, grads = ce.value_and_grad(distill, WRT)(hs, ws, ht, wt, t, student_bias=bs, **kw)
        fd = [
            finite_difference(lambda x: distill(x, ws, ht, wt, t, student_bias=bs, **kw), hs),
            finite_difference(lambda x: distill(hs, x, ht, wt, t, student_bias=bs, **kw), ws),
            finite_difference(lambda x: distill(hs, ws, ht, wt, t, student_bias=x, **kw), bs),
        ]
        for g, e in zip(grads, fd):
            assert_close(g, e, rtol=1e-6, atol=1e-9)


class TestNormalizer:
    @pytest.mark.parametrize("div", DIVERGENCES)
    def test_micro_batches_add_up_to_the_step_mean(self, rng, div):
        divergence, beta = div
        hs, ws, ht, wt, bs, bt, t = _problem(rng, n=40)
        t[:7] = -100  # uneven counts per micro-batch
        total = int((t != -100).sum())
        vg = ce.value_and_grad(distill, WRT)
        kw = {"divergence": divergence, "beta": beta, "teacher_bias": bt, "chunk_size": (6, 10)}
        whole, (eh, ew, eb) = vg(hs, ws, ht, wt, t, student_bias=bs, **kw)
        values, dh, dw, db = [], [], 0.0, 0.0
        for a, z in [(0, 9), (9, 17), (17, 31), (31, 40)]:
            v, (gh, gw, gb) = vg(hs[a:z], ws, ht[a:z], wt, t[a:z], student_bias=bs,
                                 normalizer=total, **kw)  # fmt: skip
            values.append(float(v))
            dh.append(gh)
            dw, db = dw + gw, db + gb
        assert_close(sum(values), whole, rtol=1e-12, atol=1e-14)
        assert_close(np.concatenate(dh), eh, rtol=1e-12, atol=1e-14)
        assert_close(dw, ew, rtol=1e-12, atol=1e-14)
        assert_close(db, eb, rtol=1e-12, atol=1e-14)


class TestTorchAutograd:
    @pytest.mark.parametrize("reduction", REDUCTIONS)
    @pytest.mark.parametrize("div", DIVERGENCES)
    def test_backward_matches_naive(self, rng, div, reduction):
        divergence, beta = div
        hs, ws, ht, wt, bs, bt, t = _problem(rng, n=23, v=19)
        upstream = rng.normal(size=23) if reduction == "none" else np.array(1.7)
        ts, tw, tb = (torch.tensor(a, requires_grad=True) for a in (hs, ws, bs))
        teacher = [torch.tensor(a, requires_grad=True) for a in (ht, wt, bt)]
        loss = distill(ts, tw, teacher[0], teacher[1], torch.tensor(t), student_bias=tb,
                       teacher_bias=teacher[2], divergence=divergence, beta=beta,
                       temperature=2.0, reduction=reduction, chunk_size=(6, 7))  # fmt: skip
        assert loss.grad_fn is not None
        (loss * torch.tensor(upstream)).sum().backward()
        kw = {"divergence": divergence, "beta": beta, "temperature": 2.0, "reduction": reduction}
        expected, grads = _naive(hs, ws, ht, wt, bs, bt, t, **kw)
        assert_close(loss.detach().numpy(), expected)
        scale = upstream[:, None] if reduction == "none" else upstream
        assert_close(ts.grad.numpy(), grads[0] * scale)
        if reduction != "none":
            assert_close(tw.grad.numpy(), grads[1] * upstream)
            assert_close(tb.grad.numpy(), grads[2] * upstream)
        assert all(a.grad is None for a in teacher)  # the teacher is frozen

    def test_numpy_target_and_no_grad(self, rng):
        hs, ws, ht, wt, _, _, t = _problem(rng, n=9, v=7)
        ts = torch.tensor(hs, requires_grad=True)
        loss = distill(ts, torch.tensor(ws), torch.tensor(ht), torch.tensor(wt), t)
        loss.backward()
        expected, (eh, *_) = _naive(hs, ws, ht, wt, target=t)
        assert_close(loss.detach().numpy(), expected)
        assert_close(ts.grad.numpy(), eh)
        with torch.no_grad():
            plain = distill(ts, torch.tensor(ws), torch.tensor(ht), torch.tensor(wt), t)
        assert plain.grad_fn is None
        assert_close(plain.numpy(), expected)

    def test_bfloat16(self, rng):
        hs, ws, ht, wt, _, _, t = _problem(rng, n=40, v=64, ds=16, dt=16, scale=0.3)
        args = [torch.tensor(a).to(torch.bfloat16) for a in (hs, ws, ht, wt)]
        args[0].requires_grad_()
        loss = distill(*args, torch.tensor(t), divergence="jsd", chunk_size=(16, 24))
        loss.backward()
        assert loss.dtype == torch.bfloat16 and args[0].grad.dtype == torch.bfloat16
        rounded = [a.detach().double().numpy() for a in args]
        expected, (eh, *_) = _naive(*rounded, target=t, divergence="jsd")
        assert_close(loss.detach().float().numpy(), expected, rtol=2e-2, atol=1e-4)
        assert_close(args[0].grad.float().numpy(), eh, rtol=0, atol=2e-2 * np.abs(eh).max())


class TestJax:
    """On JAX arrays the portable engine runs eagerly: ``jax.grad`` differentiates its
    chunked forward (exact, as the tests show; its memory is JAX's to keep)."""

    @pytest.mark.parametrize("reduction", ["mean", "none"])
    @pytest.mark.parametrize("div", DIVERGENCES)
    def test_jax_grad_matches_naive(self, rng, div, reduction):
        jax = pytest.importorskip("jax")
        jnp = jax.numpy
        divergence, beta = div
        hs, ws, ht, wt, bs, bt, t = _problem(rng, n=13, v=11)
        kw = {"divergence": divergence, "beta": beta, "temperature": 1.7, "reduction": reduction}
        with jax_x64():
            teacher = [jnp.asarray(a) for a in (ht, wt, t)]
            bias = jnp.asarray(bt)

            def loss(h, w, b):
                out = distill(h, w, *teacher, student_bias=b, teacher_bias=bias,
                              chunk_size=(4, 5), **kw)  # fmt: skip
                return jnp.sum(out), out

            (_, value), grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(
                *(jnp.asarray(a) for a in (hs, ws, bs))
            )
        expected, expected_grads = _naive(hs, ws, ht, wt, bs, bt, t, **kw)
        assert isinstance(value, jax.Array)
        assert_close(np.asarray(value), expected)
        for g, e in zip(grads, expected_grads):
            assert isinstance(g, jax.Array)
            assert_close(np.asarray(g), e)


class TestMemory:
    def test_never_holds_either_logits(self, rng):
        n, v, d = 256, 30000, 16
        hs, ht = (rng.normal(size=(n, d)).astype(np.float32) for _ in range(2))
        ws, wt = (rng.normal(size=(v, d)).astype(np.float32) for _ in range(2))
        logits_bytes = n * v * 4  # 31 MB each
        chunk = 16
        for divergence in ("kl", "jsd"):
            gc.collect()
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                _, (dh, dw) = ce.value_and_grad(distill, (0, 1))(
                    hs, ws, ht, wt, divergence=divergence, chunk_size=chunk
                )
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
            extra = peak - dh.nbytes - dw.nbytes
            # two (chunk, V) buffers and a few block-sized temporaries
            assert extra < 3 * chunk * v * 4 + 2**20, (divergence, extra)
            assert extra < logits_bytes / 4


@given(
    n=st.integers(1, 7),
    v=st.integers(1, 9),
    rows=st.integers(1, 8),
    cols=st.integers(1, 10),
    kind=st.sampled_from(["kl", "reverse_kl", "jsd"]),
    seed=st.integers(0, 2**16),
)
def test_chunking_is_invisible(n, v, rows, cols, kind, seed):
    rng = np.random.default_rng(seed)
    hs, ws, ht, wt, bs, bt, t = _problem(rng, n=n, v=v, ds=3, dt=2)
    value, grads = ce.value_and_grad(distill, WRT)(
        hs, ws, ht, wt, t, student_bias=bs, teacher_bias=bt, reduction="sum",
        divergence=kind, chunk_size=(rows, cols),
    )  # fmt: skip
    expected, expected_grads = _naive(hs, ws, ht, wt, bs, bt, t, divergence=kind, reduction="sum")
    assert_close(value, expected, atol=1e-12)
    for g, e in zip(grads, expected_grads):
        assert_close(g, e, atol=1e-12)


class TestErrors:
    def _args(self, rng):
        hs, ws, ht, wt, _, _, t = _problem(rng, n=6, v=8, ds=3, dt=2)
        return hs, ws, ht, wt, t

    @pytest.mark.parametrize(
        ("kw", "match"),
        [
            ({"divergence": "kld"}, "divergence must be one of 'kl', 'reverse_kl', 'jsd'"),
            ({"beta": 0.3}, "beta weighs the teacher in divergence='jsd' only"),
            ({"divergence": "jsd", "beta": 1.0}, "beta must lie strictly between 0 and 1"),
            ({"divergence": "jsd", "beta": float("nan")}, "beta must lie strictly between"),
            ({"temperature": -1.0}, "temperature must be a positive finite number"),
            ({"reduction": "batchmean"}, "reduction must be one of"),
            ({"normalizer": 3, "reduction": "sum"}, "needs reduction='mean'"),
            ({"chunk_size": 0}, "chunk_size"),
        ],
    )
    def test_bad_options(self, rng, kw, match):
        with pytest.raises(ValueError, match=match):
            distill(*self._args(rng), **kw)

    def test_shapes(self, rng):
        hs, ws, ht, wt, t = self._args(rng)
        with pytest.raises(ValueError, match=r"share the tokens and the vocabulary"):
            distill(hs, ws, ht, wt[:7])
        with pytest.raises(ValueError, match=r"share the tokens and the vocabulary"):
            distill(hs, ws, ht[:5], wt)
        with pytest.raises(ValueError, match=r"teacher_input has shape \(6, 2\) and teacher_weight"):
            distill(hs, ws, ht, ws)
        with pytest.raises(ValueError, match=r"target has shape \(5,\), expected \(6,\)"):
            distill(hs, ws, ht, wt, t[:5])
        with pytest.raises(ValueError, match=r"student_bias must be a 1-D array of length 8"):
            distill(hs, ws, ht, wt, student_bias=np.zeros(7))

    def test_dtypes_and_targets(self, rng):
        hs, ws, ht, wt, t = self._args(rng)
        with pytest.raises(ce.DTypeError, match="teacher_weight must have a floating-point dtype"):
            distill(hs, ws, ht, wt.astype(np.int64))
        with pytest.raises(ce.DTypeError, match="integer class indices"):
            distill(hs, ws, ht, wt, t.astype(float))
        t[0] = 8
        with pytest.raises(ce.TargetIndexError, match="Target 8 is out of bounds"):
            distill(hs, ws, ht, wt, t)

    def test_not_differentiable_with_respect_to_the_teacher(self, rng):
        with pytest.raises(ValueError, match="differentiable arguments: student_input"):
            ce.value_and_grad(distill, "teacher_input")(*self._args(rng))
        with pytest.raises(ValueError, match="student_bias: it is None"):
            ce.value_and_grad(distill, "student_bias")(*self._args(rng))
