"""PyTorch as PyTorch users write it: ``torch.nn`` and ``torch.nn.functional`` with our losses.

Importing this package imports PyTorch (``import crossentropy`` never does).
It holds the drop-in replacements of a PyTorch training script's two imports:

* :mod:`crossentropy.torch.nn` -- ``import crossentropy.torch.nn as nn`` in place
  of ``import torch.nn as nn``: the loss classes (``nn.CrossEntropyLoss``,
  ``nn.NLLLoss``, ``nn.BCEWithLogitsLoss``, ...) are this library's, as real
  ``torch.nn.Module`` subclasses of PyTorch's own classes with PyTorch's
  constructor arguments; every other name (``nn.Linear``, ``nn.Sequential``,
  ``nn.init``) is PyTorch's.
* :mod:`crossentropy.torch.nn.functional` -- ``import
  crossentropy.torch.nn.functional as F``: the loss functions with PyTorch's
  signatures, PyTorch's functions for every other name.

Both work in eager mode, under ``torch.autocast`` (losses in float32, as
PyTorch's) and inside ``torch.compile(fullgraph=True)`` and ``torch.export``,
where each loss is one custom operator (``torch.ops.crossentropy.*``) running
the same code (:mod:`crossentropy.kernels.custom_ops`).

Examples
--------
>>> import torch
>>> import crossentropy.torch.nn as nn
>>> model = nn.Sequential(nn.Linear(3, 2), nn.LogSoftmax(dim=1))
>>> type(model[0]).__module__, type(model[1]).__module__
('torch.nn.modules.linear', 'crossentropy.torch.nn')
>>> criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
>>> isinstance(criterion, torch.nn.CrossEntropyLoss)
True
"""

from __future__ import annotations

from . import nn

__all__ = ["nn"]
