"""``crossentropy.torch.nn``: real ``torch.nn.Module`` losses, and one import to change."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

import crossentropy as ce

torch = pytest.importorskip("torch")

import crossentropy.torch.nn as nn  # noqa: E402
import crossentropy.torch.nn.functional as F  # noqa: E402

TF = torch.nn.functional


def _data(seed=0, n=6, c=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n,), generator=g)
    t = torch.rand(n, c, generator=g, dtype=torch.float64)
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    return x, y, t, w


# name -> (ours, PyTorch's, inputs(x, y, t, w)) with the same constructor arguments
CASES = {
    "CrossEntropyLoss": (
        lambda w: nn.CrossEntropyLoss(weight=w, ignore_index=2, label_smoothing=0.1),
        lambda w: torch.nn.CrossEntropyLoss(weight=w, ignore_index=2, label_smoothing=0.1),
        lambda x, y, t: (x, y),
    ),
    "CrossEntropyLoss-probabilities": (
        lambda w: nn.CrossEntropyLoss(weight=w, reduction="sum"),
        lambda w: torch.nn.CrossEntropyLoss(weight=w, reduction="sum"),
        lambda x, y, t: (x, t.softmax(1)),
    ),
    "NLLLoss": (
        lambda w: nn.NLLLoss(weight=w, reduction="none"),
        lambda w: torch.nn.NLLLoss(weight=w, reduction="none"),
        lambda x, y, t: (x.log_softmax(1), y),
    ),
    "BCELoss": (
        lambda w: nn.BCELoss(weight=w),
        lambda w: torch.nn.BCELoss(weight=w),
        lambda x, y, t: (x.sigmoid(), t),
    ),
    "BCEWithLogitsLoss": (
        lambda w: nn.BCEWithLogitsLoss(weight=w, pos_weight=w.flip(0)),
        lambda w: torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=w.flip(0)),
        lambda x, y, t: (x, t),
    ),
    "KLDivLoss": (
        lambda w: nn.KLDivLoss(reduction="batchmean"),
        lambda w: torch.nn.KLDivLoss(reduction="batchmean"),
        lambda x, y, t: (x.log_softmax(1), t.softmax(1)),
    ),
    "MSELoss": (
        lambda w: nn.MSELoss(reduction="sum"),
        lambda w: torch.nn.MSELoss(reduction="sum"),
        lambda x, y, t: (x, t),
    ),
    "MultiMarginLoss": (
        lambda w: nn.MultiMarginLoss(p=2, margin=0.5, weight=w),
        lambda w: torch.nn.MultiMarginLoss(p=2, margin=0.5, weight=w),
        lambda x, y, t: (x, y),
    ),
    "LogSoftmax": (
        lambda w: nn.LogSoftmax(dim=0),
        lambda w: torch.nn.LogSoftmax(dim=0),
        lambda x, y, t: (x,),
    ),
    "Softmax": (
        lambda w: nn.Softmax(dim=1),
        lambda w: torch.nn.Softmax(dim=1),
        lambda x, y, t: (x,),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_module_is_torchs_class_with_our_forward(case):
    ours_of, theirs_of, inputs = CASES[case]
    x, y, t, w = _data()
    ours, theirs = ours_of(w), theirs_of(w)
    assert isinstance(ours, torch.nn.Module) and isinstance(ours, type(theirs))
    assert type(ours).__module__ == "crossentropy.torch.nn"
    first, *rest = inputs(x, y, t)
    args = [first.clone().requires_grad_(), *rest]
    ref_args = [first.clone().requires_grad_(), *rest]
    out, expected = ours(*args), theirs(*ref_args)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
    out.sum().backward()
    expected.sum().backward()
    np.testing.assert_allclose(
        args[0].grad.numpy(), ref_args[0].grad.numpy(), rtol=1e-10, atol=1e-14
    )


def test_hinge_loss_is_a_module():
    criterion = nn.HingeLoss(margin=0.5, reduction="sum")
    h, y = torch.tensor([2.0, 0.2, -1.0]), torch.tensor([1.0, 1.0, 1.0])
    assert isinstance(criterion, torch.nn.Module)
    assert criterion(h, y).item() == pytest.approx(0.3 + 1.5)  # max(0, 0.5 - y h)
    assert repr(criterion) == "HingeLoss(margin=0.5, reduction='sum')"


def test_weight_and_pos_weight_are_buffers_that_follow_the_module():
    w = torch.tensor([1.0, 2.0, 0.5])
    criterion = nn.CrossEntropyLoss(weight=w)
    assert dict(criterion.named_buffers())["weight"] is w
    assert criterion.to(torch.float64).weight.dtype == torch.float64
    bce = nn.BCEWithLogitsLoss(weight=torch.ones(3), pos_weight=torch.full((3,), 2.0)).double()
    assert bce.weight.dtype == bce.pos_weight.dtype == torch.float64
    # a NumPy weight (as crossentropy.nn takes) becomes a tensor buffer
    assert isinstance(nn.NLLLoss(weight=np.array([1.0, 2.0])).weight, torch.Tensor)
    # the moved weight is the one used: float64 logits with a float64 weight
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    expected = TF.cross_entropy(x, y, weight=w.double())
    assert criterion(x, y).item() == pytest.approx(expected.item(), rel=1e-12)


def test_state_dict_round_trip():
    w = torch.tensor([0.3, 1.0, 2.0, 1.5])
    criterion = nn.CrossEntropyLoss(weight=w, label_smoothing=0.2)
    buffer = io.BytesIO()
    torch.save(criterion.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert list(state) == ["weight"]
    fresh = nn.CrossEntropyLoss(weight=torch.ones(4), label_smoothing=0.2)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.weight, w, rtol=0, atol=0)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    assert fresh(x, y).item() == criterion(x, y).item()
    # PyTorch's module loads ours and the reverse: the same state
    torch.nn.CrossEntropyLoss(weight=torch.ones(4)).load_state_dict(state)
    fresh.load_state_dict(torch.nn.CrossEntropyLoss(weight=w).state_dict())


def test_sequential_train_eval_and_repr():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.LogSoftmax(dim=1))
    assert isinstance(model, torch.nn.Sequential) and type(model[0]) is torch.nn.Linear
    x = torch.randn(5, 3)
    expected = torch.log_softmax(model[:3](x), dim=1)
    torch.testing.assert_close(model(x), expected)
    criterion = nn.NLLLoss()
    model.eval()
    criterion.eval()
    assert not model.training and not model[3].training and not criterion.training
    model.train()
    assert model[3].training
    assert repr(model[3]) == "LogSoftmax(dim=1)" == repr(torch.nn.LogSoftmax(dim=1))
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1, dim=-1)) == (
        "CrossEntropyLoss(reduction='sum', label_smoothing=0.1, axis=-1)"
    )
    assert repr(nn.KLDivLoss(log_target=True)) == "KLDivLoss(log_target=True)"


def test_legacy_size_average_and_reduce_are_torchs():
    x, y, _, _ = _data()
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        ours = nn.CrossEntropyLoss(size_average=False)
    assert ours.reduction == "sum"
    expected = TF.cross_entropy(x, y, reduction="sum")
    assert ours(x, y).item() == pytest.approx(expected.item(), rel=1e-12)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        out = F.nll_loss(x.log_softmax(1), y, None, None, -100, False)
    expected = TF.nll_loss(x.log_softmax(1), y, reduction="none")
    torch.testing.assert_close(out, expected)


def test_every_other_name_is_torchs():
    assert nn.Linear is torch.nn.Linear and nn.Module is torch.nn.Module
    assert nn.init is torch.nn.init and nn.Parameter is torch.nn.Parameter
    assert nn.functional is F
    assert F.relu is TF.relu and F.one_hot is TF.one_hot
    assert F.cross_entropy is not TF.cross_entropy
    assert "Linear" in dir(nn) and "relu" in dir(F)
    with pytest.raises(
        AttributeError, match="has no attribute 'Linearr', and neither has torch.nn"
    ):
        nn.Linearr


def test_functional_takes_torchs_positional_order():
    x, y, t, w = _data()
    # F.cross_entropy(input, target, weight, size_average, ignore_index, reduce, reduction, ls)
    out = F.cross_entropy(x, y, w, None, 3, None, "sum", 0.1)
    expected = TF.cross_entropy(x, y, w, None, 3, None, "sum", 0.1)
    assert out.item() == pytest.approx(expected.item(), rel=1e-12)
    out = F.binary_cross_entropy_with_logits(x, t, None, None, None, "none", w)
    expected = TF.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=w)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(
        F.kl_div(x.log_softmax(1), t.softmax(1), None, None, "sum"),
        TF.kl_div(x.log_softmax(1), t.softmax(1), reduction="sum"),
    )
    torch.testing.assert_close(F.log_softmax(x, 0), TF.log_softmax(x, 0))
    torch.testing.assert_close(
        F.softmax(x, dim=1, dtype=torch.float32), TF.softmax(x, 1, dtype=torch.float32)
    )
    h, W = torch.randn(6, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    out = F.linear_cross_entropy(h, W, y, linear_bias=w, label_smoothing=0.1)
    expected = TF.linear_cross_entropy(h, W, y, linear_bias=w, label_smoothing=0.1)
    assert out.item() == pytest.approx(expected.item(), rel=1e-12)


def test_linear_cross_entropy_loss_module():
    torch.manual_seed(0)
    ours = nn.LinearCrossEntropyLoss(4, 7, bias=True, dtype=torch.float64, label_smoothing=0.1)
    theirs = torch.nn.LinearCrossEntropyLoss(
        4, 7, bias=True, dtype=torch.float64, label_smoothing=0.1
    )
    theirs.load_state_dict(ours.state_dict())
    h = torch.randn(9, 4, dtype=torch.float64)
    y = torch.randint(0, 7, (9,))
    out, expected = ours(h, y), theirs(h, y)
    assert out.item() == pytest.approx(expected.item(), rel=1e-12)
    out.backward()
    expected.backward()
    torch.testing.assert_close(ours.linear.weight.grad, theirs.linear.weight.grad)
    torch.testing.assert_close(ours.linear.bias.grad, theirs.linear.bias.grad)


def test_one_changed_import_runs_a_torch_training_step():
    """A PyTorch script whose only change is ``import crossentropy.torch.nn as nn``."""
    script = """
import torch
import crossentropy.torch.nn as nn
import crossentropy.torch.nn.functional as F
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
criterion = nn.CrossEntropyLoss()
opt = torch.optim.SGD(model.parameters(), lr=0.5)
x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
first = None
for _ in range(20):
    opt.zero_grad()
    loss = criterion(model(x), y) + 0.0 * F.relu(x).sum()
    loss.backward()
    opt.step()
    first = loss.item() if first is None else first
print(type(criterion).__module__, first > loss.item())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["crossentropy.torch.nn", "True"]


def test_importing_crossentropy_does_not_import_torch_package():
    code = "import sys, crossentropy, crossentropy.nn; print('crossentropy.torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_errors_are_the_functions():
    with pytest.raises(ce.TargetIndexError, match="Target 7 is out of bounds"):
        nn.CrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0, 7]))
    with pytest.raises(TypeError, match="got axis=1 and dim=1"):
        nn.NLLLoss(axis=1, dim=1)
