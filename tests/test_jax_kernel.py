"""The fused CPU kernel under ``jax.jit`` (an XLA FFI custom call) against the portable path.

The same jitted call runs twice, through the custom call and with the kernels
disabled (XLA's own loops over ``_core.softmax_ce``); values and gradients must
agree to rounding, the jaxpr must hold the custom call exactly when it should,
and an out-of-range class index must give NaN on both paths.  The ``'mean'``
the handler computes itself (PyTorch's weighted mean over the counted rows) is
checked against PyTorch in float64.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import crossentropy as ce
from crossentropy.kernels import native, xla
from tests.support import assert_close, jax_x64, torch_grad

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

pytestmark = pytest.mark.skipif(not xla.available(), reason="XLA handler not built")

N, C = 40, 600  # 24000 logits, 600 classes: the custom call applies (the rows kernel)
SMALL = 10  # classes of the columns kernel


def _fresh(fn):
    """``fn`` as a new function object: JAX caches traces per function, and the
    path (kernels enabled or not) is decided when a function is traced."""
    return lambda *args: fn(*args)


def _uses_kernel(fn, *args) -> bool:
    return "ffi_call" in str(jax.make_jaxpr(_fresh(fn))(*args))


def _both(fn, *args):
    """``(fused, portable)`` results of the jitted ``fn``; asserts which path each took."""
    assert _uses_kernel(fn, *args)
    fused = jax.jit(_fresh(fn))(*args)
    with native.disabled():
        assert not _uses_kernel(fn, *args)
        portable = jax.jit(_fresh(fn))(*args)
    return fused, portable


def _same(fused, portable, x64):
    tol = {"rtol": 1e-12, "atol": 1e-14} if x64 else {"rtol": 2e-6, "atol": 1e-7}
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(portable)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert_close(np.asarray(a), np.asarray(b), **tol)


CONFIGS = {
    "plain": {},
    "weight+ignore": {"weight": True, "ignore_index": 3},
    "smoothing": {"label_smoothing": 0.1},
    "z_loss+softcap": {"z_loss": 1e-3, "softcap": 5.0},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
}


@pytest.mark.parametrize("classes", [C, SMALL], ids=["rows", "columns"])
@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_class_indices(config, x64, classes, rng):
    kw = dict(CONFIGS[config])
    with jax_x64(x64):
        x = jnp.asarray(rng.normal(0, 3, (N, classes)))
        y = rng.integers(0, classes, N)
        if "ignore_index" in kw:
            y[::4] = kw["ignore_index"]
        y = jnp.asarray(y)
        if kw.pop("weight", False):
            kw["weight"] = jnp.asarray(rng.uniform(0.5, 2.0, classes))

        def f(x):
            return jnp.sum(ce.cross_entropy(x, y, **kw))

        _same(*_both(jax.value_and_grad(f), x), x64)
        _same(*_both(f, x), x64)


SHORT_CONFIGS = {
    "plain": {},
    "ignore": {"ignore_index": 3},
    "smoothing": {"label_smoothing": 0.1},
    "z_loss": {"z_loss": 1e-3},
    "sum": {"reduction": "sum"},
    "none": {"reduction": "none"},
}


@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
@pytest.mark.parametrize("config", list(SHORT_CONFIGS))
def test_short_rows(config, x64, rng):
    """Between SMALL_C and MIN_CLASSES classes, the calls of the kernel's short-row
    path take the custom call too."""
    kw = SHORT_CONFIGS[config]
    with jax_x64(x64):
        x = jnp.asarray(rng.normal(0, 3, (N, 100)))
        y = rng.integers(0, 100, N)
        y[::4] = kw.get("ignore_index", 0)
        y = jnp.asarray(y)

        def f(x):
            return jnp.sum(ce.cross_entropy(x, y, **kw))

        _same(*_both(jax.value_and_grad(f), x), x64)
        _same(*_both(f, x), x64)


def _entry(fn, *args) -> str:
    """The instructions of the compiled program's entry computation."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return text[text.index("\nENTRY") :]


#: (rows, classes): the rows kernel, the columns kernel, and enough rows that XLA
#: sums the handler's shares of the mean
SHAPES = {"rows": (N, C), "columns": (N, SMALL), "shares": (xla.ASYNC_ROWS + 3, SMALL)}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
def test_weighted_mean_is_pytorchs(x64, shape, rng):
    """The handler's ``'mean'``: the losses summed over the summed weights of the
    counted rows' classes, ignored rows counting for nothing; the gradient of
    that mean.  PyTorch in float64 is the oracle."""
    rows, classes = SHAPES[shape]
    x = rng.normal(0, 3, (rows, classes))
    y = rng.integers(0, classes, rows)
    y[::3] = -100
    w = rng.uniform(0.5, 2.0, classes)
    tol = {"rtol": 1e-12, "atol": 1e-15} if x64 else {"rtol": 2e-5, "atol": 1e-7}
    cases = [  # (target, weight, ignore_index): a class index ignored in the last one
        (y, None, -100),
        (y, w, -100),
        (np.where(y == -100, 2, y), w, 2),
    ]
    for target, weight, ignore in cases:
        kw = {"ignore_index": ignore} | ({} if weight is None else {"weight": weight})
        value, grad = torch_grad("cross_entropy", 0, x, target, **kw)
        with jax_x64(x64):
            if weight is not None:
                kw["weight"] = jnp.asarray(weight)
            fn = jax.value_and_grad(functools.partial(ce.cross_entropy, **kw))
            args = (jnp.asarray(x), jnp.asarray(target))
            assert _uses_kernel(fn, *args)
            ours = jax.jit(fn)(*args)
        assert ours[0].dtype == ours[1].dtype == (jnp.float64 if x64 else jnp.float32)
        assert_close(np.asarray(ours[0]), value, **tol)
        assert_close(np.asarray(ours[1]), grad, **tol)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_mean_of_no_counted_row_is_nan_with_a_zero_gradient(shape, rng):
    """Every row ignored: PyTorch's mean of nothing (0 / 0, NaN) and a zero gradient."""
    rows, classes = SHAPES[shape]
    x = rng.normal(0, 3, (rows, classes))
    y = np.full(rows, -100)
    value, grad = torch_grad("cross_entropy", 0, x, y)
    assert np.isnan(value) and not grad.any()
    with jax_x64(True):
        fn = jax.value_and_grad(lambda x: ce.cross_entropy(x, jnp.asarray(y)))
        assert _uses_kernel(fn, jnp.asarray(x))
        ours = jax.jit(fn)(jnp.asarray(x))
    assert np.isnan(float(ours[0]))
    assert_close(np.asarray(ours[1]), grad, rtol=0, atol=0)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weighted"])
def test_the_compiled_mean_is_the_custom_call_alone(weighted, shape, rng):
    """The denominator and the sum are the handler's: XLA runs no operation
    around the custom call (each one costs microseconds on small inputs); from
    ASYNC_ROWS rows on, XLA sums the handler's per-row shares of the mean, and
    nothing else."""
    rows, classes = SHAPES[shape]
    x = jnp.asarray(rng.normal(size=(rows, classes)), dtype=jnp.float32)
    y = jnp.asarray(rng.integers(0, classes, rows))
    w = jnp.asarray(rng.uniform(0.5, 2.0, classes), dtype=jnp.float32)
    args = (x, y, w) if weighted else (x, y)
    for fn in (ce.cross_entropy, jax.value_and_grad(ce.cross_entropy)):
        entry = _entry(fn, *args)
        assert entry.count("custom-call(") == 1 and xla.TARGET in entry
        operations = [op for op in entry.splitlines() if "fusion(" in op or " reduce(" in op]
        if shape == "shares":  # XLA's sum, in one or more steps
            assert operations and all("reduce" in op for op in operations), entry
        else:
            assert not operations, entry


def test_sum_over_many_rows_is_pytorchs(rng):
    """``'sum'`` from ASYNC_ROWS rows on: XLA sums the handler's per-row losses."""
    rows = xla.ASYNC_ROWS + 3
    x = rng.normal(0, 3, (rows, SMALL))
    y = rng.integers(0, SMALL, rows)
    y[::5] = -100
    value, grad = torch_grad("cross_entropy", 0, x, y, reduction="sum")
    with jax_x64(True):
        fn = jax.value_and_grad(functools.partial(ce.cross_entropy, reduction="sum"))
        ours = jax.jit(fn)(jnp.asarray(x), jnp.asarray(y))
    assert_close(np.asarray(ours[0]), value, rtol=1e-12)
    assert_close(np.asarray(ours[1]), grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("x64", [False, True], ids=["x64-off", "x64-on"])
def test_probabilities_and_their_gradient(x64, rng):
    with jax_x64(x64):
        x = jnp.asarray(rng.normal(0, 3, (N, C)))
        p = jnp.asarray(rng.dirichlet(np.ones(C), N))
        f = jax.value_and_grad(lambda x, p: ce.cross_entropy(x, p, label_smoothing=0.05), (0, 1))
        _same(*_both(f, x, p), x64)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_runs_on_the_float32_copy(dtype, rng):
    x = jnp.asarray(rng.normal(0, 3, (N, C)), dtype=getattr(jnp, dtype))
    y = jnp.asarray(rng.integers(0, C, N))
    fused, portable = _both(jax.value_and_grad(lambda x: ce.cross_entropy(x, y)), x)
    for a, b in zip(fused, portable):  # the same float32 numbers, rounded once
        assert a.dtype == b.dtype == x.dtype
        assert_close(
            np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=1e-2, atol=1e-6
        )


@pytest.mark.parametrize("shape_axis", [((4, C, 8), None), ((4, 8, C), -1)], ids=["K-dim", "axis"])
def test_other_class_axes(shape_axis, rng):
    shape, axis = shape_axis
    with jax_x64(True):
        x = jnp.asarray(rng.normal(size=shape))
        rows = shape[:1] + shape[2:] if axis is None else shape[:-1]
        y = jnp.asarray(rng.integers(0, C, rows))
        f = jax.value_and_grad(lambda x: ce.cross_entropy(x, y, axis=axis))
        _same(*_both(f, x), True)


def test_vmap_runs_the_kernel_per_example(rng):
    """``vmap`` batches the custom call (``vmap_method='broadcast_all'``): one
    kernel run per example, each with its own ``'mean'`` denominator."""
    with jax_x64(True):
        x = jnp.asarray(rng.normal(size=(3, N, C)))
        y = rng.integers(0, C, (3, N))
        y[1, :5] = -100  # a different denominator in the second example
        y = jnp.asarray(y)
        f = jax.vmap(jax.value_and_grad(lambda x, y: ce.cross_entropy(x, y)))
        fused, portable = _both(f, x, y)
        _same(fused, portable, True)
        one = jax.value_and_grad(lambda x: ce.cross_entropy(x, y[1]))(x[1])
        _same((fused[0][1], fused[1][1]), one, True)


def test_second_derivatives_differentiate_the_portable_formula(rng):
    """A Hessian-vector product of a function whose gradient is the custom
    call: its JVP is JAX's derivative of the portable formula."""
    with jax_x64(True):
        x = jnp.asarray(rng.normal(size=(N, C)))
        v = jnp.asarray(rng.normal(size=(N, C)))
        y = jnp.asarray(rng.integers(0, C, N))
        grad = jax.grad(lambda x: ce.cross_entropy(x, y, label_smoothing=0.1))
        assert _uses_kernel(grad, x)
        hvp = jax.jit(lambda x: jax.jvp(grad, (x,), (v,))[1])(x)
        p = jax.nn.softmax(x)  # the exact product: (diag(p) - p p^T) v per row, over N
        exact = (p * v - p * jnp.sum(p * v, axis=1, keepdims=True)) / N
        assert_close(np.asarray(hvp), np.asarray(exact), rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "portable"])
def test_out_of_range_class_index_under_jit_is_nan(fused, rng):
    """``jit`` cannot check the values: a row with an index outside [0, C)
    (not ignore_index) gets a NaN loss and gradient, never another row's data;
    eagerly the check raises."""
    x = jnp.asarray(rng.normal(size=(N, C)), dtype=jnp.float32)
    y = rng.integers(0, C, N)
    y[[3, 7]] = [C, -1]
    y[9] = -100
    y = jnp.asarray(y)
    f = jax.jit(jax.value_and_grad(lambda x: jnp.sum(ce.cross_entropy(x, y, reduction="none"))))
    g_rows = jax.jit(jax.grad(lambda x: ce.cross_entropy(x, y, reduction="sum")))
    losses = jax.jit(lambda x: ce.cross_entropy(x, y, reduction="none"))
    if fused:
        assert _uses_kernel(losses, x)
        out, g, per_row = f(x), g_rows(x), losses(x)
    else:
        with native.disabled():
            assert not _uses_kernel(losses, x)
            out, g, per_row = f(x), g_rows(x), losses(x)
    nan_rows = np.isnan(np.asarray(per_row))
    assert nan_rows.tolist() == [i in (3, 7) for i in range(N)]
    assert np.isnan(np.asarray(g)).any(axis=1).tolist() == nan_rows.tolist()
    assert np.isnan(np.asarray(g)[[3, 7]]).all() and float(per_row[9]) == 0
    assert np.isnan(float(out[0])) and np.isnan(float(jax.jit(ce.cross_entropy)(x, y)))
    with pytest.raises(ce.TargetIndexError, match=f"Target {C} is out of bounds"):
        ce.cross_entropy(x, y)


def test_small_inputs_stay_on_xla(rng):
    """Fewer than MIN_SIZE logits run XLA's loops, and so do rows of more than SMALL_C
    and fewer than MIN_CLASSES classes that the kernel's short-row path does not
    take (weights, probabilities, a soft cap); every other call takes the kernel."""
    y = jnp.asarray(rng.integers(0, 4, N))
    for classes in (4, xla.SMALL_C, xla.SMALL_C + 1, 100, xla.MIN_CLASSES - 1, xla.MIN_CLASSES):
        x = jnp.asarray(rng.normal(size=(N, classes)), dtype=jnp.float32)
        p = jax.nn.softmax(x)
        w = jnp.ones(classes, dtype=jnp.float32)
        assert _uses_kernel(jax.grad(lambda x: ce.cross_entropy(x, y)), x), classes
        general = xla.SMALL_C < classes < xla.MIN_CLASSES  # the kernel's general row path
        for other, args in (
            (lambda x, w: ce.cross_entropy(x, y, w), (x, w)),
            (lambda x, p: ce.cross_entropy(x, p), (x, p)),
            (lambda x: ce.cross_entropy(x, y, softcap=5.0), (x,)),
        ):
            assert _uses_kernel(jax.grad(other), *args) != general, classes
    rows = xla.MIN_SIZE // SMALL - 1  # below MIN_SIZE
    x = jnp.asarray(rng.normal(size=(rows, SMALL)), dtype=jnp.float32)
    assert not _uses_kernel(jax.grad(lambda x: ce.cross_entropy(x, y[:rows])), x)
    x = jnp.asarray(rng.normal(size=(1, xla.MIN_SIZE - 1)), dtype=jnp.float32)
    assert not _uses_kernel(jax.grad(lambda x: ce.cross_entropy(x, y[:1])), x)


def test_without_the_extension_the_portable_path_runs(monkeypatch, rng):
    x = jnp.asarray(rng.normal(size=(N, C)), dtype=jnp.float32)
    y = jnp.asarray(rng.integers(0, C, N))
    f = jax.value_and_grad(lambda x: ce.cross_entropy(x, y))
    expected = jax.jit(_fresh(f))(x)
    monkeypatch.setattr(xla, "_extension", lambda: None)
    assert not xla.available() and not _uses_kernel(f, x)
    _same(jax.jit(_fresh(f))(x), expected, False)


@pytest.mark.parametrize(
    ("platform", "custom_call"), [("cpu", True), ("cuda", False), ("tpu", False)]
)
def test_custom_call_only_on_cpu(platform, custom_call, rng):
    """Lowered for another platform, the same function has no custom call (the
    portable branch of ``platform_dependent``); this needs no such device."""
    x = jnp.asarray(rng.normal(size=(N, C)), dtype=jnp.float32)
    y = jnp.asarray(rng.integers(0, C, N))
    f = jax.jit(jax.value_and_grad(lambda x: ce.cross_entropy(x, y)))
    checks = [jax.export.DisabledSafetyCheck.custom_call(xla.TARGET)]
    exported = jax.export.export(f, platforms=[platform], disabled_checks=checks)(x)
    assert (xla.TARGET in exported.mlir_module()) == custom_call
