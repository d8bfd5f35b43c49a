"""Shared test fixtures: small random problems and the network3 nets."""
import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    # a fresh stream per test (never zeros, never shared state), reproducible from run to
    # run: str hashes are salted per process, so hash() would draw new values every run
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def sample():
    from fastmom.data import load_sample
    return load_sample()
