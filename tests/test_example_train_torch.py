"""``examples/train_torch.py``: the drop-in trains exactly as ``torch.nn`` does (a short run)."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "train_torch.py"


def _example():
    spec = importlib.util.spec_from_file_location("train_torch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # PyTorch's own, when it compiles
def test_compiled_training_matches_torch_nn(capsys):
    import torch

    torch._dynamo.reset()
    results = _example().main(["--epochs", "2"])
    ours, theirs = results["crossentropy.torch.nn"], results["torch.nn"]
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=1 / 450)  # one test image
    assert 0.5 < ours["accuracy"] and ours["loss"] < 1.0  # it learned: chance is 10%, log 10 = 2.3
    out = capsys.readouterr().out
    assert "import torch.nn " in out and "import crossentropy.torch.nn " in out
    torch._dynamo.reset()


def test_autocast_training_matches_torch_nn():
    results = _example().main(["--epochs", "1", "--eager", "--autocast"])
    ours, theirs = results["crossentropy.torch.nn"], results["torch.nn"]
    assert str(ours["dtype"]) == str(theirs["dtype"]) == "torch.float32"
    # bfloat16 gradients: one rounding apart now and then
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-3)
