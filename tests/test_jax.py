"""JAX as a backend: every loss under ``jit``, ``grad``, ``vmap`` and ``vmap(grad)``.

Each function runs with JAX's default (``jax_enable_x64`` off: float32 and
int32, no warning about a truncated int64) and with 64-bit types, and is
compared with the library's float64 NumPy result (itself checked against
PyTorch and finite differences in ``test_grad.py`` and the per-family tests)
and, where optax has the same loss, with optax (``CALLS`` from ``test_grad.py``
and the losses and options it does not hold).  ``jax.grad`` must use the
registered rule: ``make_jaxpr`` shows the ``custom_jvp_call`` and the gradient
has no pass of JAX's own differentiation of the max shift.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from tests.support import assert_close, finite_difference, jax_x64
from tests.test_grad import CALLS

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")

DRAWS = 3  # examples stacked for vmap


def _logits(r, shape=(4, 3)):
    return r.normal(0, 1.5, size=shape)


def _labels(r):
    return r.integers(0, 3, 4)


def _masked(r):
    """Logits, labels and a ``where=`` mask that keeps each row's label (else the loss is inf)."""
    y = _labels(r)
    return (_logits(r), y), {"where": (r.uniform(size=(4, 3)) > 0.4) | (np.arange(3) == y[:, None])}


# the losses CALLS (test_grad.py) does not hold, and options that change the path
MORE = {
    "cross_entropy-where": (ce.cross_entropy, 0, lambda r: _masked(r)),
    "cross_entropy-none-K-dim": (
        ce.cross_entropy,
        (0, 1),
        lambda r: (
            (_logits(r, (2, 3, 4)), r.dirichlet([1, 1, 1], (2, 4)).transpose(0, 2, 1)),
            {"reduction": "none", "z_loss": 0.01},
        ),
    ),  # fmt: skip
    "focal_cross_entropy": (ce.focal_cross_entropy, 0, lambda r: ((_logits(r), _labels(r)), {})),
    "poly1_cross_entropy": (ce.poly1_cross_entropy, 0, lambda r: ((_logits(r), _labels(r)), {})),
    "generalized_cross_entropy": (
        ce.generalized_cross_entropy,
        0,
        lambda r: ((_logits(r), _labels(r)), {"q": 0.5}),
    ),
    "sigmoid_focal_loss": (
        ce.sigmoid_focal_loss,
        0,
        lambda r: ((_logits(r), (r.uniform(size=(4, 3)) > 0.5) * 1.0), {}),
    ),
    "generalized_kl_div": (
        ce.generalized_kl_div,
        (0, 1),
        lambda r: ((_logits(r), r.uniform(0.1, 2.0, (4, 3))), {"reduction": "batchmean"}),
    ),
    "squared_hinge_loss": (
        ce.squared_hinge_loss,
        0,
        lambda r: ((_logits(r), r.choice([-1.0, 1.0], (4, 3))), {}),
    ),
    "multiclass_hinge_loss": (
        ce.multiclass_hinge_loss,
        0,
        lambda r: ((_logits(r), _labels(r)), {"p": 2, "weight": np.array([0.5, 1.0, 2.0])}),
    ),
    "logsumexp-b": (
        ce.logsumexp,
        0,
        lambda r: ((_logits(r),), {"axis": 1, "b": r.uniform(0.5, 2.0, (4, 3))}),
    ),
}
CASES = {**CALLS, **MORE}


@pytest.fixture(params=[False, True], ids=["x64-off", "x64-on"])
def x64(request: pytest.FixtureRequest):
    """JAX's default (32-bit) and 64-bit types, inside the test only."""
    with jax_x64(request.param):
        yield request.param


def _tolerance(x64: bool) -> dict:
    return {"rtol": 1e-11, "atol": 1e-12} if x64 else {"rtol": 2e-5, "atol": 2e-6}


def _jax(a, x64):
    """A NumPy array as JAX's (float32 and int32 without x64, as JAX itself converts)."""
    out = jnp.asarray(a)
    expected = {
        "f": jnp.float64 if x64 else jnp.float32,
        "i": jnp.int64 if x64 else jnp.int32,
        "b": jnp.bool_,
    }
    assert out.dtype == expected[np.asarray(a).dtype.kind]
    return out


def _call(name, rng, x64):
    """``(fn, nums, numpy args, jax args, kwargs for jax)`` of one entry of CALLS."""
    fn, argnums, make = CASES[name]
    args, kwargs = make(rng)
    nums = (argnums,) if isinstance(argnums, int) else argnums
    jkw = {k: _jax(v, x64) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    return fn, nums, args, kwargs, [_jax(a, x64) for a in args], jkw


def _summed(fn, kwargs):
    """The sum of ``fn``'s values (a scalar for ``jax.grad``; ``ce.grad``'s convention)."""
    return lambda *a: jnp.sum(fn(*a, **kwargs))


def _numpy_grads(fn, nums, args, kwargs):
    return ce.grad(fn, nums)(*args, **kwargs)


# -- every loss, every transformation ------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_jit_value(name, rng, x64):
    fn, _, args, kwargs, jargs, jkw = _call(name, rng, x64)
    value = jax.jit(lambda *a: fn(*a, **jkw))(*jargs)
    assert value.dtype == (jnp.float64 if x64 else jnp.float32)
    assert_close(np.asarray(value), fn(*args, **kwargs), **_tolerance(x64))


@pytest.mark.parametrize("name", list(CASES))
def test_grad_under_jit(name, rng, x64):
    fn, nums, args, kwargs, jargs, jkw = _call(name, rng, x64)
    grads = jax.jit(jax.grad(_summed(fn, jkw), argnums=nums))(*jargs)
    for i, g, expected in zip(nums, grads, _numpy_grads(fn, nums, args, kwargs)):
        assert g.shape == args[i].shape and g.dtype == jargs[i].dtype
        assert_close(np.asarray(g), expected, **_tolerance(x64))


@pytest.mark.parametrize("name", list(CASES))
def test_eager_grad_matches_finite_differences(name, rng):
    with jax_x64(True):
        fn, nums, args, kwargs, jargs, jkw = _call(name, rng, True)
        grads = jax.grad(_summed(fn, jkw), argnums=nums)(*jargs)
    for i, g in zip(nums, grads):

        def f(a, i=i):
            return fn(*[a if j == i else x for j, x in enumerate(args)], **kwargs)

        assert_close(np.asarray(g), finite_difference(f, args[i]), rtol=1e-6, atol=1e-8)


def _stacked(name, rng, x64):
    """``DRAWS`` independent calls of one entry, stacked for ``jax.vmap``."""
    calls = [_call(name, rng, x64) for _ in range(DRAWS)]
    fn, nums, _, kwargs, _, jkw = calls[0]
    numpy_args = [c[2] for c in calls]
    batched = [jnp.stack([c[4][k] for c in calls]) for k in range(len(numpy_args[0]))]
    return fn, nums, numpy_args, kwargs, batched, jkw


@pytest.mark.parametrize("name", list(CASES))
def test_vmap(name, rng, x64):
    fn, _, numpy_args, kwargs, batched, jkw = _stacked(name, rng, x64)
    values = jax.jit(jax.vmap(lambda *a: fn(*a, **jkw)))(*batched)
    expected = np.stack([fn(*args, **kwargs) for args in numpy_args])
    assert_close(np.asarray(values), expected, **_tolerance(x64))


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_grad(name, rng, x64):
    fn, nums, numpy_args, kwargs, batched, jkw = _stacked(name, rng, x64)
    grads = jax.jit(jax.vmap(jax.grad(_summed(fn, jkw), argnums=nums)))(*batched)
    for k, g in enumerate(grads):
        expected = np.stack([_numpy_grads(fn, nums, args, kwargs)[k] for args in numpy_args])
        assert_close(np.asarray(g), expected, **_tolerance(x64))


@pytest.mark.parametrize("name", list(CASES))
def test_jaxpr_shows_the_rule(name, rng):
    with jax_x64(False):
        fn, nums, _, _, jargs, jkw = _call(name, rng, False)
        jaxpr = str(jax.make_jaxpr(lambda *a: fn(*a, **jkw))(*jargs))
    assert f"name={fn.__name__}" in jaxpr and f"jvp={fn.__name__}_rule" in jaxpr
    assert "custom_jvp_call" in jaxpr


def _tie_passes(jaxpr, n_classes):
    """Comparisons of float logits with their max: JAX's derivative of ``max``."""
    return [
        e
        for e in jaxpr.eqns
        if e.primitive.name == "eq"
        and tuple(e.invars[0].aval.shape)[-1:] == (n_classes,)
        and jnp.issubdtype(e.invars[0].aval.dtype, jnp.floating)
    ]


def test_gradient_is_the_rule_not_jax_differentiating_the_max(rng):
    """The jaxpr of the gradient holds one max (the forward's shift) and no
    pass comparing every logit with it, which JAX's differentiation of the
    same formula without the rule has."""
    x = jnp.asarray(rng.normal(size=(8, 5)), dtype=jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, 8), dtype=jnp.int32)
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: ce.cross_entropy(x, y)))(x).jaxpr
    assert len([e for e in jaxpr.eqns if e.primitive.name == "reduce_max"]) == 1
    assert not _tie_passes(jaxpr, 5)

    def naive(x):
        m = jnp.max(x, axis=1, keepdims=True)
        lse = jnp.log(jnp.sum(jnp.exp(x - m), axis=1)) + m[:, 0]
        return jnp.mean(lse - jnp.take_along_axis(x, y[:, None], 1)[:, 0])

    assert _tie_passes(jax.make_jaxpr(jax.grad(naive))(x).jaxpr, 5)


def test_x64_is_off_outside_the_tests_that_switch_it_on():
    """``jax_enable_x64`` is process-global: a test module that switched it on
    for good (instead of a context) would leave every later test of JAX's
    default running in 64 bits."""
    assert not jax.config.jax_enable_x64


def test_no_int64_warning_with_jax_defaults():
    """The call that used to warn about int64 truncation (warnings are errors here)."""
    with jax_x64(False):
        value = ce.cross_entropy(jnp.ones((2, 3)), jnp.array([0, 1]))
        assert value.dtype == jnp.float32
        np.testing.assert_allclose(float(value), np.log(3), rtol=1e-6)
        value = jax.jit(ce.cross_entropy)(jnp.ones((2, 3)), np.array([0, 1]))  # int64 NumPy
        np.testing.assert_allclose(float(value), np.log(3), rtol=1e-6)


def test_forward_mode_and_hessian_use_the_rule(rng):
    """``jax.jvp``, ``jacfwd`` and ``hessian`` (forward over reverse) work: the
    rule is a custom JVP, so JAX differentiates the gradient it computes."""
    with jax_x64(True):
        x = jnp.asarray(rng.normal(size=(3, 4)))
        y = jnp.asarray(rng.integers(0, 4, 3))
        ours = lambda x: ce.cross_entropy(x, y, label_smoothing=0.2)  # noqa: E731
        theirs = lambda x: optax.losses.softmax_cross_entropy(  # noqa: E731
            x, optax.smooth_labels(jax.nn.one_hot(y, 4), 0.2)
        ).mean()
        v = jnp.asarray(rng.normal(size=(3, 4)))
        assert_close(np.asarray(jax.jvp(ours, (x,), (v,))[1]), jax.jvp(theirs, (x,), (v,))[1])
        assert_close(np.asarray(jax.jacfwd(ours)(x)), jax.jacfwd(theirs)(x))
        assert_close(np.asarray(jax.hessian(ours)(x)), jax.hessian(theirs)(x), atol=1e-14)


def test_per_row_values_contract_along_the_class_axis(rng):
    """``reduction='none'``: the Jacobian is each row's own gradient, also with
    the class axis elsewhere (K-dim input) or given by ``axis``."""
    with jax_x64(True):
        x = rng.normal(size=(2, 4, 3))
        y = rng.integers(0, 4, (2, 3))
        jac = jax.jacrev(lambda a: ce.cross_entropy(a, jnp.asarray(y), reduction="none"))
        j = np.asarray(jac(jnp.asarray(x)))
        xt = np.moveaxis(x, 1, -1)  # (2, 3, 4): the same rows with the classes last
        for n in range(2):
            for d in range(3):
                p = np.exp(xt[n, d] - xt[n, d].max())
                expected = np.zeros((2, 4, 3))
                expected[n, :, d] = p / p.sum() - np.eye(4)[y[n, d]]
                assert_close(j[n, d], expected)
        jac_last = jax.jacrev(
            lambda a: ce.cross_entropy(a, jnp.asarray(y), reduction="none", axis=-1)
        )(jnp.asarray(xt))
        assert_close(np.asarray(jac_last), np.swapaxes(j, 3, 4))


def _cube_calls(r):
    """Per-value functions of a (2, 3, 3) array, where removing axis 1 or 2 gives
    the same shape: only the right axis gives the right Jacobian."""
    x = r.normal(size=(2, 3, 3))
    p = r.dirichlet([1, 1, 1], (2, 3))
    y = r.integers(0, 3, (2, 3))
    return {
        "logsumexp": (ce.logsumexp, x, {}),
        "logsumexp-dim": (ce.logsumexp, x, {"dim": 1}),
        "info.entropy": (ce.info.entropy, p, {}),
        "cross_entropy": (ce.cross_entropy, x, {"target": y, "reduction": "none"}),
        "cross_entropy-dim": (ce.cross_entropy, x, {"target": y, "reduction": "none", "dim": -1}),
    }


@pytest.mark.parametrize("name", list(_cube_calls(np.random.default_rng(0))))
def test_per_value_jacobian_sums_over_the_right_axis(name, rng):
    """Each value's row of the Jacobian (``jacrev``) is the rule's gradient on
    its own slice: the class axis by default for losses, the last axis for
    ``logsumexp`` and ``info``, and ``axis``/``dim`` when given."""
    fn, a, kw = _cube_calls(rng)[name]
    with jax_x64(True):
        jkw = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        jac = np.asarray(jax.jacrev(lambda v: fn(v, **jkw))(jnp.asarray(a)))
    flat = fn(a, **kw).reshape(-1)
    expected = np.stack(
        [finite_difference(lambda v, i=i: fn(v, **kw).reshape(-1)[i], a) for i in range(flat.size)]
    ).reshape(jac.shape)
    assert_close(jac, expected, rtol=1e-6, atol=1e-8)


def test_arguments_without_a_rule_are_differentiated_by_jax(rng):
    """Class weights have no analytic rule: JAX differentiates the forward, and
    a per-row value against a distribution shared by the rows too."""
    with jax_x64(True):
        x, y = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.integers(0, 3, 5))
        w = jnp.asarray(rng.uniform(0.5, 2.0, 3))

        def naive(x, w):
            logp = jax.nn.log_softmax(x)
            picked = -jnp.take_along_axis(logp, y[:, None], 1)[:, 0] * w[y]
            return jnp.sum(picked) / jnp.sum(w[y])

        ours = jax.grad(lambda x, w: ce.cross_entropy(x, y, w), argnums=(0, 1))(x, w)
        for a, b in zip(ours, jax.grad(naive, argnums=(0, 1))(x, w)):
            assert_close(np.asarray(a), b)
        p, q = jnp.asarray([0.2, 0.3, 0.5]), jnp.asarray(rng.dirichlet([1, 1, 1], 4))
        jac = jax.jacrev(lambda p: ce.info.cross_entropy(p, q))(p)
        assert_close(np.asarray(jac), -np.log(np.asarray(q)))


# -- against optax -------------------------------------------------------------------


def _optax_pairs(n_classes):
    """(name, ours, optax's, make(rng) -> args): the same mean loss twice."""
    smooth = lambda y: optax.smooth_labels(jax.nn.one_hot(y, n_classes), 0.1)  # noqa: E731
    probs = lambda r, s: r.dirichlet(np.ones(n_classes), s)  # noqa: E731
    return [
        (
            "indices",
            lambda x, y: ce.cross_entropy(x, y),
            lambda x, y: optax.losses.softmax_cross_entropy_with_integer_labels(x, y).mean(),
            lambda r, s: (r.normal(size=(s, n_classes)), r.integers(0, n_classes, s)),
        ),
        (
            "smoothing",
            lambda x, y: ce.cross_entropy(x, y, label_smoothing=0.1),
            lambda x, y: optax.losses.softmax_cross_entropy(x, smooth(y)).mean(),
            lambda r, s: (r.normal(size=(s, n_classes)), r.integers(0, n_classes, s)),
        ),
        (
            "probabilities",
            lambda x, p: ce.cross_entropy(x, p),
            lambda x, p: optax.losses.softmax_cross_entropy(x, p).mean(),
            lambda r, s: (r.normal(size=(s, n_classes)), probs(r, s)),
        ),
        (
            "bce",
            lambda x, t: ce.binary_cross_entropy_with_logits(x, t),
            lambda x, t: optax.losses.sigmoid_binary_cross_entropy(x, t).mean(),
            lambda r, s: (r.normal(size=(s, n_classes)), r.uniform(size=(s, n_classes))),
        ),
        (
            "kl_div",
            lambda x, p: ce.kl_div(x, p, reduction="batchmean"),
            lambda x, p: optax.losses.kl_divergence(x, p).mean(),
            lambda r, s: (np.log(probs(r, s)), probs(r, s)),
        ),
        (
            "mse",
            lambda x, t: ce.mse_loss(x, t),
            lambda x, t: optax.losses.squared_error(x, t).mean(),
            lambda r, s: (r.normal(size=(s, n_classes)), r.normal(size=(s, n_classes))),
        ),
        (
            "hinge",
            lambda x, t: ce.hinge_loss(x, t),
            lambda x, t: optax.losses.hinge_loss(x, t).mean(),
            lambda r, s: (r.normal(size=(s, n_classes)), r.choice([-1.0, 1.0], (s, n_classes))),
        ),
    ]


OPTAX_CASES = [(name, c) for c in (7, 600) for name, *_ in _optax_pairs(c)]


@pytest.mark.parametrize(("name", "n_classes"), OPTAX_CASES)
def test_against_optax(name, n_classes, rng, x64):
    """Values, gradients (under ``jit``) and per-example gradients (``vmap(grad)``)
    equal optax's; 600 classes take the fused kernel on CPU where it is built."""
    _, ours, theirs, make = next(p for p in _optax_pairs(n_classes) if p[0] == name)
    args = [jnp.asarray(a) for a in make(rng, 40)]
    tol = {"rtol": 1e-10, "atol": 1e-13} if x64 else {"rtol": 2e-5, "atol": 1e-7}
    nums = (0, 1) if jnp.issubdtype(args[1].dtype, jnp.floating) else 0
    mine = jax.jit(jax.value_and_grad(ours, argnums=nums))(*args)
    their = jax.value_and_grad(theirs, argnums=nums)(*args)
    for u, v in zip(jax.tree.leaves(mine), jax.tree.leaves(their)):
        assert_close(np.asarray(u), np.asarray(v), **tol)
    mine = jax.jit(jax.vmap(jax.grad(lambda x, t: ours(x[None], t[None]))))(*args)
    their = jax.vmap(jax.grad(lambda x, t: theirs(x[None], t[None])))(*args)
    assert_close(np.asarray(mine), np.asarray(their), **tol)


@pytest.mark.parametrize("axis", [0, 1, (0, 1)])
def test_logsumexp_against_jax(axis, rng, x64):
    x = jnp.asarray(rng.normal(size=(4, 6)) * 30)
    ours = jax.jit(jax.value_and_grad(lambda a: ce.logsumexp(a, axis=axis).sum()))(x)
    theirs = jax.value_and_grad(lambda a: jax.nn.logsumexp(a, axis=axis).sum())(x)
    for a, b in zip(ours, theirs):
        assert_close(np.asarray(a), np.asarray(b), **_tolerance(x64))


def test_logsumexp_with_sign_falls_back_to_jax(rng, x64):
    """``return_sign=True`` returns two arrays: JAX differentiates the forward."""
    from jax.scipy.special import logsumexp

    x = jnp.asarray(rng.normal(size=(4, 6)))
    b = jnp.asarray(rng.uniform(-1.0, 2.0, (4, 6)))
    ours = jax.jit(jax.grad(lambda a: ce.logsumexp(a, axis=1, b=b, return_sign=True)[0].sum()))
    theirs = jax.grad(lambda a: logsumexp(a, axis=1, b=b, return_sign=True)[0].sum())
    assert_close(np.asarray(ours(x)), np.asarray(theirs(x)), **_tolerance(x64))
