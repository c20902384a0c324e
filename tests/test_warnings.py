"""Warnings are attributed to the caller's line, whichever entry point raised them."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import nn

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
LABELS = np.array([0, 2])


def _line() -> int:
    """The line number of the caller's current line."""
    return sys._getframe(1).f_lineno


def _assert_here(record, line):
    assert len(record) == 1
    w = record[0]
    assert issubclass(w.category, ce.ProbabilitiesAsLogitsWarning)
    assert (w.filename, w.lineno) == (__file__, line)


def test_function_call():
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning) as record:
        line = _line() + 1
        ce.cross_entropy(PROBS, LABELS)
    _assert_here(record, line)


def test_loss_object():
    criterion = nn.CrossEntropyLoss()
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning) as record:
        line = _line() + 1
        criterion(PROBS, LABELS)
    _assert_here(record, line)


def test_torch_module_and_functional():
    torch = pytest.importorskip("torch")
    import crossentropy.torch.nn as tnn

    x, y = torch.from_numpy(PROBS), torch.from_numpy(LABELS)
    criterion = tnn.CrossEntropyLoss()
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning) as record:
        line = _line() + 1
        criterion(x, y)
    _assert_here(record, line)  # past torch.nn.Module.__call__
    with pytest.warns(ce.ProbabilitiesAsLogitsWarning) as record:
        line = _line() + 1
        tnn.functional.cross_entropy(x.float(), y)
    _assert_here(record, line)


def test_shown_once_per_calling_line():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        for _ in range(3):
            first = _line() + 1
            ce.cross_entropy(PROBS, LABELS)
        second = _line() + 1
        ce.cross_entropy(PROBS, LABELS)
    assert [w.lineno for w in record] == [first, second]
