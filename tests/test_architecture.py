"""The shape of the package: no import cycle, short files and functions, validation once.

The layering itself (which layer may import which) is checked by import-linter's
contracts in ``pyproject.toml`` (``lint-imports`` in the test command); these
tests check what the contracts cannot express.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import crossentropy as ce

SRC = pathlib.Path(ce.__file__).parent
MAX_FILE_LINES = 650
MAX_FUNCTION_LINES = 90


def _python_files() -> list[pathlib.Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_strongly_connected_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(edges) == [["a", "b", "c"]]
    assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    """Every import, lazy ones inside functions included, between any two modules."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("crossentropy")
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    assert _strongly_connected(edges) == []


def test_files_and_functions_are_short():
    long_files, long_functions = [], []
    for path in _python_files():
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append((path.name, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]  # the docstring does not count
            if not body:
                continue
            lines = body[-1].end_lineno - body[0].lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long_functions.append((path.name, node.name, lines))
    assert long_files == [], f"files over {MAX_FILE_LINES} lines"
    assert long_functions == [], f"functions over {MAX_FUNCTION_LINES} lines of code"


def test_no_underscore_name_is_imported_from_another_module():
    """Shared internals have plain names; private modules are the import-linter's business."""
    offenders = []
    for path in _python_files():
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            source = (base + "." + node.module if node.module else base) if node.level else node.module
            for alias in node.names:
                name = alias.name
                if not name.startswith("_") or name.startswith("__"):
                    continue
                if importlib.util.find_spec(f"{source}.{name}") is None:  # a name, not a module
                    offenders.append(f"{module}: from {source} import {name}")
    assert offenders == []


def test_docstrings_stand_alone():
    """No docstring or comment points at material a reader of the library does not have
    ("the seed's example", "the slide"): the numbers are shown and said what they are."""
    pattern = re.compile(r"\bseed's\b|\bseeds'|\bthe seeds\b|\bslide\b", re.IGNORECASE)
    hits = []
    for path in _python_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.name}:{number}: {line.strip()}")
    assert hits == []


def test_importing_the_package_imports_no_framework():
    code = "import sys, crossentropy; print(sorted({'torch', 'jax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- one validation per call -------------------------------------------------------


@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> list:
    """The arrays ``prepare_class_call`` validated, one entry per validation."""
    from crossentropy.losses import classification

    seen: list = []
    real = classification.prepare_class_call

    def spy(input, *args, **kwargs):
        seen.append(type(input).__module__.split(".")[0])
        return real(input, *args, **kwargs)

    monkeypatch.setattr(classification, "prepare_class_call", spy)
    return seen


def _inputs(rng: np.random.Generator, shape=(6, 5)) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal(shape)
    t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    return x, t


def test_value_and_grad_validates_numpy_once(prepared, rng):
    x, t = _inputs(rng)
    w = rng.uniform(0.5, 2.0, 5)  # a class weight: not the common call of kernels.quick
    value, g = ce.value_and_grad(ce.cross_entropy)(x, t, w, label_smoothing=0.1)
    assert prepared == ["numpy"]
    with ce.kernels.disabled():
        ref_value, ref_g = ce.value_and_grad(ce.cross_entropy)(x, t, w, label_smoothing=0.1)
    assert prepared == ["numpy", "numpy"]
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(g, ref_g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "requires-grad"])
def test_torch_cpu_tensors_validate_once(prepared, rng, grad):
    torch = pytest.importorskip("torch")
    x, t = _inputs(rng)
    w = torch.from_numpy(rng.uniform(0.5, 2.0, 5))
    xt = torch.from_numpy(x).requires_grad_(grad)
    value, g = ce.value_and_grad(ce.cross_entropy)(xt, torch.from_numpy(t), w)
    assert prepared == ["numpy"]  # validated on NumPy views of the tensors, once
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), w)
    np.testing.assert_allclose(value.detach().numpy(), expected.numpy(), rtol=1e-12)
    assert isinstance(g, torch.Tensor)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_the_common_call_is_validated_without_preparing(prepared, rng, kind):
    """2-D logits, class indices, no weight: kernels.quick checks the call itself."""
    x, t = _inputs(rng)
    if kind == "torch":
        torch = pytest.importorskip("torch")
        x, t = torch.from_numpy(x), torch.from_numpy(t)
    value, g = ce.value_and_grad(ce.cross_entropy)(x, t, label_smoothing=0.1)
    loss = ce.cross_entropy(x, t, label_smoothing=0.1)
    assert prepared == []
    with ce.kernels.disabled():
        ref_value, ref_g = ce.value_and_grad(ce.cross_entropy)(x, t, label_smoothing=0.1)
    assert prepared == [kind]
    np.testing.assert_allclose(np.asarray(value), np.asarray(ref_value), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(loss), np.asarray(ref_value), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g), np.asarray(ref_g), rtol=1e-12, atol=1e-15)


def test_a_declined_kernel_call_is_not_validated_again(prepared, rng, monkeypatch):
    """When the kernel declines a call prepared on NumPy views, the reference path
    takes the caller's tensors without a second validation."""
    torch = pytest.importorskip("torch")
    from crossentropy.losses import classification

    monkeypatch.setattr(classification, "kernel_cross_entropy", lambda *args, **kw: None)
    x, t = _inputs(rng, (4, 7, 3))
    w = rng.uniform(0.5, 2.0, 7)
    xt = torch.from_numpy(x).requires_grad_()
    value = ce.cross_entropy(xt, torch.from_numpy(t), weight=torch.from_numpy(w))
    value.backward()
    assert prepared == ["numpy"]
    expected_x = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.functional.cross_entropy(
        expected_x, torch.from_numpy(t), weight=torch.from_numpy(w)
    )
    expected.backward()
    np.testing.assert_allclose(value.detach().numpy(), expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), expected_x.grad.numpy(), rtol=1e-10, atol=1e-15)
