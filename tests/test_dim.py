"""``dim=``, PyTorch's name for ``axis=``, on every function and class that takes an axis."""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import info, nn
from tests.support import assert_close

torch = pytest.importorskip("torch")


def _probs(rng, shape, axis):
    p = rng.uniform(0.05, 1.0, size=shape)
    return p / p.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_special_functions_take_dim_like_torch(xp, rng, dim):
    x = rng.normal(0, 2.0, size=(3, 4))
    t = torch.from_numpy(x)
    cases = [
        (ce.softmax, torch.softmax(t, dim=dim)),
        (ce.log_softmax, torch.log_softmax(t, dim=dim)),
        (ce.logsumexp, torch.logsumexp(t, dim=dim)),
    ]
    for fn, expected in cases:
        out = fn(xp.asarray(x), dim=dim)
        assert_close(out, expected.numpy(), backend=xp, dtype="float64")
        assert_close(out, xp.to_numpy(fn(xp.asarray(x), axis=dim)), rtol=0, atol=0)


@pytest.mark.parametrize("dim", [0, 1])
def test_info_functions_take_dim(rng, dim):
    p, q = _probs(rng, (3, 4), dim), _probs(rng, (3, 4), dim)
    expected_h = torch.distributions.Categorical(probs=torch.from_numpy(np.moveaxis(p, dim, -1)))
    assert_close(info.entropy(p, dim=dim), expected_h.entropy().numpy())
    assert_close(info.cross_entropy(p, q, dim=dim), -(p * np.log(q)).sum(axis=dim))
    assert_close(info.kl_divergence(p, q, dim=dim), (p * np.log(p / q)).sum(axis=dim))
    m = (p + q) / 2
    js = 0.5 * ((p * np.log(p / m)).sum(axis=dim) + (q * np.log(q / m)).sum(axis=dim))
    assert_close(info.js_divergence(p, q, dim=dim), js)
    assert_close(ce.entropy(p, dim=dim), info.entropy(p, axis=dim), rtol=0, atol=0)


def test_losses_take_dim(xp, rng):
    # (N, T, C) logits with the classes last: torch needs them moved to axis 1
    x = rng.normal(0, 1.5, size=(2, 3, 5))
    y = rng.integers(0, 5, size=(2, 3))
    tx, ty = torch.from_numpy(x).movedim(-1, 1), torch.from_numpy(y)
    expected = torch.nn.functional.cross_entropy(tx, ty, label_smoothing=0.1).numpy()
    out = ce.cross_entropy(xp.asarray(x), xp.asarray(y), label_smoothing=0.1, dim=-1)
    assert_close(out, expected, backend=xp, dtype="float64")
    logp = np.log(_probs(rng, (2, 3, 5), -1))
    expected = torch.nn.functional.nll_loss(torch.from_numpy(logp).movedim(-1, 1), ty).numpy()
    assert_close(ce.nll_loss(xp.asarray(logp), xp.asarray(y), dim=2), expected, backend=xp)
    assert_close(nn.CrossEntropyLoss(dim=-1)(x, y), ce.cross_entropy(x, y, axis=-1), rtol=0)
    assert_close(nn.NLLLoss(dim=2)(logp, y), ce.nll_loss(logp, y, axis=2), rtol=0)


def test_value_and_grad_passes_dim_to_the_rule(rng):
    x = rng.normal(size=(4, 3))
    y = rng.integers(0, 4, size=3)
    value, g = ce.value_and_grad(ce.cross_entropy)(x, y, dim=0)
    ref_value, ref_g = ce.value_and_grad(ce.cross_entropy)(x.T, y)
    assert_close(value, ref_value)
    assert_close(g, ref_g.T)
    p = _probs(rng, (4, 3), 0)
    _, gh = ce.value_and_grad(ce.entropy)(p, dim=0)
    assert_close(gh, -(np.log(p) + 1))
    _, gl = ce.value_and_grad(ce.logsumexp)(x, dim=0)
    assert_close(gl, ce.softmax(x, axis=0))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ce.softmax(x, 1, dim=1),
        lambda x: ce.log_softmax(x, axis=0, dim=1),
        lambda x: ce.logsumexp(x, -1, dim=-1),
        lambda x: ce.entropy(ce.softmax(x), axis=-1, dim=-1),
        lambda x: info.kl_divergence(ce.softmax(x), ce.softmax(x), axis=1, dim=0),
        lambda x: ce.cross_entropy(x, np.array([0, 1]), axis=1, dim=1),
        lambda x: ce.nll_loss(x, np.array([0, 1]), axis=1, dim=1),
        lambda x: nn.CrossEntropyLoss(axis=1, dim=1),
    ],
    ids=["softmax", "log_softmax", "logsumexp", "entropy", "kl", "ce", "nll", "module"],
)
def test_axis_and_dim_together_is_an_error(call):
    with pytest.raises(TypeError, match=r"got axis=-?\d and dim=-?\d: dim is PyTorch's name"):
        call(np.zeros((2, 3)))
