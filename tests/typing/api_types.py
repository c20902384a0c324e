"""The public types, checked by mypy (tests/test_typing.py); importing it runs the calls.

Each ``assert_type`` states what a type checker infers for a call (and the
call runs when the module is imported); each ``# type: ignore[...]`` in
:func:`rejected` marks a call that must be rejected (with
``warn_unused_ignores``, a call that stops being rejected fails the check).
"""

from __future__ import annotations

from typing import Any, assert_type

import jax
import numpy as np
import torch
from numpy.typing import NDArray

import crossentropy as ce
from crossentropy import info, kernels, metrics, nn
from crossentropy.typing import ArrayAPIArray, Reduction

x = np.zeros((4, 3))
y = np.array([0, 1, 2, 0])
t = torch.zeros(4, 3)
ty = torch.tensor([0, 1, 2, 0])
j = jax.numpy.zeros((4, 3))
p = np.full(3, 1 / 3)
ND = NDArray[Any]

# -- array in, the same library out --------------------------------------------------

assert_type(ce.cross_entropy(x, y), ND)
assert_type(ce.cross_entropy(t, ty), torch.Tensor)
assert_type(ce.cross_entropy(t, y), torch.Tensor)  # NumPy labels with tensor logits
assert_type(ce.cross_entropy(j, y), jax.Array)
assert_type(ce.cross_entropy([[1.0, 2.0]], [0]), ND)  # nested lists: NumPy
assert_type(ce.cross_entropy(torch.nn.Parameter(t), ty), torch.Tensor)
assert_type(ce.nll_loss(x, y, reduction="sum"), ND)
assert_type(ce.binary_cross_entropy(t, t), torch.Tensor)
assert_type(ce.binary_cross_entropy_with_logits(x, x, pos_weight=np.ones(3)), ND)
assert_type(ce.sigmoid_focal_loss(t, t), torch.Tensor)
assert_type(ce.focal_cross_entropy(x, y), ND)
assert_type(ce.poly1_cross_entropy(t, ty), torch.Tensor)
assert_type(ce.generalized_cross_entropy(x, y), ND)
assert_type(ce.kl_div(t, t, reduction="batchmean"), torch.Tensor)
assert_type(ce.generalized_kl_div(x, x), ND)
assert_type(ce.mse_loss(t, t), torch.Tensor)
assert_type(ce.hinge_loss(np.array([0.5, -2.0]), np.array([1.0, -1.0])), ND)
assert_type(ce.squared_hinge_loss(t[:, 0], torch.ones(4)), torch.Tensor)
assert_type(ce.multi_margin_loss(x, y), ND)
assert_type(ce.multiclass_hinge_loss(t, ty), torch.Tensor)
assert_type(ce.linear_cross_entropy(x, np.zeros((5, 3)), y), ND)
assert_type(ce.linear_cross_entropy(t, torch.zeros(5, 3), ty, linear_bias=None), torch.Tensor)

assert_type(ce.cross_entropy(t, ty, temperature=2.0, normalizer=8.0), torch.Tensor)
assert_type(ce.nll_loss(x, y, normalizer=4.0), ND)
W, hs = np.eye(3), np.zeros((4, 3))
assert_type(ce.linear_distillation_loss(hs, W, hs, W), ND)
assert_type(
    ce.linear_distillation_loss(t, torch.eye(3), t, torch.eye(3), divergence="jsd"), torch.Tensor
)
stats = ce.linear_cross_entropy_stats(hs, W, y)
assert_type(stats, ce.TokenStats[ND])
assert_type(stats.logprob, ND)
assert_type(ce.linear_cross_entropy_stats(t, torch.eye(3), ty).entropy, torch.Tensor)

assert_type(ce.softmax(x), ND)
assert_type(ce.log_softmax(t, dim=1), torch.Tensor)
assert_type(ce.sigmoid(j), jax.Array)
assert_type(ce.log_sigmoid(2.0), ND)
assert_type(ce.logsumexp(t), torch.Tensor)
assert_type(ce.logsumexp(x, axis=1, return_sign=True), tuple[ND, ND])
assert_type(ce.looks_like_probabilities(x), bool)

assert_type(ce.entropy(p), ND)
assert_type(info.entropy(t, base=2), torch.Tensor)
assert_type(info.information(p), ND)
assert_type(info.cross_entropy(t, t), torch.Tensor)
assert_type(info.kl_divergence(p, p), ND)
assert_type(info.js_divergence(t, t, dim=-1), torch.Tensor)


def any_in(a: Any) -> None:
    assert_type(ce.cross_entropy(a, y), Any)  # an untyped argument stays untyped


def other_library(a: ArrayAPIArray) -> None:
    assert_type(ce.softmax(a), ArrayAPIArray)  # CuPy, Dask, array-api-strict, ...


# -- gradients -----------------------------------------------------------------------

assert_type(ce.value_and_grad(ce.cross_entropy)(x, y), tuple[ND, ND])
assert_type(ce.value_and_grad(ce.cross_entropy)(t, ty), tuple[torch.Tensor, torch.Tensor])
assert_type(
    ce.value_and_grad(ce.binary_cross_entropy, (0, 1))(t, t),
    tuple[torch.Tensor, tuple[torch.Tensor, ...]],
)
assert_type(ce.grad(ce.mse_loss)(x, x), ND)
assert_type(ce.grad(ce.kl_div, argnums=(0, 1))(x, x), tuple[ND, ...])
value, vjp_fn = ce.vjp(ce.softmax, t)
assert_type(value, torch.Tensor)
assert_type(vjp_fn(t), torch.Tensor)
assert_type(ce.vjp(ce.kl_div, x, x, argnums=(0, 1))[1](np.array(1.0)), tuple[ND, ...])

# -- reductions ----------------------------------------------------------------------

nn.KLDivLoss(reduction="batchmean")
how: Reduction = "sum"
ce.cross_entropy(x, y, reduction=how)
# -- loss objects --------------------------------------------------------------------

assert_type(nn.CrossEntropyLoss(label_smoothing=0.1)(x, y), ND)
assert_type(nn.NLLLoss()(t, ty), torch.Tensor)
assert_type(nn.BCELoss()(x, x), ND)
assert_type(nn.BCEWithLogitsLoss(pos_weight=t)(t, t), torch.Tensor)
assert_type(nn.KLDivLoss()(x, x), ND)
assert_type(nn.MSELoss()(t, t), torch.Tensor)
assert_type(nn.MultiMarginLoss()(x, y), ND)
assert_type(nn.HingeLoss()(t[:, 0], torch.ones(4)), torch.Tensor)
assert_type(nn.Softmax(dim=1)(x), ND)
assert_type(nn.LogSoftmax()(t), torch.Tensor)

# -- metrics and kernels -------------------------------------------------------------

assert_type(metrics.log_loss(x, y), float)
assert_type(metrics.accuracy(t.softmax(1), ty, from_="probs"), float)
assert_type(metrics.reliability_diagram(x, y), metrics.Reliability)
assert_type(metrics.LogLoss().update(x, y), metrics.LogLoss)
assert_type(metrics.update_from_hidden(metrics.Accuracy(), hs, W, y), metrics.Accuracy)
assert_type(
    metrics.update_from_hidden([metrics.LogLoss(), metrics.Accuracy()], hs, W, y),
    list[metrics.Metric[float]],
)
assert_type(metrics.LogLoss().update(x, y).compute(), float)
assert_type(metrics.PerClass().update(x, y).compute(), dict[str, np.ndarray])

assert_type(kernels.cross_entropy_value_and_grad(x, y), tuple[ND, ND])
assert_type(
    kernels.cross_entropy_value_and_grad(t, ty, overwrite_input=True),
    tuple[torch.Tensor, torch.Tensor],
)
assert_type(kernels.available(), bool)
assert_type(kernels.get_num_threads(), int)


def vocab_parallel() -> None:  # never called: it needs a process group
    from crossentropy import distributed

    assert_type(distributed.vocab_parallel_cross_entropy(t, ty), torch.Tensor)
    assert_type(
        distributed.vocab_parallel_linear_cross_entropy(t, torch.eye(3), ty, reduction="sum"),
        torch.Tensor,
    )


def settings() -> None:  # never called: it would change the threads of every later call
    kernels.set_num_threads(2)
    kernels.set_num_threads(None)


# -- what must be rejected (never called: each call would raise) ---------------------


def rejected() -> None:
    any_string: str = "mean"
    ce.value_and_grad(ce.cross_entropy)(x, y, reduction="avg")  # type: ignore[arg-type]
    ce.cross_entropy(x, y, reduction="avg")  # type: ignore[arg-type]
    ce.mse_loss(t, t, reduction="batchmean")  # type: ignore[arg-type]
    ce.linear_cross_entropy(x, x, y, reduction="avg")  # type: ignore[arg-type]
    ce.kl_div(x, x, reduction="avg")  # type: ignore[arg-type]
    nn.CrossEntropyLoss(reduction="avg")  # type: ignore[arg-type]
    ce.cross_entropy(x, y, reduction=any_string)  # type: ignore[arg-type]
    metrics.log_loss(x, y, from_="softmax")  # type: ignore[arg-type]
    ce.linear_distillation_loss(hs, W, hs, W, divergence="js")  # type: ignore[arg-type]
