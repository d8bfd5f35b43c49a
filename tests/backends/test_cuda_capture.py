"""``cuda.capture_step``'s host logic without a GPU: a stand-in for CuPy's stream and
the emulated kernels' counters. (The capture and replay on a device:
``test_cuda_gpu.py``, marked ``gpu``.)"""
import types

import numpy as np
import pytest

from backend_cases import randn, rng_for
from fastmom.backends import cuda
from fastmom.backends import cuda_emulation as ce

pytestmark = pytest.mark.skipif(ce.compiler() is None, reason="no C++ compiler for the CUDA emulation")


class _Stream:
    """CuPy's Stream as capture_step uses it; records the calls."""

    def __init__(self, events):
        self.events = events

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        self.events.append("sync")

    def begin_capture(self):
        self.events.append("begin")

    def end_capture(self):
        self.events.append("end")
        return types.SimpleNamespace(launch=lambda stream: self.events.append("launch"))


@pytest.fixture
def fake(monkeypatch):
    events = []
    emu = ce.kernels(n_sm=2)
    stream = _Stream(events)
    monkeypatch.setattr(cuda, "_cupy", lambda: types.SimpleNamespace(
        cuda=types.SimpleNamespace(Stream=lambda non_blocking=False: stream)))
    monkeypatch.setattr(cuda, "kernels", lambda: emu)
    return emu, events


def _dense_step(emu, rows):
    rng = rng_for("capture", rows)
    x, w, b = randn(rng, (rows, 13), np.float32), randn(rng, (13, 7), np.float32), randn(rng, (7,), np.float32)
    y = np.empty((rows, 7), np.float32)
    return lambda: emu.dense_forward(x, w, b, "relu", y)


def test_small_batch_step_is_captured_and_replayed(fake):
    emu, events = fake
    captured = cuda.capture_step(_dense_step(emu, cuda.DENSE_SMALL_ROWS))
    captured.replay()
    assert events == ["sync", "begin", "end", "launch"]  # eager step, capture, then the replay


def test_step_with_cublas_is_refused_after_the_capture_ended(fake):
    emu, events = fake
    with pytest.raises(ValueError, match="'cublas': 1.*not replayable"):
        cuda.capture_step(_dense_step(emu, cuda.DENSE_SMALL_ROWS + 1))
    assert events == ["sync", "begin", "end"]


def test_failing_step_ends_the_capture_and_raises_its_error(fake):
    emu, events = fake
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("refused under capture")

    with pytest.raises(RuntimeError, match="refused under capture"):
        cuda.capture_step(step)
    assert events == ["sync", "begin", "end"]
