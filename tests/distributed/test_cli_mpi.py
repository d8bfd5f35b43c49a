"""``fastmom`` commands under ``mpirun``: Ctrl-C without ``--checkpoint-dir`` is decided by
every rank together, and rank 0 alone prints and writes the outputs (``train``,
``compare``).

Skipped, as ``test_mpi.py``, without ``mpirun`` or mpi4py; every launch has a timeout.
"""
import json
import os
import signal
import subprocess
import sys

import pytest

from test_mpi import MPIRUN, SIGKILL_GRACE, pytestmark  # noqa: F401 (the same skips)

FC = ("--net", "fc", "--eta", "0.5", "--threads", "1")


def mpirun_fastmom(n, *args):
    """``mpirun -np n python -m fastmom ARGS`` (with test_mpi's grace before SIGKILL)."""
    return [MPIRUN, "--oversubscribe", "--allow-run-as-root", *SIGKILL_GRACE, "-np", str(n), sys.executable,
            "-m", "fastmom", *map(str, args)]


def rank_pid(mpirun_pid, rank):
    """The pid of ``rank`` among mpirun's children (from /proc: its environment names it)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
        if ppid == mpirun_pid and f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            return int(pid)
    raise AssertionError(f"rank {rank} of mpirun {mpirun_pid} not found")


def interrupt_after_first_epoch(args, target):
    """Run ``fastmom train ARGS`` on 2 ranks; when rank 0's first epoch line is printed,
    send SIGINT to ``target`` ("mpirun": a terminal's Ctrl-C; "rank 1": that rank alone).
    Return ``(exit status, stderr)``."""
    proc = subprocess.Popen(mpirun_fastmom(2, "train", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, FASTMOM_NUM_THREADS="1"))
    try:
        err = []
        for line in proc.stderr:
            err.append(line)
            if line.startswith("epoch 0:"):
                os.kill(proc.pid if target == "mpirun" else rank_pid(proc.pid, 1), signal.SIGINT)
                break
        _, rest = proc.communicate(timeout=90)
    finally:
        proc.kill()
    return proc.returncode, "".join(err) + rest


@pytest.mark.parametrize("target", ["mpirun", "rank 1"])
def test_ctrl_c_without_checkpoints_stops_every_rank_and_rank0_writes(tmp_path, target):
    status, err = interrupt_after_first_epoch((*FC, "--epochs", 200, "--save", tmp_path / "m.npz",
                                               "--json", tmp_path / "h.json"), target)
    assert "Traceback" not in err, err
    # each rank exits 130; mpirun reports that when a rank was signalled, and its own
    # status (Open MPI: 1) when it was (it ends the job after sending the ranks SIGTERM)
    assert status == 130 if target == "rank 1" else status != 0, err
    [line] = [x for x in err.splitlines() if x.startswith("fastmom: interrupted")]  # rank 0 alone
    assert "m.npz" in line and "h.json" in line
    result = json.loads((tmp_path / "h.json").read_text())
    assert result["interrupted"] is True and result["config"]["world_size"] == 2
    assert len(result["history"]) >= 1 and result["steps"] > 0
    from fastmom import Network
    Network.load(tmp_path / "m.npz")


def test_compare_under_mpirun_prints_and_writes_once_and_matches_one_process(tmp_path):
    flags = ("compare", "--net", "fc", "--dtype", "float64", "--epochs", "1", "--eta", "0.1", "--threads", "1")
    env = dict(os.environ, FASTMOM_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "fastmom", *flags, "--json", tmp_path / "one.json"],
                         capture_output=True, text=True, timeout=120, env=dict(env, FASTMOM_DISTRIBUTED="0"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run(mpirun_fastmom(2, *flags, "--json", tmp_path / "two.json"), capture_output=True,
                         text=True, timeout=180, env=env)
    assert two.returncode == 0 and "Traceback" not in two.stderr, two.stdout + two.stderr
    assert two.stdout.count("| optimizer |") == 1 and two.stdout.count("training SGD") == 1  # rank 0 alone
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert a["config"]["world_size"] == 1 and b["config"]["world_size"] == 2
    for x, y in zip(a["results"], b["results"], strict=True):
        assert x["optimizer"] == y["optimizer"]
        assert x["validation_by_epoch"] == y["validation_by_epoch"]  # counts all-reduced: exact
        assert abs(x["cost_by_epoch"][0] - y["cost_by_epoch"][0]) < 1e-9
