"""``vjp``: vector-Jacobian products of every function with a rule, and
``value_and_grad`` of non-scalar outputs (the gradient of their sum).

Oracles: ``torch.autograd.grad(y, x, grad_outputs=v)`` in float64 and central
finite differences of ``sum(v * f(x))``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import info
from tests.support import assert_close, finite_difference

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_vjp(fn: Any, args: list, argnum: int, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(value, v^T d value / d args[argnum])`` of the torch function ``fn``, float64."""
    ts = [torch.tensor(a, requires_grad=(i == argnum)) if isinstance(a, np.ndarray)
          and a.dtype.kind == "f" else (torch.from_numpy(a) if isinstance(a, np.ndarray) else a)
          for i, a in enumerate(args)]  # fmt: skip
    y = fn(*ts)
    (g,) = torch.autograd.grad(y, ts[argnum], grad_outputs=torch.as_tensor(v, dtype=y.dtype))
    return y.detach().numpy(), g.numpy()


def _fd_vjp(f: Any, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return finite_difference(lambda z: v * f(z), x)


def _check(fn, args: list, argnum: int, torch_fn: Any, rng, kwargs=None, rtol=1e-9) -> None:
    kwargs = kwargs or {}
    value, vjp_fn = ce.vjp(fn, *args, argnums=argnum, **kwargs)
    v = rng.normal(size=np.shape(value))
    g = vjp_fn(v)
    assert g.shape == np.shape(args[argnum])
    ref_value, ref_g = _torch_vjp(torch_fn, args, argnum, v)
    assert_close(value, ref_value, rtol=1e-12)
    assert_close(g, ref_g, rtol=rtol, atol=1e-12)

    def f(z: np.ndarray) -> Any:
        call = list(args)
        call[argnum] = z
        return fn(*call, **kwargs)

    assert_close(g, _fd_vjp(f, args[argnum], v), rtol=1e-5, atol=1e-7)


class TestSoftmaxFamily:
    @pytest.mark.parametrize(
        ("shape", "axis"), [((5,), -1), ((3, 4), 1), ((3, 4, 2), 1), ((2, 3), 0)]
    )
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    def test_against_torch(self, rng, shape, axis, name):
        x = rng.normal(scale=2.0, size=shape)
        fn = getattr(ce, name)
        _check(fn, [x], 0, lambda t: getattr(F, name)(t, dim=axis), rng, {"axis": axis})

    @pytest.mark.parametrize(("axis", "keepdims"), [(-1, False), (0, True), ((0, 2), False)])
    def test_logsumexp(self, rng, axis, keepdims):
        x = rng.normal(size=(3, 4, 2))
        dims = axis if isinstance(axis, tuple) else (axis,)
        _check(ce.logsumexp, [x], 0, lambda t: torch.logsumexp(t, dims, keepdims), rng,
               {"axis": axis, "keepdims": keepdims})  # fmt: skip

    def test_logsumexp_kernel_path(self, rng):
        x = rng.normal(size=(4, 5000))  # large enough for the fused kernel
        _check(ce.logsumexp, [x], 0, lambda t: torch.logsumexp(t, -1), rng, {"axis": -1})

    @pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid"])
    def test_elementwise(self, rng, name):
        x = rng.normal(scale=4.0, size=(3, 5))
        x[0, 0], x[0, 1] = 40.0, -40.0  # where 1 - sigmoid(x) cancels
        ref = torch.sigmoid if name == "sigmoid" else F.logsigmoid
        _check(getattr(ce, name), [x], 0, ref, rng)

    def test_value_and_grad_is_the_gradient_of_the_sum(self, rng):
        x = rng.normal(size=(3, 4))
        value, g = ce.value_and_grad(ce.softmax)(x)
        assert_close(value, F.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-12)
        assert_close(g, np.zeros_like(x), atol=1e-15)  # every row sums to 1
        value, g = ce.value_and_grad(ce.log_softmax)(x)
        assert_close(g, 1 - 4 * np.exp(value), rtol=1e-12)
        value, g = ce.value_and_grad(ce.sigmoid)(x)
        assert_close(g, value * (1 - value), rtol=1e-12)
        assert_close(ce.grad(ce.log_sigmoid)(x), 1 - value, rtol=1e-12)


def _t_entropy(p):
    return -(torch.special.xlogy(p, p)).sum(-1)


def _t_cross_entropy(p, q):
    return -(p * torch.log(q)).sum(-1)


def _t_kl(p, q):
    return (torch.special.xlogy(p, p) - p * torch.log(q)).sum(-1)


def _t_js(p, q):
    m = (p + q) / 2
    return (_t_kl(p, m) + _t_kl(q, m)) / 2


class TestInformation:
    @pytest.mark.parametrize(
        ("name", "torch_fn"),
        [("cross_entropy", _t_cross_entropy), ("kl_divergence", _t_kl), ("js_divergence", _t_js)],
    )
    @pytest.mark.parametrize("argnum", [0, 1])
    def test_two_distributions(self, rng, name, torch_fn, argnum):
        p = rng.dirichlet(np.ones(5), size=4)
        q = rng.dirichlet(np.ones(5), size=4)
        _check(getattr(info, name), [p, q], argnum, torch_fn, rng)

    def test_entropy_and_information(self, rng):
        p = rng.dirichlet(np.ones(5), size=4)
        _check(info.entropy, [p], 0, _t_entropy, rng)
        _check(info.information, [p], 0, lambda t: -torch.log(t), rng)
        value, vjp_fn = ce.vjp(info.information, p, base=2)
        assert_close(vjp_fn(np.ones_like(p)), -1 / (p * np.log(2)), rtol=1e-12)

    def test_broadcast_argument(self, rng):
        p = rng.dirichlet(np.ones(3), size=4)
        q = rng.dirichlet(np.ones(3))
        value, vjp_fn = ce.vjp(info.kl_divergence, p, q, argnums=(0, 1))
        v = rng.normal(size=4)
        gp, gq = vjp_fn(v)
        assert gp.shape == (4, 3) and gq.shape == (3,)
        assert_close(gq, finite_difference(lambda z: v * info.kl_divergence(p, z), q), rtol=1e-6)

    def test_js_divergence_where_a_probability_is_zero(self):
        # dJS/dp_i = log(p_i / m_i) / 2: -inf where p_i = 0 < q_i, log(2) / 2 where both are 0
        p, q = np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.5, 0.5])
        gp = ce.grad(info.js_divergence)(p, q)
        assert_close(gp, [np.log(2) / 2, -np.inf, np.log(1 / 0.75) / 2], rtol=1e-12)


class TestLossesPerRow:
    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    @pytest.mark.parametrize("kernel", [True, False])
    def test_cross_entropy(self, rng, reduction, kernel):
        x = rng.normal(size=(6, 5, 2))
        t = rng.integers(0, 5, size=(6, 2))
        t[0, 0] = -100
        w = rng.uniform(0.5, 2.0, 5)
        kw = {"reduction": reduction, "label_smoothing": 0.1, "weight": w}
        ctx = ce.kernels.disabled() if not kernel else contextlib.nullcontext()
        with ctx:
            _check(ce.cross_entropy, [x, t], 0,
                   lambda a, b: F.cross_entropy(a, b, torch.from_numpy(w), reduction=reduction,
                                                label_smoothing=0.1), rng, kw)  # fmt: skip
        p = rng.dirichlet(np.ones(5), size=(6, 2)).transpose(0, 2, 1)
        for argnum in (0, 1):
            _check(ce.cross_entropy, [x, p], argnum,
                   lambda a, b: F.cross_entropy(a, b, reduction=reduction), rng,
                   {"reduction": reduction})  # fmt: skip

    @pytest.mark.parametrize(
        ("name", "make"),
        [
            ("nll_loss", lambda r: (np.log(r.dirichlet(np.ones(4), 5)), r.integers(0, 4, 5))),
            ("multi_margin_loss", lambda r: (r.normal(size=(5, 4)), r.integers(0, 4, 5))),
            ("binary_cross_entropy", lambda r: (r.uniform(0.05, 0.95, (5, 3)), r.uniform(0, 1, (5, 3)))),
            ("binary_cross_entropy_with_logits", lambda r: (r.normal(size=(5, 3)), r.uniform(0, 1, (5, 3)))),
            ("kl_div", lambda r: (np.log(r.dirichlet(np.ones(3), 5)), r.dirichlet(np.ones(3), 5))),
            ("mse_loss", lambda r: (r.normal(size=(5, 3)), r.normal(size=(5, 3)))),
        ],
    )  # fmt: skip
    def test_pytorch_losses(self, rng, name, make):
        x, t = make(rng)
        torch_fn = getattr(F, name)
        _check(getattr(ce, name), [x, t], 0, lambda a, b: torch_fn(a, b, reduction="none"), rng,
               {"reduction": "none"})  # fmt: skip

    def test_hinge_loss(self, rng):
        x, y = rng.normal(size=(6,)), rng.choice([-1.0, 1.0], size=6)
        value, vjp_fn = ce.vjp(ce.hinge_loss, x, y, reduction="none")
        v = rng.normal(size=6)
        expected = np.where(1 - y * x > 0, -y, 0.0) * v
        assert_close(vjp_fn(v), expected, rtol=1e-12)

    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    def test_linear_cross_entropy(self, rng, reduction):
        h, w = rng.normal(size=(7, 3)), rng.normal(size=(6, 3))
        t = rng.integers(0, 6, 7)
        t[2] = -100
        value, vjp_fn = ce.vjp(ce.linear_cross_entropy, h, w, t, argnums=(0, 1),
                               reduction=reduction, chunk_size=3)  # fmt: skip
        v = rng.normal(size=np.shape(value))
        gh, gw = vjp_fn(v)
        ht, wt = torch.tensor(h, requires_grad=True), torch.tensor(w, requires_grad=True)
        y = F.cross_entropy(ht @ wt.T, torch.from_numpy(t), reduction=reduction)
        rh, rw = torch.autograd.grad(y, (ht, wt), grad_outputs=torch.as_tensor(v))
        assert_close(gh, rh.numpy(), rtol=1e-10, atol=1e-13)
        assert_close(gw, rw.numpy(), rtol=1e-10, atol=1e-13)


class TestArguments:
    def test_cotangent_of_another_shape(self, rng):
        value, vjp_fn = ce.vjp(ce.softmax, rng.normal(size=(2, 3)))
        with pytest.raises(
            ValueError, match=r"cotangent must have the value's shape \(2, 3\), got \(3,\)"
        ):
            vjp_fn(np.ones(3))

    def test_function_without_rule(self):
        with pytest.raises(ValueError, match="has no gradient rule"):
            ce.vjp(np.sum, np.ones(3))

    def test_torch_tensors_and_a_numpy_cotangent(self, rng):
        x = torch.from_numpy(rng.normal(size=(2, 3)))
        value, vjp_fn = ce.vjp(ce.log_softmax, x)
        v = rng.normal(size=(2, 3))
        g = vjp_fn(v)
        assert isinstance(g, torch.Tensor)
        xr = x.clone().requires_grad_()
        (rg,) = torch.autograd.grad(F.log_softmax(xr, 1), xr, grad_outputs=torch.from_numpy(v))
        assert_close(g.numpy(), rg.numpy(), rtol=1e-12)


def _samples(rng: np.random.Generator) -> dict:
    """Arguments of every function with a rule, away from kinks, for each argument to check."""
    x = rng.normal(size=(4, 3))
    p = rng.dirichlet(np.ones(3), size=4)
    y = rng.integers(0, 3, 4)
    u = rng.uniform(0.1, 0.9, size=(4, 3))
    sign = np.where(rng.random((4, 3)) < 0.5, -1.0, 1.0)
    far = sign * rng.uniform(1.5, 3.0, size=(4, 3))  # hinge margins away from the kink
    none = {"reduction": "none"}
    return {
        "cross_entropy": [((x, y), none, 0), ((x, p), none, 1)],
        "nll_loss": [((np.log(p), y), none, 0)],
        "binary_cross_entropy": [((u, p), none, 0), ((u, p), none, 1)],
        "binary_cross_entropy_with_logits": [((x, p), none, 0), ((x, p), none, 1)],
        "sigmoid_focal_loss": [((x, np.round(p)), none, 0)],
        "focal_cross_entropy": [((x, y), none, 0)],
        "poly1_cross_entropy": [((x, y), none, 0)],
        "generalized_cross_entropy": [((x, y), none, 0)],
        "kl_div": [((np.log(p), u), none, 0), ((np.log(p), u), none, 1)],
        "generalized_kl_div": [((np.log(p), u), none, 0), ((np.log(p), u), none, 1)],
        "mse_loss": [((x, u), none, 0), ((x, u), none, 1)],
        "multi_margin_loss": [((x + 3 * np.eye(3)[y], y), none, 0)],
        "multiclass_hinge_loss": [((x, y), none, 0)],
        "hinge_loss": [((far, sign), none, 0)],
        "squared_hinge_loss": [((far / 4, sign), none, 0)],
        "linear_cross_entropy": [
            ((x, rng.normal(size=(5, 3)), rng.integers(0, 5, 4)), none, 1),
            ((x, rng.normal(size=(5, 3)), rng.dirichlet(np.ones(5), size=4)), none, 2),
            ((x, rng.normal(size=(5, 2, 3)), rng.integers(0, 5, (4, 2))), none, 0),
        ],
        "linear_distillation_loss": [
            ((x, rng.normal(size=(5, 3)), rng.normal(size=(4, 2)), rng.normal(size=(5, 2)),
              np.array([0, -100, 3, 1])), none | {"divergence": d, "temperature": 1.5}, a)
            for d, a in (("kl", 0), ("reverse_kl", 1), ("jsd", 0))
        ],  # fmt: skip
        "logsumexp": [((x,), {"axis": 0}, 0), ((x,), {"b": u}, 0)],
        "softmax": [((x,), {}, 0)],
        "log_softmax": [((x,), {"axis": 0}, 0)],
        "sigmoid": [((x,), {}, 0)],
        "log_sigmoid": [((x,), {}, 0)],
        "info.entropy": [((p,), {}, 0)],
        "info.information": [((p,), {}, 0)],
        "info.cross_entropy": [((p, p[::-1]), {}, 1)],
        "info.kl_divergence": [((p, p[::-1]), {}, 0)],
        "info.js_divergence": [((p, p[::-1]), {}, 1)],
    }


def test_every_rule_against_finite_differences(rng):
    """vjp of every function with a gradient rule: sum(v * f) differentiated numerically."""
    from crossentropy._core.rules import differentiable_functions

    samples = _samples(rng)
    names = {
        n.split(".")[-1] if not n.startswith("info.") else n for n in differentiable_functions()
    }
    names -= {"linear_cross_entropy_stats"}  # a TokenStats, not an array: see below
    assert names <= set(samples), names - set(samples)
    for name, calls in samples.items():
        fn = getattr(info, name[5:]) if name.startswith("info.") else getattr(ce, name)
        for args, kw, argnum in calls:
            value, vjp_fn = ce.vjp(fn, *args, argnums=argnum, **kw)
            v = rng.normal(size=np.shape(value))
            g = vjp_fn(v)

            def f(z, args=args, kw=kw, argnum=argnum, v=v, fn=fn):
                call = list(args)
                call[argnum] = z
                return v * fn(*call, **kw)

            fd = finite_difference(f, args[argnum])
            try:
                assert_close(g, fd, rtol=1e-5, atol=1e-7)
            except AssertionError as e:
                raise AssertionError(f"{name}, argument {argnum}, {kw}") from e


def test_a_value_that_is_not_an_array(rng):
    # linear_cross_entropy_stats returns a TokenStats: vjp says so; its loss has the
    # gradients of linear_cross_entropy, whose vjp is checked above
    h, w, t = rng.normal(size=(4, 3)), rng.normal(size=(5, 3)), rng.integers(0, 5, 4)
    with pytest.raises(ValueError, match="linear_cross_entropy_stats returned a TokenStats"):
        ce.vjp(ce.linear_cross_entropy_stats, h, w, t)
