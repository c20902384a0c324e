"""The PyTorch-style classes of ``crossentropy.nn`` against their functions and ``torch.nn``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import nn
from tests.support import assert_close

torch = pytest.importorskip("torch")


def _logits(rng, shape=(4, 5)):
    return rng.normal(0, 1.5, size=shape)


def _labels(rng, n=4, c=5):
    return rng.integers(0, c, size=n)


def _probs(rng, shape=(4, 5)):
    p = rng.uniform(0.05, 1.0, size=shape)
    return p / p.sum(axis=-1, keepdims=True)


def _log_probs(rng, shape=(4, 5)):
    return np.log(_probs(rng, shape))


# '<class>-<what>' -> (constructor options, inputs(rng)); torch.nn has a class of the same name
CASES = {
    "CrossEntropyLoss-default": ({}, lambda r: (_logits(r), _labels(r))),
    "CrossEntropyLoss-all-options": (
        {
            "weight": np.array([0.5, 1.0, 2.0, 1.5, 0.3]),
            "ignore_index": 1,
            "reduction": "sum",
            "label_smoothing": 0.1,
        },
        lambda r: (_logits(r, (6, 5)), np.array([0, 1, 2, 3, 4, 1])),
    ),
    "CrossEntropyLoss-none-kdim": (
        {"reduction": "none", "label_smoothing": 0.2},
        lambda r: (_logits(r, (2, 5, 3)), r.integers(0, 5, size=(2, 3))),
    ),
    "CrossEntropyLoss-probabilities": (
        {"weight": np.array([0.5, 1.0, 2.0, 1.5, 0.3]), "label_smoothing": 0.05},
        lambda r: (_logits(r), _probs(r)),
    ),
    "CrossEntropyLoss-ignored": (
        {"weight": np.array([0.5, 1.0, 2.0, 1.5, 0.3])},
        lambda r: (_logits(r), np.array([3, -100, 0, 4])),
    ),
    "NLLLoss-default": ({}, lambda r: (_log_probs(r), _labels(r))),
    "NLLLoss-options": (
        {"weight": np.array([1.0, 2.0, 0.5, 1.0, 3.0]), "ignore_index": 2, "reduction": "none"},
        lambda r: (_log_probs(r), np.array([2, 0, 4, 2])),
    ),
    "BCELoss-default": ({}, lambda r: (_probs(r, (3, 4)), r.uniform(0, 1, size=(3, 4)))),
    "BCELoss-weight-sum": (
        {"weight": np.array([0.5, 1.0, 2.0, 1.5]), "reduction": "sum"},
        lambda r: (_probs(r, (3, 4)), r.integers(0, 2, size=(3, 4)).astype(np.float64)),
    ),
    "BCEWithLogitsLoss-default": ({}, lambda r: (_logits(r, (3, 4)), r.uniform(0, 1, (3, 4)))),
    "BCEWithLogitsLoss-options": (
        {
            "weight": np.array([[0.5], [2.0], [1.0]]),
            "reduction": "none",
            "pos_weight": np.array([1.0, 3.0, 0.5, 2.0]),
        },
        lambda r: (_logits(r, (3, 4)), r.integers(0, 2, size=(3, 4)).astype(np.float64)),
    ),
    "KLDivLoss-batchmean": (
        {"reduction": "batchmean"},
        lambda r: (_log_probs(r), _probs(r)),
    ),
    "KLDivLoss-mean": ({}, lambda r: (_log_probs(r), _probs(r))),
    "KLDivLoss-log_target": (
        {"reduction": "sum", "log_target": True},
        lambda r: (_log_probs(r), _log_probs(r)),
    ),
    "MSELoss-default": ({}, lambda r: (_logits(r), _logits(r))),
    "MSELoss-none": ({"reduction": "none"}, lambda r: (_logits(r), _logits(r))),
    "MultiMarginLoss-default": ({}, lambda r: (_logits(r), _labels(r))),
    "MultiMarginLoss-options": (
        {"p": 2, "margin": 0.5, "weight": np.array([1.0, 2.0, 0.5, 1.0, 3.0]), "reduction": "sum"},
        lambda r: (_logits(r), _labels(r)),
    ),
    "Softmax-dim1": ({"dim": 1}, lambda r: (_logits(r, (3, 4, 2)),)),
    "Softmax-dim0": ({"dim": 0}, lambda r: (_logits(r, (3, 4)),)),
    "LogSoftmax-dim1": ({"dim": 1}, lambda r: (_logits(r, (3, 4)),)),
    "LogSoftmax-last": ({"dim": -1}, lambda r: (_logits(r, (2, 3, 4)),)),
}

FUNCTIONAL = {
    "CrossEntropyLoss": ce.cross_entropy,
    "NLLLoss": ce.nll_loss,
    "BCELoss": ce.binary_cross_entropy,
    "BCEWithLogitsLoss": ce.binary_cross_entropy_with_logits,
    "KLDivLoss": ce.kl_div,
    "MSELoss": ce.mse_loss,
    "MultiMarginLoss": ce.multi_margin_loss,
    "HingeLoss": ce.hinge_loss,
    "Softmax": ce.softmax,
    "LogSoftmax": ce.log_softmax,
}


def _to_torch(a):
    if isinstance(a, np.ndarray):
        if np.issubdtype(a.dtype, np.floating):
            return torch.from_numpy(a.astype(np.float64))
        return torch.from_numpy(a.astype(np.int64))
    return a


def _torch_module_output(cls_name, options, arrays):
    module = getattr(torch.nn, cls_name)(**{k: _to_torch(v) for k, v in options.items()})
    with warnings.catch_warnings():
        # KLDivLoss(reduction='mean') warns that it is not the KL divergence
        warnings.filterwarnings("ignore", message="reduction: 'mean'", category=UserWarning)
        return module(*[_to_torch(a) for a in arrays]).detach().numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_module_equals_functional_and_torch(xp, rng, case):
    cls_name = case.split("-")[0]
    options, make = CASES[case]
    arrays = make(rng)
    ours = getattr(nn, cls_name)(
        **{k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    )
    args = [xp.asarray(a) for a in arrays]
    out = ours(*args)
    assert_close(out, _torch_module_output(cls_name, options, arrays), backend=xp, dtype="float64")
    assert_close(ours.forward(*args), xp.to_numpy(out), backend=xp, rtol=0, atol=0)

    fn_options = {k: xp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    if cls_name in ("Softmax", "LogSoftmax"):
        fn_options = {"axis": fn_options.pop("dim")}
    functional = FUNCTIONAL[cls_name](*args, **fn_options)
    assert_close(out, xp.to_numpy(functional), backend=xp, dtype="float64", rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_hinge_loss_module(xp, rng, reduction):
    # no torch.nn module: the oracle is torch.clamp(margin - y * h, min=0)
    h, y = rng.normal(0, 1.5, size=(3, 4)), rng.choice([-1, 1], size=(3, 4))
    criterion = nn.HingeLoss(margin=0.5, reduction=reduction)
    out = criterion(xp.asarray(h), xp.asarray(y))
    loss = torch.clamp(0.5 - torch.from_numpy(y.astype(np.float64)) * torch.from_numpy(h), min=0)
    expected = {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction].numpy()
    assert_close(out, expected, backend=xp, dtype="float64")
    functional = ce.hinge_loss(xp.asarray(h), xp.asarray(y), 0.5, reduction)
    assert_close(out, xp.to_numpy(functional), backend=xp, rtol=0, atol=0)
    assert criterion.margin == 0.5 and criterion.reduction == reduction


@pytest.fixture
def seed_batch():
    """The seeds' ``torch.manual_seed(100); predict = torch.rand(4, 5)`` with labels [4, 3, 3, 2]."""
    torch.manual_seed(100)
    predict = torch.rand(4, 5)
    return predict, torch.tensor([4, 3, 3, 2])


def test_seed_cross_entropy_loss_verbatim(seed_batch):
    predict_t, label_t = seed_batch
    predict, label = predict_t.numpy(), label_t.numpy()
    criterion = nn.CrossEntropyLoss()
    loss = criterion(predict, label)
    assert isinstance(loss, np.ndarray | np.floating) and loss.dtype == np.float32
    assert round(float(loss), 4) == 1.5230
    expected = torch.nn.CrossEntropyLoss()(predict_t.double(), label_t).item()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    # the same code on the seed's tensors gives a tensor
    loss_t = criterion(predict_t, label_t)
    assert isinstance(loss_t, torch.Tensor) and loss_t.dtype == torch.float32
    np.testing.assert_allclose(loss_t.item(), expected, rtol=1e-6)


def test_seed_softmax_log_nll_verbatim(seed_batch):
    predict_t, label_t = seed_batch
    predict, label = predict_t.numpy(), label_t.numpy()
    softmax = nn.Softmax(dim=1)
    nll = nn.NLLLoss()
    output = nll(np.log(softmax(predict)), label)
    assert round(float(output), 4) == 1.5230
    # the hand-only version of the seed: mean of -log(exp(x_y) / sum exp(x))
    x = predict.astype(np.float64)
    hand = -np.mean(x[np.arange(4), label] - np.log(np.exp(x).sum(axis=1)))
    np.testing.assert_allclose(float(output), hand, rtol=1e-6)
    # and on tensors, with torch.log in place of np.log
    output_t = nll(torch.log(softmax(predict_t)), label_t)
    np.testing.assert_allclose(output_t.item(), hand, rtol=1e-6)
    log_softmax = nn.LogSoftmax(dim=1)
    np.testing.assert_allclose(float(nll(log_softmax(predict), label)), hand, rtol=1e-6)


def test_forward_is_call(rng):
    x, y = _logits(rng), _labels(rng)
    criterion = nn.CrossEntropyLoss(reduction="none")
    np.testing.assert_array_equal(criterion.forward(x, y), criterion(x, y))


def test_autograd_through_module(rng):
    x, y = _logits(rng), _labels(rng)
    xt = torch.tensor(x, requires_grad=True)
    nn.CrossEntropyLoss(label_smoothing=0.1)(xt, torch.from_numpy(y)).backward()
    xr = torch.tensor(x, requires_grad=True)
    torch.nn.CrossEntropyLoss(label_smoothing=0.1)(xr, torch.from_numpy(y)).backward()
    np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=1e-9, atol=1e-15)


def test_attributes_like_torch():
    w = np.array([1.0, 2.0])
    criterion = nn.CrossEntropyLoss(weight=w, reduction="sum", label_smoothing=0.1)
    reference = torch.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1)
    for name in ("reduction", "ignore_index", "label_smoothing"):
        assert getattr(criterion, name) == getattr(reference, name)
    assert criterion.weight is w
    assert nn.CrossEntropyLoss().weight is None
    assert nn.BCEWithLogitsLoss().pos_weight is None
    assert nn.KLDivLoss(log_target=True).log_target is True
    assert nn.MultiMarginLoss(p=2).p == 2
    assert nn.MultiMarginLoss().margin == 1.0
    assert nn.Softmax(dim=1).dim == 1
    assert nn.LogSoftmax().dim == -1
    with pytest.raises(AttributeError, match="'CrossEntropyLoss' has no attribute 'margin'"):
        criterion.margin


@pytest.mark.parametrize(
    "module",
    [
        nn.CrossEntropyLoss(),
        nn.CrossEntropyLoss(ignore_index=3, reduction="sum", label_smoothing=0.1, axis=-1),
        nn.NLLLoss(reduction="none"),
        nn.BCELoss(),
        nn.BCEWithLogitsLoss(reduction="sum"),
        nn.KLDivLoss(reduction="batchmean", log_target=True),
        nn.MSELoss(),
        nn.MultiMarginLoss(p=2, margin=0.5),
        nn.HingeLoss(margin=2.0),
        nn.Softmax(dim=1),
        nn.LogSoftmax(dim=0),
    ],
    ids=repr,
)
def test_repr_round_trips(module):
    text = repr(module)
    assert text.startswith(type(module).__name__ + "(")
    rebuilt = eval(text, vars(nn))
    assert type(rebuilt) is type(module) and repr(rebuilt) == text


def test_repr_shows_options():
    assert "reduction='sum'" in repr(nn.MSELoss(reduction="sum"))
    assert repr(nn.Softmax(dim=1)) == repr(torch.nn.Softmax(dim=1))
    assert "weight=" not in repr(nn.CrossEntropyLoss())
    assert "weight=" in repr(nn.CrossEntropyLoss(weight=np.ones(3)))


def test_errors_come_from_the_function():
    with pytest.raises(ce.TargetIndexError, match="Target 7 is out of bounds"):
        nn.CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, 7]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="avg")(np.zeros(2), np.zeros(2))
