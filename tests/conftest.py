"""Shared test fixtures: small random problems and the network3 nets."""
import numpy as np
import pytest


@pytest.fixture
def rng(request):
    # a fresh, reproducible stream per test: never zeros, never shared state
    return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)


@pytest.fixture(scope="session")
def sample():
    from fastmom.data import load_sample
    return load_sample()
