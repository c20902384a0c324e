"""On accelerator tensors, validation does not read values on the host (no synchronisation).

No GPU is needed: the tests declare CPU tensors to be on an accelerator, count
every host read of a tensor value (``bool``, ``item``, ``float``, ``int``,
``tolist``, ``numpy``), and run the portable path that accelerator tensors take.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossentropy as ce
from crossentropy._core import validate

torch = pytest.importorskip("torch")


@pytest.fixture
def accelerator(monkeypatch):
    """CPU tensors treated as accelerator tensors, on the path they take."""
    monkeypatch.setattr(validate, "on_accelerator", lambda a: isinstance(a, torch.Tensor))
    with ce.kernels.disabled():
        yield


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 4, 2, -100, 1, 3])
    return x, y


def _count_reads(m, reads):
    """Record every host read of a tensor value (then do it)."""
    for name in ("__bool__", "item", "__float__", "__int__", "__index__", "tolist", "numpy"):
        real = getattr(torch.Tensor, name)

        def read(self, *args, _real=real, _name=name, **kwargs):
            reads.append(_name)
            return _real(self, *args, **kwargs)

        m.setattr(torch.Tensor, name, read)


@pytest.mark.parametrize("on_device", [True, False], ids=["accelerator", "cpu"])
def test_values_are_right_without_reads(monkeypatch, on_device):
    x, y = _data()
    weight = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)
    reads = []
    with monkeypatch.context() as m:
        m.setattr(validate, "on_accelerator", lambda a: on_device and isinstance(a, torch.Tensor))
        _count_reads(m, reads)
        with ce.kernels.disabled():
            xg = x.clone().requires_grad_()
            loss = ce.cross_entropy(xg, y, weight, label_smoothing=0.1)
            loss.backward()
            nll = ce.nll_loss(x.log_softmax(1), y, reduction="sum")
    # on the host the index check and the probe read values; on a device nothing does
    assert (reads == []) is on_device
    expected_x = x.clone().requires_grad_()
    expected = torch.nn.functional.cross_entropy(expected_x, y, weight, label_smoothing=0.1)
    expected.backward()
    np.testing.assert_allclose(loss.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(xg.grad.numpy(), expected_x.grad.numpy(), rtol=1e-12, atol=1e-15)
    ref = torch.nn.functional.nll_loss(x.log_softmax(1), y, reduction="sum")
    np.testing.assert_allclose(nll.numpy(), ref.numpy(), rtol=1e-12)


def test_a_bad_index_is_asserted_on_the_device(accelerator):
    x, y = _data()
    y[2] = 5
    with pytest.raises(
        RuntimeError, match=r"Target out of bounds: class indices must lie in \[0, 4\]"
    ):
        ce.cross_entropy(x, y)


def test_the_probe_is_skipped_on_an_accelerator(monkeypatch):
    monkeypatch.setattr(validate, "on_accelerator", lambda a: isinstance(a, torch.Tensor))
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)
    with ce.kernels.disabled():
        ce.cross_entropy(probs, torch.tensor([0, 2]))  # no ProbabilitiesAsLogitsWarning
    assert validate.looks_like_probabilities(None, probs, 1) is None
