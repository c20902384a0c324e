"""The losses inside ``torch.compile`` and ``torch.export`` (custom operators), and under autocast."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import crossentropy as ce

torch = pytest.importorskip("torch")

import crossentropy.torch.nn as nn  # noqa: E402
from crossentropy.kernels import custom_ops, native  # noqa: E402

TF = torch.nn.functional


class _Model(torch.nn.Module):
    """A hidden layer, then the four losses that have fused paths."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.hidden = torch.nn.Linear(6, 8, dtype=torch.float64)
        self.head = torch.nn.Parameter(torch.randn(5, 8, generator=g, dtype=torch.float64))

    def forward(self, x, y, t, fns):
        h = torch.tanh(self.hidden(x))
        logits = h @ self.head.T
        return (
            fns["cross_entropy"](logits, y, label_smoothing=0.1)
            + fns["cross_entropy"](logits, y, reduction="none").square().sum()
            + fns["nll_loss"](torch.log_softmax(logits, 1), y, reduction="sum")
            + fns["binary_cross_entropy_with_logits"](logits, t, pos_weight=t[0] + 0.5)
            + fns["linear_cross_entropy"](h, self.head, y, label_smoothing=0.05)
        )


OURS = {
    "cross_entropy": ce.cross_entropy,
    "nll_loss": ce.nll_loss,
    "binary_cross_entropy_with_logits": ce.binary_cross_entropy_with_logits,
    "linear_cross_entropy": ce.linear_cross_entropy,
}
THEIRS = {
    "cross_entropy": TF.cross_entropy,
    "nll_loss": TF.nll_loss,
    "binary_cross_entropy_with_logits": TF.binary_cross_entropy_with_logits,
    "linear_cross_entropy": TF.linear_cross_entropy,
}


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (16,), generator=g)
    t = torch.rand(16, 5, generator=g, dtype=torch.float64)
    return x, y, t


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _torchs_own(record) -> bool:
    """PyTorch's own import-time deprecation notices while it compiles anything."""
    return issubclass(record.category, DeprecationWarning) and "torch" in record.filename


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_model_has_no_graph_break_and_torchs_gradients(fresh_dynamo, monkeypatch):
    model = _Model()
    x, y, t = _inputs()
    explained = torch._dynamo.explain(model)(x, y, t, OURS)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    ops = {str(n.target) for g in explained.graphs for n in g.graph.nodes}
    for name in OURS:
        assert f"crossentropy.{name}" in ops
    torch._dynamo.reset()

    launches = []  # the number of classes of each kernel run (the general entry, or quick's)
    real, quick = native.extension.cross_entropy, native.extension.quick
    monkeypatch.setattr(
        native.extension, "cross_entropy", lambda *a: launches.append(a[3]) or real(*a)
    )
    monkeypatch.setattr(native.extension, "quick", lambda *a: launches.append(a[2]) or quick(*a))
    compiled = torch.compile(model, fullgraph=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = compiled(x, y, t, OURS)
        loss.backward()
    assert [str(w.message) for w in caught if not _torchs_own(w)] == []
    assert 5 in launches  # the fused kernel ran inside the compiled graph (C = 5 classes)
    ours = _grads(model)
    model.zero_grad()
    expected = model(x, y, t, THEIRS)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for a, b in zip(ours, _grads(model)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_modules_of_the_drop_in(fresh_dynamo):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)).double()
    losses = [
        nn.CrossEntropyLoss(weight=torch.rand(5, dtype=torch.float64) + 0.5, ignore_index=1),
        nn.NLLLoss(),
        nn.KLDivLoss(reduction="batchmean"),
        nn.MSELoss(),
        nn.MultiMarginLoss(),
        nn.BCELoss(),
        nn.BCEWithLogitsLoss(),
    ]
    log_softmax, softmax = nn.LogSoftmax(dim=1), nn.Softmax(dim=1)
    x, y, t = _inputs()

    def step(x, y, t):
        h = body(x)
        logp = log_softmax(h)
        return (
            losses[0](h, y) + losses[1](logp, y) + losses[2](logp, softmax(h).detach())
            + losses[3](h, t) + losses[4](h, y) + losses[5](h.sigmoid(), t) + losses[6](h, t)
        )  # fmt: skip

    explained = torch._dynamo.explain(step)(x, y, t)
    assert explained.graph_break_count == 0
    torch._dynamo.reset()
    loss = torch.compile(step, fullgraph=True)(x, y, t)
    loss.backward()
    ours = _grads(body)
    body.zero_grad()
    expected = step(x, y, t)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for a, b in zip(ours, _grads(body)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
# Dynamo, resuming after the graph break, reads .grad of the non-leaf logits (it hides
# the warning from display, which -W error turns into an exception first)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_a_gradient_the_operator_cannot_give_runs_the_ordinary_code(fresh_dynamo):
    """``hinge_loss``'s ``target`` that needs a gradient: the rule does not differentiate
    it, so the call runs outside the graph (a graph break, no warning) and the
    gradient is still right."""
    x, _, t = _inputs()
    w = torch.where(t[:, :5] > 0.5, 1.0, -1.0).requires_grad_()
    logits = x[:, :5].clone().requires_grad_()

    def f(x, w):
        return ce.hinge_loss(x.tanh(), w, margin=0.5)

    assert torch._dynamo.explain(f)(logits, w).graph_break_count >= 1
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = torch.compile(f)(logits, w)
        gx, gw = torch.autograd.grad(loss, (logits, w))
    assert [str(w.message) for w in caught if not _torchs_own(w)] == []
    x2, w2 = x[:, :5].clone().requires_grad_(), w.detach().clone().requires_grad_()
    expected = torch.clamp(0.5 - w2 * x2.tanh(), min=0).mean()
    ex, ew = torch.autograd.grad(expected, (x2, w2))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(gw.numpy(), ew.numpy(), rtol=1e-10)
    np.testing.assert_allclose(gx.numpy(), ex.numpy(), rtol=1e-10)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export(fresh_dynamo):
    class Exported(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = _Model()

        def forward(self, x, y, t):
            return self.model(x, y, t, OURS)

    module = Exported()
    x, y, t = _inputs()
    program = torch.export.export(module, (x, y, t))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {f"crossentropy.{name}.default" for name in OURS} <= targets
    expected = module.model(x, y, t, THEIRS)
    assert program.module()(x, y, t).item() == pytest.approx(expected.item(), rel=1e-12)


def test_operator_errors_are_the_functions(fresh_dynamo):
    compiled = torch.compile(lambda x, y: ce.cross_entropy(x, y), fullgraph=True)
    with pytest.raises(ce.TargetIndexError, match="Target 9 is out of bounds"):
        compiled(torch.zeros(2, 3), torch.tensor([0, 9]))


def test_constant_while_tracing_is_what_torch_marks():
    """``constant_while_tracing`` sets what ``torch.compiler.assume_constant_result`` sets."""

    def f():
        return 1

    marked = torch.compiler.assume_constant_result(f)
    ours = custom_ops.constant_while_tracing(lambda: 1)
    assert {k for k in vars(marked)} == {k for k in vars(ours)} == {"_dynamo_marked_constant"}


# -- autocast -----------------------------------------------------------------------

AUTOCAST = [
    ("cross_entropy", lambda x, y, t: (x, y)),
    ("nll_loss", lambda x, y, t: (x, y)),
    ("binary_cross_entropy_with_logits", lambda x, y, t: (x, t)),
    ("binary_cross_entropy", lambda x, y, t: (x.sigmoid(), t)),
    ("kl_div", lambda x, y, t: (x, t, None, None, "batchmean")),
    ("mse_loss", lambda x, y, t: (x, t)),
    ("multi_margin_loss", lambda x, y, t: (x, y)),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name,args", AUTOCAST, ids=[a[0] for a in AUTOCAST])
def test_autocast_gives_torchs_dtype(name, args, dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 5, generator=g).to(getattr(torch, dtype))
    y, t = torch.randint(0, 5, (8,), generator=g), torch.rand(8, 5, generator=g).to(x.dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = getattr(TF, name)(*args(x, y, t))
        ours = getattr(ce, name)(*(a for a in args(x, y, t) if a is not None))
    assert ours.dtype == theirs.dtype == torch.float32
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_autocast_linear_and_gradients():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(8, 4, generator=g, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(6, 4, generator=g, dtype=torch.bfloat16)
    y = torch.randint(0, 6, (8,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ce.linear_cross_entropy(h, w, y)
        theirs = TF.linear_cross_entropy(h, w, y)  # its logits rounded to bfloat16 first
        logits = h @ w.T  # bfloat16 under autocast
        loss = ce.cross_entropy(logits, y)
    assert ours.dtype == theirs.dtype == loss.dtype == torch.float32
    # computed in float32 from the bfloat16 inputs
    exact = TF.cross_entropy(h.detach().float() @ w.float().T, y)
    assert ours.item() == pytest.approx(exact.item(), rel=1e-6)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-2)
    loss.backward()
    assert h.grad.dtype == torch.bfloat16
    ref = h.detach().clone().requires_grad_()
    TF.cross_entropy((ref @ w.T).float(), y).backward()
    np.testing.assert_allclose(h.grad.float().numpy(), ref.grad.float().numpy(), rtol=1e-2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_autocast_inside_compile(fresh_dynamo):
    lin = torch.nn.Linear(6, 5)
    x, y, _ = _inputs()
    x = x.float()

    def f(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ce.cross_entropy(lin(x), y)

    out = torch.compile(f, fullgraph=True)(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = TF.cross_entropy(lin(x), y)
    assert out.dtype == expected.dtype == torch.float32
    assert out.item() == pytest.approx(expected.item(), rel=1e-6)
