"""Shared fixtures: the ``xp`` backend fixture and a seeded ``rng``; hypothesis profiles.

The helpers the tests import (``Backend``, ``assert_close``, the PyTorch oracles,
``finite_difference``) live in :mod:`tests.support`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tests.support import Backend, backend_params, jax_x64, make_backend

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(params=backend_params())
def xp(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each array library in turn: numpy, array_api_strict, torch (and jax when installed).

    JAX runs with 64-bit types for the duration of the test only (the backend
    tests compare float64 results), leaving JAX's default for everything else.
    """
    backend = make_backend(request.param)
    if backend.name != "jax":
        yield backend
        return
    with jax_x64(True):
        yield backend


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)
