"""The ``backend`` fixture (every backend) and ``compiled`` (every backend but the
reference, which they are compared with): one parametrisation for all backend tests."""
import pytest

from backend_cases import ALL, COMPILED, make_backend

_cache = {}


def _get(name):
    if name not in _cache:
        _cache[name] = make_backend(name)
    return _cache[name]


@pytest.fixture(params=ALL)
def backend(request):
    return _get(request.param)


@pytest.fixture(params=COMPILED)
def compiled(request):
    return _get(request.param)
