"""The command line runs as a real subprocess (``python -m fastmom``): what a user sees,
exit status and both streams included."""
import pytest

from runner import run_fastmom


@pytest.fixture
def fastmom():
    return run_fastmom
