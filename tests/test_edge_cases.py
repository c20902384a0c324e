"""Edge cases from PyTorch's and SciPy's own test inputs, against their answers.

Ignored rows whose logits are NaN or ``-inf`` (padding), empty class axes, 0-d
inputs, negative targets of ``kl_div``, broadcast distributions of
:mod:`crossentropy.info` and ``logsumexp`` of terms far below the maximum.
Each runs on the kernels and on the portable path where both exist.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import scipy.special

import crossentropy as ce
from crossentropy import info, kernels
from tests.support import assert_close, finite_difference, jax_x64, torch_oracle

torch = pytest.importorskip("torch")
F = torch.nn.functional

PATHS = pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "portable"])


def _path(kernel: bool):
    return contextlib.nullcontext() if kernel else kernels.disabled()


# -- item: ignored rows with NaN or -inf logits ---------------------------------------------


class TestIgnoredPaddingRows:
    """An ignored row counts for nothing, whatever its logits (PyTorch: the finite loss
    of the counted rows; its gradient of the ignored rows is NaN, ours 0)."""

    @PATHS
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("n_classes", [3, 40])  # the columns and the rows kernel
    @pytest.mark.parametrize(
        "options", [{}, {"label_smoothing": 0.1, "z_loss": 0.01}, {"softcap": 5.0}]
    )
    def test_nan_and_minus_inf_rows(self, rng, kernel, reduction, n_classes, options):
        x = rng.normal(size=(6, n_classes))
        x[1] = np.nan
        x[3] = -np.inf
        x[4, :2] = np.nan
        t = np.array([0, -100, 2, -100, -100, 1])
        w = rng.uniform(0.5, 2.0, n_classes)
        with _path(kernel):
            loss, g = ce.value_and_grad(ce.cross_entropy)(x, t, w, reduction=reduction, **options)
        counted = t != -100
        # the oracle: the same call on the counted rows only
        sub = ce.cross_entropy(x[counted], t[counted], w, reduction="none", **options)
        ref = torch.from_numpy(x[counted]).requires_grad_()
        cap = options.get("softcap")
        logits = ref if cap is None else cap * torch.tanh(ref / cap)
        rows = F.cross_entropy(
            logits, torch.from_numpy(t[counted]), torch.from_numpy(w), reduction="none",
            label_smoothing=options.get("label_smoothing", 0.0),
        )  # fmt: skip
        if options.get("z_loss"):
            rows = rows + options["z_loss"] * torch.logsumexp(logits, 1) ** 2
        assert_close(sub, rows.detach().numpy(), rtol=1e-12)
        if reduction == "none":
            assert np.all(loss[~counted] == 0)
            assert_close(loss[counted], rows.detach().numpy(), rtol=1e-12)
        else:
            total = rows.sum() if reduction == "sum" else rows.sum() / w[t[counted]].sum()
            assert_close(loss, total.item(), rtol=1e-12)
        assert np.all(g[~counted] == 0)
        assert np.all(np.isfinite(g))

    def test_vocab_parallel_single_rank(self):
        import torch.distributed as dist

        from crossentropy.distributed import vocab_parallel_cross_entropy

        x = torch.randn(4, 5, dtype=torch.float64)
        x[1] = float("nan")
        x[2] = -float("inf")
        t = torch.tensor([0, -100, -100, 4])
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            xs = x.clone().requires_grad_()
            loss = vocab_parallel_cross_entropy(xs, t)
            loss.backward()
        finally:
            dist.destroy_process_group()
        expected = F.cross_entropy(x[[0, 3]], t[[0, 3]])
        assert_close(loss.item(), expected.item(), rtol=1e-12)
        assert torch.all(xs.grad[1:3] == 0)


# -- item: empty class axes ---------------------------------------------------------------


class TestEmptyClassAxis:
    @pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
    def test_softmax_over_an_empty_axis(self, fn):
        x = np.zeros((5, 0, 0))
        out = getattr(ce, fn)(x, axis=1)
        assert out.shape == (5, 0, 0)
        assert tuple(getattr(F, fn)(torch.zeros(5, 0, 0), dim=1).shape) == out.shape
        assert ce.logsumexp(x, axis=1).shape == (5, 0)

    @PATHS
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_probability_targets_without_classes(self, kernel, reduction):
        x, p = np.zeros((2, 0)), np.zeros((2, 0))
        with _path(kernel):
            out = ce.cross_entropy(x, p, reduction=reduction)
            loss, (gx, gp) = ce.value_and_grad(ce.cross_entropy, (0, 1))(x, p, reduction=reduction)
        assert_close(out, torch_oracle("cross_entropy", x, p, reduction=reduction))
        assert gx.shape == gp.shape == (2, 0)

    def test_nll_loss_without_classes(self):
        x, t = np.zeros((2, 0)), np.array([-100, -100])
        for reduction in ("mean", "sum", "none"):
            assert_close(
                ce.nll_loss(x, t, reduction=reduction),
                torch_oracle("nll_loss", x, t, reduction=reduction),
            )


# -- item: kl_div with negative or NaN targets ------------------------------------------


class TestKlDivOutsideTheDomain:
    def test_negative_target_gives_nan(self):
        x, t = np.array([-1.0, -0.5, -2.0]), np.array([-2.0, 0.0, 0.3])
        expected = torch_oracle("kl_div", x, t, reduction="none")
        out = ce.kl_div(x, t, reduction="none")
        assert_close(out, expected)
        assert np.isnan(out[0]) and not np.isnan(out[2])

    def test_gradient_at_negative_or_nan_target_is_nan(self):
        x, t = np.array([-1.0, -1.0, -1.0, -1.0]), np.array([np.nan, -2.0, 0.0, 0.25])
        g = ce.grad(ce.kl_div, argnums=1)(x, t, reduction="sum")
        assert np.isnan(g[0]) and np.isnan(g[1])
        assert g[2] == 0  # exact zeros only: the documented 0 log 0 = 0 rule
        assert_close(g[3], np.log(0.25) + 1 + 1)


# -- item: 0-d inputs ------------------------------------------------------------------------


class TestScalars:
    @pytest.mark.parametrize("fn", ["softmax", "log_softmax", "logsumexp"])
    @pytest.mark.parametrize("value", [2.5, -np.inf])
    def test_as_torch_and_scipy(self, fn, value):
        x = np.asarray(value)
        ref = {"softmax": F.softmax, "log_softmax": F.log_softmax}.get(fn)
        expected = (
            ref(torch.tensor(value), dim=0) if ref else torch.logsumexp(torch.tensor(value), 0)
        )
        out = getattr(ce, fn)(x)
        assert out.shape == ()
        assert_close(out, expected.item())
        with np.errstate(all="ignore"):  # SciPy warns about -inf - (-inf)
            assert_close(out, getattr(scipy.special, fn)(x))

    def test_gradients_of_scalars(self):
        assert_close(ce.grad(ce.logsumexp)(np.asarray(2.5)), 1.0)
        assert_close(ce.grad(ce.log_softmax)(np.asarray(2.5)), 0.0)
        assert ce.grad(ce.softmax)(np.asarray(2.5)).shape == ()

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_multi_margin_loss_unbatched_input_with_a_batch_target(self, reduction):
        # torch's own samples: input (C,), target (1,)
        x, t = np.array([0.1, 0.2, 0.4, 0.8]), np.array([3])
        out = ce.multi_margin_loss(x, t, reduction=reduction)
        expected = torch_oracle("multi_margin_loss", x, t, reduction=reduction)
        assert_close(out, expected)
        xt = torch.tensor(x, requires_grad=True)
        F.multi_margin_loss(xt, torch.from_numpy(t), reduction=reduction).sum().backward()
        assert_close(ce.grad(ce.multi_margin_loss)(x, t, reduction=reduction), xt.grad.numpy())


# -- item: info with broadcast distributions -----------------------------------------------


class TestBroadcastDistributions:
    @pytest.mark.parametrize("fn", [info.cross_entropy, info.kl_divergence, info.js_divergence])
    def test_gradient_has_the_arguments_shape(self, rng, fn):
        p = rng.dirichlet(np.ones(4), size=3)  # (3, 4)
        q = rng.dirichlet(np.ones(4))  # (4,), broadcast over the 3 rows
        value, (gp, gq) = ce.value_and_grad(fn, (0, 1))(p, q)
        assert gp.shape == (3, 4) and gq.shape == (4,)
        assert_close(gq, finite_difference(lambda z: fn(p, z), q), rtol=1e-6, atol=1e-8)
        assert_close(gp, finite_difference(lambda z: fn(z, q), p), rtol=1e-6, atol=1e-8)
        q2 = rng.dirichlet(np.ones(4), size=(1,))  # (1, 4)
        g2 = ce.grad(fn, 1)(p, q2)
        assert g2.shape == (1, 4)
        assert_close(g2, finite_difference(lambda z: fn(p, z), q2), rtol=1e-6, atol=1e-8)

    def test_length_one_vector_is_not_a_distribution_of_two(self):
        # once: kl_divergence([.5, .5], [1.0]) broadcast q to [1, 1] and returned -0.693
        with pytest.raises(ValueError, match="must have the same length along axis=-1"):
            info.kl_divergence([0.5, 0.5], [1.0])
        with pytest.raises(ValueError, match="got 2 and 1"):
            info.cross_entropy([0.5, 0.5], [1.0])


# -- item: logsumexp far below the maximum -------------------------------------------------


class TestLogsumexpPrecision:
    @PATHS
    @pytest.mark.parametrize("dtype", ["float64", "float32"])
    def test_terms_below_rounding(self, kernel, dtype):
        # SciPy's gh-18295: log1p of the non-maximal terms' sum
        small = np.array([0.0, -40.0], dtype)
        rtol = 1e-6 if dtype == "float32" else 1e-13
        expected = scipy.special.logsumexp(small.astype(np.float64))  # 4.248e-18, not 0
        assert_close(ce.logsumexp(small), expected, rtol=rtol, atol=0)
        big = np.full((3, 20000), -45.0, dtype)  # past the kernel's size threshold
        big[:, 0] = [0.0, 0.0, 1.0]
        big[1, 1] = 0.0  # a tie for the max
        with _path(kernel):
            out = ce.logsumexp(big, axis=-1)
        expected = scipy.special.logsumexp(big.astype(np.float64), axis=-1)
        assert_close(out, expected, rtol=100 * rtol, atol=0)  # a sum of 20000 terms
        assert out[0] > 0

    def test_special_cases_kept(self):
        x = np.array([[-np.inf, -np.inf], [np.inf, 0.0], [np.nan, 0.0], [3.0, 3.0]])
        assert_close(ce.logsumexp(x), torch.logsumexp(torch.from_numpy(x), 1).numpy())


# -- class indices that cannot be checked: inside jax.jit ----------------------------------


class TestOutOfRangeUnderJit:
    """Inside ``jax.jit`` the values cannot be read, so nothing can raise: an index
    out of range gives NaN for its row (once: -3 wrapped around and picked class 0)."""

    @pytest.mark.parametrize("fn", [ce.cross_entropy, ce.nll_loss, ce.multi_margin_loss])
    def test_nan_rows(self, fn):
        jax = pytest.importorskip("jax")
        with jax_x64():
            x = jax.numpy.asarray(np.log([[0.2, 0.3, 0.5]] * 4))
            t = jax.numpy.asarray([2, 5, -3, -100])
            out = np.asarray(jax.jit(lambda a, b: fn(a, b, reduction="none"))(x, t))
            assert np.all(np.isnan(out[1:3])) and not np.isnan(out[0])
            alone = fn(np.asarray(x)[:1], np.array([2]), reduction="none")
            assert_close(out[0], np.asarray(alone)[0])
            # 'sum': NaN gradient rows for the bad indices only
            g = np.asarray(jax.jit(jax.grad(lambda a: fn(a, t, reduction="sum")))(x))
            bad = [1, 2, 3] if fn is ce.multi_margin_loss else [1, 2]  # no ignore_index there
            good = [r for r in range(4) if r not in bad]
            assert np.isnan(g[bad]).any(axis=-1).all() and np.isfinite(g[good]).all()
            # 'mean': NaN, and NaN in the bad rows' gradients (in every row's where the
            # mean divides by the weights' sum): a step with a bad label cannot go unnoticed
            value, g = jax.jit(jax.value_and_grad(fn))(x, t)
            assert np.isnan(float(value)) and np.isnan(np.asarray(g)[bad]).any(axis=-1).all()
            with pytest.raises(ce.TargetIndexError, match="Target 5 is out of bounds"):
                fn(x, t)  # outside jit the check runs
