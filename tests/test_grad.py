"""The ``value_and_grad`` / ``grad`` API: argnums, errors, keywords, backends, and a tiny training loop."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from tests.support import assert_close, finite_difference, torch_grad


def _logits(rng, shape=(4, 3)):
    return rng.normal(0, 1.5, size=shape)


def _probs(rng, shape=(4, 3)):
    p = rng.uniform(0.05, 1.0, size=shape)
    return p / p.sum(axis=-1, keepdims=True)


# (function, argnums, make(rng) -> (args, kwargs)): one call of every differentiable function
CALLS = {
    "cross_entropy": (
        ce.cross_entropy,
        0,
        lambda r: (
            (_logits(r), np.array([0, 2, 1, 2])),
            {"weight": np.array([0.5, 1.0, 2.0]), "label_smoothing": 0.1},
        ),
    ),
    "cross_entropy-probs": (
        ce.cross_entropy,
        (0, 1),
        lambda r: ((_logits(r), _probs(r)), {"reduction": "sum"}),
    ),
    "nll_loss": (ce.nll_loss, 0, lambda r: ((np.log(_probs(r)), np.array([1, 0, 2, 1])), {})),
    "binary_cross_entropy": (
        ce.binary_cross_entropy,
        (0, 1),
        lambda r: ((r.uniform(0.1, 0.9, (3, 2)), r.uniform(0, 1, (3, 2))), {}),
    ),
    "binary_cross_entropy_with_logits": (
        ce.binary_cross_entropy_with_logits,
        (0, 1),
        lambda r: (
            (_logits(r, (3, 2)), r.uniform(0, 1, (3, 2))),
            {"pos_weight": np.array([2.0, 0.5])},
        ),
    ),
    "kl_div": (
        ce.kl_div,
        (0, 1),
        lambda r: ((np.log(_probs(r)), _probs(r)), {"reduction": "batchmean"}),
    ),
    "mse_loss": (ce.mse_loss, (0, 1), lambda r: ((_logits(r), _logits(r)), {})),
    "multi_margin_loss": (
        ce.multi_margin_loss,
        0,
        lambda r: ((_logits(r), np.array([0, 2, 1, 2])), {"p": 2}),
    ),
    "hinge_loss": (
        ce.hinge_loss,
        0,
        lambda r: ((_logits(r), r.choice([-1.0, 1.0], size=(4, 3))), {"reduction": "sum"}),
    ),
    "logsumexp": (ce.logsumexp, 0, lambda r: ((_logits(r),), {"axis": 1})),
    "info.entropy": (ce.info.entropy, 0, lambda r: ((_probs(r),), {})),
    "info.cross_entropy": (ce.info.cross_entropy, (0, 1), lambda r: ((_probs(r), _probs(r)), {})),
    "info.kl_divergence": (ce.info.kl_divergence, (0, 1), lambda r: ((_probs(r), _probs(r)), {})),
}


def _on(xp, args, kwargs):
    conv = [xp.asarray(a) for a in args]
    kw = {k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    return conv, kw


@pytest.mark.parametrize("name", list(CALLS))
def test_value_is_exactly_the_function_value(xp, rng, name):
    fn, argnums, make = CALLS[name]
    args, kwargs = _on(xp, *make(rng))
    value, g = ce.value_and_grad(fn, argnums)(*args, **kwargs)
    plain = fn(*args, **kwargs)
    assert xp.owns(value) and value.dtype == plain.dtype and value.shape == plain.shape
    np.testing.assert_array_equal(xp.to_numpy(value), xp.to_numpy(plain))
    grads = (g,) if isinstance(argnums, int) else g
    nums = (argnums,) if isinstance(argnums, int) else argnums
    assert len(grads) == len(nums)
    for i, gi in zip(nums, grads):
        assert xp.owns(gi) and gi.shape == args[i].shape and gi.dtype == args[i].dtype


@pytest.mark.parametrize("name", list(CALLS))
def test_gradient_vs_finite_differences(rng, name):
    fn, argnums, make = CALLS[name]
    args, kwargs = make(rng)
    nums = (argnums,) if isinstance(argnums, int) else argnums
    grads = ce.grad(fn, nums)(*args, **kwargs)
    for i, gi in zip(nums, grads):

        def f(a, i=i):
            return fn(*[a if j == i else x for j, x in enumerate(args)], **kwargs)

        np.testing.assert_allclose(gi, finite_difference(f, args[i]), rtol=1e-6, atol=1e-8)


def test_int_argnums_gives_an_array_tuple_gives_a_tuple(rng):
    x, t = _logits(rng), _logits(rng)
    _, g = ce.value_and_grad(ce.mse_loss)(x, t)
    assert isinstance(g, np.ndarray) and g.shape == x.shape
    _, g1 = ce.value_and_grad(ce.mse_loss, (0,))(x, t)
    assert isinstance(g1, tuple) and len(g1) == 1
    np.testing.assert_array_equal(g1[0], g)
    _, (gx, gt) = ce.value_and_grad(ce.mse_loss, (0, 1))(x, t)
    np.testing.assert_array_equal(gx, g)
    np.testing.assert_array_equal(gt, -g)  # d/dt (x - t)^2 = -d/dx
    _, (gt2, gx2) = ce.value_and_grad(ce.mse_loss, [1, 0])(x, t)  # order as asked
    np.testing.assert_array_equal(gt2, gt)
    np.testing.assert_array_equal(gx2, gx)
    np.testing.assert_allclose(g, 2 * (x - t) / x.size, rtol=1e-15)


def test_negative_argnums_count_from_the_last_positional_parameter(rng):
    # mse_loss(input, target, reduction): -3 is input, -2 is target
    x, t = _logits(rng), _logits(rng)
    _, (gx, gt) = ce.value_and_grad(ce.mse_loss, (0, 1))(x, t)
    np.testing.assert_array_equal(ce.grad(ce.mse_loss, -3)(x, t), gx)
    np.testing.assert_array_equal(ce.grad(ce.mse_loss, -2)(x, t), gt)
    g = ce.grad(ce.cross_entropy, -6)(x, np.array([0, 1, 2, 0]))  # input of six
    np.testing.assert_array_equal(g, ce.grad(ce.cross_entropy)(x, np.array([0, 1, 2, 0])))
    with pytest.raises(ValueError, match="not differentiable.*'reduction'"):
        ce.value_and_grad(ce.mse_loss, -1)


def test_grad_returns_only_the_gradient(rng):
    x, y = _logits(rng), np.array([0, 2, 1, 2])
    g = ce.grad(ce.cross_entropy)(x, y)
    value, expected = ce.value_and_grad(ce.cross_entropy)(x, y)
    np.testing.assert_array_equal(g, expected)
    assert isinstance(g, np.ndarray) and g.shape == x.shape
    gs = ce.grad(ce.kl_div, (0, 1))(np.log(_probs(rng)), _probs(rng))
    assert isinstance(gs, tuple) and len(gs) == 2
    assert ce.grad(ce.cross_entropy).__name__ == "cross_entropy"


@pytest.mark.parametrize(
    "fn",
    [lambda x: (x**2).sum(), np.sum, ce.looks_like_probabilities],
)
def test_function_without_rule(fn):
    with pytest.raises(ValueError, match="has no gradient rule") as info:
        ce.value_and_grad(fn)
    message = str(info.value)
    for name in (
        "cross_entropy",
        "nll_loss",
        "binary_cross_entropy",
        "kl_div",
        "mse_loss",
        "logsumexp",
    ):
        assert name in message
    with pytest.raises(ValueError, match="has no gradient rule"):
        ce.grad(fn)


@pytest.mark.parametrize(
    ("fn", "argnums", "name"),
    [
        (ce.nll_loss, 1, "target"),
        (ce.nll_loss, 2, "weight"),
        (ce.cross_entropy, 2, "weight"),
        (ce.cross_entropy, (0, 3), "ignore_index"),
        (ce.binary_cross_entropy, 2, "weight"),
        (ce.binary_cross_entropy_with_logits, 4, "pos_weight"),
        (ce.multi_margin_loss, 1, "target"),
        (ce.hinge_loss, 1, "target"),
        (ce.kl_div, 2, "reduction"),
    ],
)
def test_non_differentiable_argument(fn, argnums, name):
    with pytest.raises(ValueError, match=rf"{fn.__name__} is not differentiable .* '{name}'"):
        ce.value_and_grad(fn, argnums)


def test_cross_entropy_target_needs_probabilities(rng):
    vg = ce.value_and_grad(ce.cross_entropy, 1)  # fine for probability targets ...
    with pytest.raises(ValueError, match="only for class probabilities.*not class indices"):
        vg(_logits(rng), np.array([0, 2, 1, 2]))  # ... not for class indices
    _, g = vg(_logits(rng), _probs(rng))
    assert g.shape == (4, 3)


@pytest.mark.parametrize("argnums", [3, -4, 17, (0, 5), (1, -9)])
def test_argnums_out_of_range(argnums):
    with pytest.raises(ValueError, match=r"argnums=.*mse_loss has 3 positional arguments"):
        ce.value_and_grad(ce.mse_loss, argnums)


def test_empty_argnums():
    with pytest.raises(ValueError, match="at least one"):
        ce.value_and_grad(ce.mse_loss, ())


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_keywords_pass_through(xp, rng, reduction):
    x, y = _logits(rng, (5, 4)), np.array([0, 3, -100, 1, 3])
    w = np.array([0.5, 1.0, 2.0, 1.5])
    kwargs = {"weight": w, "reduction": reduction, "label_smoothing": 0.2, "ignore_index": -100}
    value, g = ce.value_and_grad(ce.cross_entropy)(
        xp.asarray(x), xp.asarray(y), **{**kwargs, "weight": xp.asarray(w)}
    )
    ev, eg = torch_grad("cross_entropy", 0, x, y, **kwargs)
    assert_close(value, ev, backend=xp, dtype="float64")
    assert_close(g, eg, backend=xp, dtype="float64")


def test_keyword_only_options_pass_through(rng):
    # z_loss and softcap are ours: check against finite differences of the function itself
    x, y = _logits(rng), np.array([0, 2, 1, 2])
    kw = {"z_loss": 1e-2, "softcap": 2.0, "axis": 1}
    value, g = ce.value_and_grad(ce.cross_entropy)(x, y, **kw)
    assert float(value) == float(ce.cross_entropy(x, y, **kw))
    assert float(value) != float(ce.cross_entropy(x, y))
    np.testing.assert_allclose(
        g, finite_difference(lambda a: ce.cross_entropy(a, y, **kw), x), rtol=1e-6, atol=1e-9
    )


def test_torch_tensors_give_torch_gradients(rng):
    torch = pytest.importorskip("torch")
    x, y = _logits(rng), np.array([0, 2, 1, 2])
    xt = torch.tensor(x, requires_grad=True)
    value, g = ce.value_and_grad(ce.cross_entropy)(xt, torch.from_numpy(y), label_smoothing=0.1)
    assert isinstance(g, torch.Tensor) and g.dtype == torch.float64 and g.shape == xt.shape
    # the analytic gradient equals autograd through the same function
    value.backward()
    np.testing.assert_allclose(g.detach().numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    _, expected = torch_grad("cross_entropy", 0, x, y, label_smoothing=0.1)
    np.testing.assert_allclose(g.detach().numpy(), expected, rtol=1e-9)
    # float32 tensors and a NumPy target stay float32 tensors
    g32 = ce.grad(ce.cross_entropy)(torch.tensor(x, dtype=torch.float32), y)
    assert isinstance(g32, torch.Tensor) and g32.dtype == torch.float32


def test_array_api_strict_gives_strict_gradients(rng):
    xps = pytest.importorskip("array_api_strict")
    x, t = _logits(rng), _probs(rng)
    value, (gx, gt) = ce.value_and_grad(ce.cross_entropy, (0, 1))(xps.asarray(x), xps.asarray(t))
    for a in (value, gx, gt):
        assert type(a).__module__.startswith("array_api_strict") and a.dtype == xps.float64
    _, (ex, et) = ce.value_and_grad(ce.cross_entropy, (0, 1))(x, t)
    np.testing.assert_allclose(np.asarray(gx._array), ex, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(gt._array), et, rtol=1e-15)


def test_train_softmax_regression_by_gradient_descent():
    """Two separable clusters, a linear layer, 100 steps of plain gradient descent in NumPy."""
    rng = np.random.default_rng(0)
    n = 40
    X = np.concatenate([rng.normal(-1.0, 0.4, (n, 2)), rng.normal(1.0, 0.4, (n, 2))])
    y = np.repeat([0, 1], n)
    W, b = np.zeros((2, 2)), np.zeros(2)
    vg = ce.value_and_grad(ce.cross_entropy)

    # the chain rule by hand, once against finite differences on W
    _, dlogits = vg(X @ W + b, y)
    dW = X.T @ dlogits
    np.testing.assert_allclose(
        dW, finite_difference(lambda w: ce.cross_entropy(X @ w + b, y), W), rtol=1e-6, atol=1e-9
    )

    losses = []
    for _ in range(100):
        loss, dlogits = vg(X @ W + b, y)
        losses.append(float(loss))
        W -= 0.1 * (X.T @ dlogits)
        b -= 0.1 * dlogits.sum(axis=0)
    final = float(ce.cross_entropy(X @ W + b, y))
    assert losses[0] == pytest.approx(np.log(2))  # zero weights: uniform prediction
    assert final < 0.1
    assert all(a >= b for a, b in zip(losses, losses[1:]))
    accuracy = np.mean(np.argmax(X @ W + b, axis=1) == y)
    assert accuracy == 1.0
