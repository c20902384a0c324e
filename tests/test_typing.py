"""The types: mypy passes on the package and on tests/typing/, and the types tell the truth.

mypy's settings (the files it checks, its strictness) are in ``pyproject.toml``;
``tests/typing/api_types.py`` states with ``assert_type`` what a type checker
infers for the public calls.  The run-time tests below check the same claims
on real arrays: what the types say comes out is what comes out.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import info, kernels, metrics, nn
from crossentropy.typing import KLReduction, Reduction

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_passes_on_the_package_and_the_typing_tests(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "--no-color-output"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("Success: no issues found"), run.stdout


def test_the_typing_tests_are_checked():
    """pyproject's mypy files include tests/typing, where a regression must fail."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert "tests/typing" in config["files"]
    assert config["warn_unused_ignores"] and config["disallow_untyped_defs"]
    text = (ROOT / "tests" / "typing" / "api_types.py").read_text()
    assert text.count("assert_type(") > 60 and text.count("# type: ignore[arg-type]") >= 8


def test_reductions_are_the_ones_the_functions_accept():
    assert typing.get_args(Reduction) == ("none", "mean", "sum")
    assert set(typing.get_args(KLReduction)) == {"none", "mean", "sum", "batchmean"}
    x, y = np.array([[1.0, 2.0, 0.5]]), np.array([2])
    for r in typing.get_args(Reduction):
        ce.cross_entropy(x, y, reduction=r)
    for r in typing.get_args(KLReduction):
        ce.kl_div(np.log(x / x.sum()), x / x.sum(), reduction=r)
    with pytest.raises(
        ValueError, match="reduction must be one of 'none', 'mean', 'sum', got 'avg'"
    ):
        ce.cross_entropy(x, y, reduction="avg")  # type: ignore[arg-type]


def _calls(xp, rng):
    """``(name, result)`` of each array-valued public function on ``xp``'s arrays:
    its result must be an array of ``xp``'s library (what ``ArrayT`` says)."""
    x = xp.asarray(rng.normal(size=(4, 3)))
    p = xp.asarray(np.full((4, 3), 1 / 3))
    y = xp.asarray(np.array([0, 2, 1, 0]))
    s = xp.asarray(rng.uniform(0.1, 0.9, size=(4, 3)))
    pm = xp.asarray(np.array([1.0, -1.0, 1.0, -1.0]))
    w = xp.asarray(rng.normal(size=(5, 3)))
    yield "cross_entropy", ce.cross_entropy(x, y)
    yield "cross_entropy sum", ce.cross_entropy(x, y, reduction="sum")
    yield "nll_loss", ce.nll_loss(x, y)
    yield "binary_cross_entropy", ce.binary_cross_entropy(s, s)
    yield "binary_cross_entropy_with_logits", ce.binary_cross_entropy_with_logits(x, s)
    yield "sigmoid_focal_loss", ce.sigmoid_focal_loss(x, s)
    yield "focal_cross_entropy", ce.focal_cross_entropy(x, y)
    yield "poly1_cross_entropy", ce.poly1_cross_entropy(x, y)
    yield "generalized_cross_entropy", ce.generalized_cross_entropy(x, y)
    yield "kl_div", ce.kl_div(xp.log(p), p, reduction="batchmean")
    yield "generalized_kl_div", ce.generalized_kl_div(s, s)
    yield "mse_loss", ce.mse_loss(x, s)
    yield "hinge_loss", ce.hinge_loss(pm, pm)
    yield "squared_hinge_loss", ce.squared_hinge_loss(pm, pm)
    yield "multi_margin_loss", ce.multi_margin_loss(x, y)
    yield "multiclass_hinge_loss", ce.multiclass_hinge_loss(x, y)
    yield "linear_cross_entropy", ce.linear_cross_entropy(x, w, y)
    yield "cross_entropy normalizer", ce.cross_entropy(x, y, temperature=2.0, normalizer=8.0)
    yield "linear_distillation_loss", ce.linear_distillation_loss(x, w, x, w)
    stats = ce.linear_cross_entropy_stats(x, w, y)
    for field in dataclasses.fields(stats):
        yield f"TokenStats.{field.name}", getattr(stats, field.name)
    yield "softmax", ce.softmax(x)
    yield "log_softmax", ce.log_softmax(x, dim=1)
    yield "sigmoid", ce.sigmoid(x)
    yield "log_sigmoid", ce.log_sigmoid(x)
    yield "logsumexp", ce.logsumexp(x)
    yield from zip(("logsumexp value", "logsumexp sign"), ce.logsumexp(x, return_sign=True))
    yield "info.information", info.information(p)
    yield "entropy of one vector", ce.entropy(p[0])
    yield "info.entropy", info.entropy(p)
    yield "info.cross_entropy", info.cross_entropy(p[0], p[0])
    yield "info.kl_divergence", info.kl_divergence(p[0], p[0])
    yield "info.js_divergence", info.js_divergence(p[0], p[0])
    yield "value_and_grad value", ce.value_and_grad(ce.cross_entropy)(x, y)[0]
    yield "value_and_grad gradient", ce.value_and_grad(ce.cross_entropy)(x, y)[1]
    yield from zip(("grad 0", "grad 1"), ce.grad(ce.mse_loss, (0, 1))(x, s))
    value, vjp_fn = ce.vjp(ce.softmax, x)
    yield "vjp value", value
    yield "vjp gradient", vjp_fn(x)
    yield "nn.CrossEntropyLoss", nn.CrossEntropyLoss()(x, y)
    yield "nn.KLDivLoss", nn.KLDivLoss()(xp.log(p), p)
    yield "nn.Softmax", nn.Softmax(dim=1)(x)
    yield from zip(("kernel value", "kernel gradient"), kernels.cross_entropy_value_and_grad(x, y))


def test_numpy_in_gives_ndarray_out(rng):
    for name, result in _calls(np, rng):
        assert type(result) is np.ndarray, f"{name}: {type(result)}"


def test_array_likes_give_ndarray_out():
    for result in (
        ce.cross_entropy([[1.0, 2.0]], [0]),
        ce.softmax([1.0, 2.0]),
        ce.sigmoid(0.5),
        ce.entropy([0.5, 0.5]),
        info.information(np.float64(0.5)),
        ce.logsumexp(np.float32(1.0)),
    ):
        assert type(result) is np.ndarray


def test_torch_in_gives_tensor_out(rng):
    torch = pytest.importorskip("torch")
    for name, result in _calls(torch, rng):
        assert type(result) is torch.Tensor, f"{name}: {type(result)}"


def test_jax_in_gives_jax_array_out(rng):
    jax = pytest.importorskip("jax")
    for name, result in _calls(jax.numpy, rng):
        assert isinstance(result, jax.Array), f"{name}: {type(result)}"


def test_metrics_return_what_their_types_say(rng):
    x, y = rng.normal(size=(6, 3)), np.array([0, 1, 2, 0, 1, 2])
    assert type(metrics.log_loss(x, y)) is float
    assert type(metrics.LogLoss().update(x, y).compute()) is float
    per_class = metrics.PerClass().update(x, y).compute()
    assert all(type(v) is np.ndarray for v in per_class.values())
    assert type(metrics.reliability_diagram(x, y)) is metrics.Reliability
