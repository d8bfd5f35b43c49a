"""The GPU path: NCCL all-reduce of CuPy arrays (unique id broadcast over MPI), and MPI
through host memory where CuPy has no NCCL. Needs a GPU, CuPy, mpirun and mpi4py; NCCL
needs one GPU per rank, so a one-GPU machine runs the host-staging case only."""
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu

SCRIPT = r"""
import numpy as np, cupy
from fastmom import distributed
world = distributed.init()
distributed.use_local_gpu()
if {force_host}:
    world._nccl = False
a = cupy.full(1000, world.rank + 1, dtype=cupy.float32)
world.allreduce_sum(a)
expected = world.size * (world.size + 1) / 2
assert float(a.min()) == float(a.max()) == expected, (float(a.min()), expected)
print("ok", world.rank, "nccl" if world._nccl else "host staging")
"""


def _needs():
    cupy = pytest.importorskip("cupy")
    pytest.importorskip("mpi4py")
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun not found")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        pytest.skip("no CUDA device")
    return n


@pytest.mark.parametrize("force_host", [False, True])
def test_gpu_allreduce(tmp_path, force_host):
    n_gpus = _needs()
    if not force_host and n_gpus < 2:
        pytest.skip("NCCL needs one GPU per rank")
    script = tmp_path / "allreduce.py"
    script.write_text(SCRIPT.format(force_host=force_host))
    proc = subprocess.run([shutil.which("mpirun"), "--oversubscribe", "--allow-run-as-root", "-np", "2",
                           sys.executable, str(script)], capture_output=True, text=True, timeout=180,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok") == 2
