"""A PyTorch training loop where crossentropy's losses replace torch.nn's by one import.

An MLP learns scikit-learn's handwritten digits (8x8 images, 10 classes; bundled
with scikit-learn, no download) with a ``DataLoader``, SGD with momentum and a
``torch.compile``-d training step.  It is trained twice from the same initial
weights and batches: once with ``import torch.nn as nn``, once with
``import crossentropy.torch.nn as nn`` -- the only difference -- and prints both
runs' final training loss and test accuracy.  They are identical to six digits
over the first epochs; gradients that differ in their last float32 bit (bfloat16
bit under ``--autocast``) then drift apart through the updates, to the fourth
digit after 20 epochs.  The time of the first compiled run includes PyTorch's
compiler start-up.

Run with ``python examples/train_torch.py`` (``--help`` for the options:
epochs, ``--eager`` instead of compiling, ``--autocast`` for bfloat16 autocast).
"""

from __future__ import annotations

import argparse
import time
import warnings
from types import ModuleType

import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

import crossentropy.torch.nn


def digits() -> tuple[TensorDataset, TensorDataset]:
    """1347 training and 450 test images, pixels scaled to [0, 1]."""
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    return TensorDataset(x[:1347], y[:1347]), TensorDataset(x[1347:], y[1347:])


def train(nn: ModuleType, epochs: int, compile: bool, autocast: bool) -> dict:
    """Train with the loss classes of ``nn`` (``torch.nn`` or ``crossentropy.torch.nn``)."""
    train_set, test_set = digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    criterion = nn.CrossEntropyLoss(label_smoothing=0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(
        train_set, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)
    )

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return criterion(model(x), y)

    step = torch.compile(loss_of, fullgraph=True) if compile else loss_of
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = step(x, y)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        x, y = train_set.tensors
        final = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.05).item()
        x, y = test_set.tensors
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    return {"loss": final, "accuracy": accuracy, "seconds": seconds, "dtype": loss.dtype}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eager", action="store_true", help="do not compile the training step")
    parser.add_argument("--autocast", action="store_true", help="bfloat16 autocast on the CPU")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
    results = {}
    for name, nn in [("torch.nn", torch.nn), ("crossentropy.torch.nn", crossentropy.torch.nn)]:
        r = train(nn, args.epochs, not args.eager, args.autocast)
        results[name] = r
        print(
            f"import {name:<24} final train loss {r['loss']:.6f}  test accuracy "
            f"{r['accuracy']:.1%}  ({args.epochs} epochs, {r['seconds']:.1f} s, "
            f"loss dtype {str(r['dtype']).removeprefix('torch.')})"
        )
    return results


if __name__ == "__main__":
    main()
