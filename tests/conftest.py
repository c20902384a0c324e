"""Shared fixtures: the ``xp`` backend fixture and a seeded ``rng``; hypothesis profiles.

The helpers the tests import (``Backend``, ``assert_close``, the PyTorch oracles,
``finite_difference``) live in :mod:`tests.support`.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tests.support import Backend, backend_params, make_backend

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(params=backend_params())
def xp(request: pytest.FixtureRequest) -> Backend:
    """Each array library in turn: numpy, array_api_strict, torch (and jax when installed)."""
    return make_backend(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)
