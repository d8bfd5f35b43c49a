"""GPU benchmark smoke test (skipped without CuPy, a CUDA device or PyTorch CUDA).

``pytest bench/test_bench_gpu.py`` runs bench/gpu_table.py with few repetitions and
small sizes and checks that the table and its JSON are written and sane; the full
measurement is ``python -m bench.gpu_table`` (see bench/gpu_all.sh). The capture
handling runs everywhere, against a stand-in for CuPy's stream.
"""
import json
import sys
import types

import pytest

from fastmom.backends import cuda



def test_failed_capture_is_ended_and_reported(monkeypatch, capsys):
    from bench import gpu_table

    events = []

    class Stream:
        def __init__(self, non_blocking=False):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

        def begin_capture(self):
            events.append("begin")

        def end_capture(self):
            events.append("end")
            raise RuntimeError("capture invalidated")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Stream=Stream))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 2:  # the captured call: CuPy refuses cuBLAS under capture
            raise RuntimeError("cuBLAS is not allowed during capture")

    assert gpu_table._graph_time(step, 3) is None
    assert events == ["begin", "end"]  # the capture was ended, not left dangling
    assert "not capturable" in capsys.readouterr().err
    assert set(gpu_table.tf32_settings()) >= {"cupy CUPY_TF32"}


@pytest.mark.gpu
@pytest.mark.skipif(cuda.is_available() is not True, reason=f"cuda backend unavailable: {cuda.is_available()}")
def test_gpu_table_runs(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    from bench import gpu_table

    report = gpu_table.main(["--out", str(tmp_path), "--reps", "3", "--batches", "10", "64",
                             "--sizes", "1e6", "--no-compile"])
    assert (tmp_path / "gpu_table.md").read_text().startswith("# fastmom cuda vs PyTorch")
    data = json.loads((tmp_path / "gpu_table.json").read_text())
    assert data["gpu"] == report["gpu"]
    for batch in ("10", "64"):
        assert data["batches"][batch]["fastmom"]["training step"] > 0
    assert data["momentum"][0]["fastmom GB/s"] > 0
