"""Multi-rank training under ``mpirun``: each test launches ``worker.py`` on N ranks as a
subprocess (with a timeout) and compares what the ranks wrote with one process's run.

Skipped, saying why, without ``mpirun`` or mpi4py. CI runs them as root, hence
``--allow-run-as-root``; ``--oversubscribe`` lets 3 ranks share 2 cores.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "worker.py")
MPIRUN = shutil.which("mpirun")

try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

pytestmark = [
    pytest.mark.skipif(MPIRUN is None, reason="mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"),
    pytest.mark.skipif(not HAVE_MPI4PY, reason="mpi4py not installed (pip install 'fastmom[mpi]')"),
]

BASE = {"batch": 6, "n_train": 240, "epochs": 2}
#: After its own Ctrl-C, Open MPI's mpirun sends the ranks SIGTERM and then SIGKILL, each
#: after this many seconds (default 1: too short for a loaded 2-core machine to finish a
#: step and write; mpirun itself then takes about twice this long to exit).
SIGKILL_GRACE = ("--mca", "odls_base_sigkill_timeout", "3")


def mpirun_command(n, out, scenario, cfg, *mca):
    return [MPIRUN, "--oversubscribe", "--allow-run-as-root", *mca, "-np", str(n), sys.executable, WORKER,
            str(out), scenario, json.dumps(cfg)]


def launch(n, out, scenario, cfg, timeout=120, env=None):
    """Run ``worker.py`` on ``n`` ranks (``n=0``: one process without mpirun); return
    ``(returncode, output, reports)``."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = (mpirun_command(n, out, scenario, cfg) if n else [sys.executable, WORKER, str(out), scenario,
                                                             json.dumps(cfg)])
    env = dict(os.environ, **(env or {}))
    if not n:
        env["FASTMOM_DISTRIBUTED"] = "0"  # the reference must not join an outer launcher's world
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr, reports(out, max(n, 1))


def reports(out, n):
    found = {}
    for r in range(n):
        path = out / f"rank{r}.json"
        if path.exists():
            found[r] = json.loads(path.read_text())
            found[r]["params"] = np.load(out / f"rank{r}.npy") if (out / f"rank{r}.npy").exists() else None
    return found


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, float64: the iterates every world size must reproduce."""
    rc, text, reps = launch(0, tmp_path_factory.mktemp("single"), "train", BASE)
    assert rc == 0 and reps[0]["error"] is None, text
    return reps[0]


def assert_same_training(rep, ref):
    assert rep["error"] is None
    for got, want in zip(rep["history"], ref["history"], strict=True):
        assert got["validation_accuracy"] == want["validation_accuracy"]  # counts all-reduced: exact
        assert got["test_accuracy"] == want["test_accuracy"]
        assert got["cost"] == pytest.approx(want["cost"], abs=1e-12)
    np.testing.assert_allclose(rep["params"], ref["params"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_n_ranks_give_the_single_process_iterates(tmp_path, single, n):
    rc, text, reps = launch(n, tmp_path, "train", BASE)
    assert rc == 0, text
    assert sorted(reps) == list(range(n))
    for rep in reps.values():
        assert rep["world_size"] == n
        # the default: bucket all-reduces during the backward pass (the fc net: one)
        assert (rep["overlap"], rep["buckets"]) == ((True, 1) if n > 1 else (False, 0))
        assert_same_training(rep, single)
        np.testing.assert_array_equal(rep["params"], reps[0]["params"])  # the ranks never drift apart


@pytest.mark.parametrize("n", [2, 3])
def test_overlapped_all_reduce_gives_the_single_all_reduce_iterates(tmp_path, n):
    """FASTMOM_MPI_OVERLAP=0 (one all-reduce of the whole gradient after the backward
    pass) against one overlapped bucket per layer started during it, float64 (the
    default, one bucket for the fc net, is compared with one process above)."""
    runs = {}
    for name, env in {"single": {"FASTMOM_MPI_OVERLAP": "0"}, "per layer": {"FASTMOM_MPI_BUCKET_BYTES": "0"}}.items():
        rc, text, reps = launch(n, tmp_path / name.replace(" ", "-"), "train", BASE, env=env)
        assert rc == 0 and sorted(reps) == list(range(n)), text
        overlapped = name != "single"
        assert {(rep["overlap"], rep["buckets"]) for rep in reps.values()} == {(overlapped, 2 * overlapped)}
        runs[name] = reps
    for r in range(n):
        rep = runs["per layer"][r]
        assert rep["history"] and rep["step"] == runs["single"][r]["step"]
        assert_same_training(rep, runs["single"][r])
        np.testing.assert_array_equal(rep["params"], runs["per layer"][0]["params"])


def test_overlap_setting_that_differs_across_ranks_is_refused(tmp_path):
    rc, text, reps = launch(2, tmp_path, "overlap-mismatch", BASE)
    assert sorted(reps) == [0, 1], text
    for rep in reps.values():
        assert rep["error"][0] == "ConfigurationMismatch" and "gradient all-reduce" in rep["error"][1]


def test_batch_that_does_not_divide_is_refused(tmp_path):
    rc, text, reps = launch(2, tmp_path, "train", dict(BASE, batch=5))
    assert {r["error"][0] for r in reps.values()} == {"ValueError"}
    assert "must divide by the 2 ranks" in reps[0]["error"][1]


def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    rc, text, reps = launch(3, tmp_path, "nan", dict(BASE, rank=1, at=7))
    assert sorted(reps) == [0, 1, 2], text
    errors = {json.dumps(r["error"]) for r in reps.values()}
    assert len(errors) == 1, errors  # the same message everywhere
    kind, message = reps[0]["error"]
    assert kind == "DivergenceError" and "mini-batch 7" in message
    assert {r["step"] for r in reps.values()} == {7}


def test_mismatched_configuration_is_refused_at_start(tmp_path):
    rc, text, reps = launch(2, tmp_path, "mismatch", BASE)
    assert sorted(reps) == [0, 1], text
    for rep in reps.values():
        assert rep["error"][0] == "ConfigurationMismatch"
        assert "rank 1 differs from rank 0 in optimizer" in rep["error"][1]
        assert rep["step"] == 0


def test_killed_rank_ends_the_job_within_the_timeout(tmp_path):
    t0 = time.monotonic()
    rc, text, reps = launch(3, tmp_path, "kill", dict(BASE, rank=1, at=5), timeout=90,
                            env={"FASTMOM_MPI_TIMEOUT": "10"})
    assert rc != 0
    assert time.monotonic() - t0 < 60
    assert "rank 1" in text or "did not answer" in text, text  # mpirun's or our watchdog's message
    assert 1 not in reps


def start_until_ready(n, out, scenario, cfg):
    """Start ``worker.py`` on ``n`` ranks and return the running mpirun once rank 0 has
    finished an epoch (``OUT/ready``); every rank has written ``OUT/pid<r>`` by then."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(mpirun_command(n, out, scenario, cfg, *SIGKILL_GRACE), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (out / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the ranks did not finish an epoch: {proc.communicate()[0]}")
        time.sleep(0.05)
    return proc


def test_ctrl_c_under_mpirun_checkpoints_once_and_stops_every_rank(tmp_path):
    """Ctrl-C reaches mpirun, which sends the ranks SIGTERM (then SIGKILL a second later):
    every rank stops at the same mini-batch, rank 0 writes the checkpoint."""
    out = tmp_path / "run"
    proc = start_until_ready(2, out, "sigint", dict(BASE, epochs=10_000))
    try:
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    reps = reports(out, 2)
    assert sorted(reps) == [0, 1], text
    assert {r["error"][0] for r in reps.values()} == {"TrainingInterrupted"}
    assert len({r["step"] for r in reps.values()}) == 1
    checkpoints = sorted(os.listdir(out / "ckpt"))
    assert any(name.endswith(f"s{reps[0]['step']:09d}.npz") for name in checkpoints), checkpoints
    np.testing.assert_array_equal(reps[0]["params"], reps[1]["params"])


def test_ctrl_c_on_one_rank_without_checkpoints_stops_every_rank_together(tmp_path):
    """SIGINT to rank 1 alone, no checkpointer: the flag is all-reduced with the cost, so
    all 3 ranks raise the same TrainingInterrupted after the same step."""
    out = tmp_path / "run"
    proc = start_until_ready(3, out, "sigint-no-checkpoints", dict(BASE, epochs=10_000))
    try:
        os.kill(int((out / "pid1").read_text()), signal.SIGINT)
        text = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, text
    reps = reports(out, 3)
    assert sorted(reps) == [0, 1, 2], text
    assert {tuple(r["error"]) for r in reps.values()} == {
        ("TrainingInterrupted", "training interrupted (checkpointing is off: nothing saved)")}
    assert len({r["step"] for r in reps.values()}) == 1 and reps[0]["epoch"] >= 1
    for r in (1, 2):
        np.testing.assert_array_equal(reps[r]["params"], reps[0]["params"])


@pytest.mark.parametrize("n_resume", [1, 3])
def test_checkpoint_from_two_ranks_resumes_on_another_count(tmp_path, single, n_resume):
    """Stop 2 ranks after 1 epoch (checkpoints every 7 steps, so the last is mid-epoch
    for resume's purposes too), resume on ``n_resume`` ranks: the single-process run."""
    first = tmp_path / "first"
    rc, text, reps = launch(2, first, "checkpoint", dict(BASE, epochs=1, unit="step", every=7))
    assert rc == 0 and reps[0]["error"] is None, text
    ckpt = first / "ckpt"
    second = tmp_path / "second"
    second.mkdir()
    shutil.copytree(ckpt, second / "ckpt")
    rc, text, reps = launch(n_resume, second, "checkpoint", dict(BASE, resume=True, unit="step", every=7))
    assert rc == 0, text
    for rep in reps.values():
        assert_same_training(rep, single)


@pytest.mark.slow
def test_cli_under_mpirun_matches_one_process_and_records_world_size(tmp_path):
    """The issue's acceptance, on the small fc net: same accuracies, costs within 1e-6,
    rank 0 alone prints and writes the JSON."""
    flags = ["train", "--net", "fc", "--dtype", "float64", "--epochs", "2", "--shuffle", "--threads", "1"]
    one = subprocess.run([sys.executable, "-m", "fastmom", *flags, "--json", str(tmp_path / "one.json")],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, FASTMOM_DISTRIBUTED="0"))
    assert one.returncode == 0, one.stderr
    two = subprocess.run([MPIRUN, "--oversubscribe", "--allow-run-as-root", "-np", "2", sys.executable, "-m",
                          "fastmom", *flags, "--json", str(tmp_path / "two.json")],
                         capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("Finished training network.") == 1  # rank 0 prints
    assert two.stderr.count("fastmom: wrote history") == 1
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert a["config"]["world_size"] == 1 and b["config"]["world_size"] == 2
    for x, y in zip(a["history"], b["history"], strict=True):
        assert x["validation_accuracy"] == y["validation_accuracy"]
        assert x["test_accuracy"] == y["test_accuracy"]
        assert abs(x["cost"] - y["cost"]) < 1e-6


def test_dropout_ranks_draw_their_own_masks_and_stay_in_step(tmp_path):
    """With dropout the iterates differ from one process's (each rank draws its rows'
    masks from its own stream) but every rank holds the same parameters, and a second run
    repeats the first exactly."""
    cfg = dict(BASE, dropout=0.3)
    runs = [launch(2, tmp_path / f"run{i}", "train", cfg) for i in range(2)]
    for rc, text, reps in runs:
        assert rc == 0 and reps[0]["error"] is None, text
        np.testing.assert_array_equal(reps[0]["params"], reps[1]["params"])
    np.testing.assert_array_equal(runs[0][2][0]["params"], runs[1][2][0]["params"])
