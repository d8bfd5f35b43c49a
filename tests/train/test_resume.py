"""Exact resume across processes, Ctrl-C during training, and the divergence guard.

Resume: 4 epochs straight and 2 epochs + checkpoint + a fresh process + 2 more epochs
give bit-identical parameters and velocities on ``cpu`` and ``reference`` (fixed seed
and thread count; shuffling, dropout and an eta schedule on, so the data-order and
dropout RNG states and the callback state must really be restored).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastmom
from fastmom import (ConvPoolLayer, DivergenceError, FullyConnectedLayer, Network, ReLU, SoftmaxLayer,
                     Trainer)
from fastmom.checkpoint import list_checkpoints, read_checkpoint
from fastmom.train import TrainingInterrupted

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastmom.__file__)))

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from fastmom import ConvPoolLayer, DivideOnPlateau, FullyConnectedLayer, Network, ReLU, SoftmaxLayer, Trainer
    from fastmom.checkpoint import latest_checkpoint
    from fastmom.data import load_sample
    from fastmom.train import TrainingInterrupted

    mode, device, out = sys.argv[1], sys.argv[2], sys.argv[3]
    (xtr, ytr), (xva, yva), _ = load_sample()
    train, val = (xtr[:300], ytr[:300]), (xva[:100], yva[:100])

    def layers():
        return [ConvPoolLayer((4, 1, 5, 5), (10, 1, 28, 28), activation_fn=ReLU),
                FullyConnectedLayer(4 * 12 * 12, 20, activation_fn=ReLU, p_dropout=0.3),
                SoftmaxLayer(20, 10, p_dropout=0.2)]

    def trainer(net, **kw):
        return Trainer(net, eta=0.05, momentum=0.9, lmbda=0.1, shuffle=True, progress=False,
                       schedule=DivideOnPlateau(factor=1.5, patience=1), **kw)

    def dump(t):
        np.savez(os.path.join(out, mode + ".npz"), params=t.net.flat.data, velocity=t.optimizer.velocity)
        with open(os.path.join(out, mode + ".json"), "w") as f:
            json.dump({"epoch": t.epoch, "step": t.step, "eta": t.eta,
                       "cost": t.history.column("cost"), "val": t.history.column("validation_accuracy")}, f)

    if mode == "straight":            # argv[4] epochs in one go
        t = trainer(Network(layers(), 10, device=device, seed=7))
        t.fit(train, int(sys.argv[4]), val)
        dump(t)
    elif mode == "first":             # 2 epochs, checkpointing every epoch
        t = trainer(Network(layers(), 10, device=device, seed=7), checkpoint_dir=os.path.join(out, "ck"))
        t.fit(train, 2, val)
    elif mode == "second":            # a fresh process: resume the newest checkpoint, train to argv[4]
        path = sys.argv[5] if len(sys.argv) > 5 else latest_checkpoint(os.path.join(out, "ck"))
        net = Network.load(path)
        t = trainer(net, resume=path)
        t.fit_to(train, int(sys.argv[4]), val)
        dump(t)
    elif mode == "sigint":            # train "forever", checkpointing every 5 steps
        t = trainer(Network(layers(), 10, device=device, seed=7), checkpoint_dir=os.path.join(out, "ck"),
                    checkpoint_unit="step", checkpoint_every=5, keep_last=2)
        try:
            t.fit(train, 10000, val)
        except TrainingInterrupted as exc:
            print("INTERRUPTED", exc.checkpoint, flush=True)
            sys.exit(130)
        print("FINISHED", flush=True)
""")


@pytest.fixture
def run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO, FASTMOM_NUM_THREADS="2")

    def run(*args, popen=False):
        cmd = [sys.executable, str(script), *map(str, args)]
        if popen:
            return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc

    return run


def result(out, mode):
    with np.load(out / f"{mode}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((out / f"{mode}.json").read_text())


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_resume_in_fresh_process_is_bit_identical(run, tmp_path, device):
    run("straight", device, tmp_path, 4)
    run("first", device, tmp_path)
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path / "ck")] == [
        "ckpt-e00001-s000000030.npz", "ckpt-e00002-s000000060.npz"]
    run("second", device, tmp_path, 4)
    (a, ha), (b, hb) = result(tmp_path, "straight"), result(tmp_path, "second")
    np.testing.assert_array_equal(a["params"], b["params"])
    np.testing.assert_array_equal(a["velocity"], b["velocity"])
    assert ha == hb  # counters, scheduled eta, per-epoch cost and accuracy: the same run
    assert len(ha["cost"]) == 4 and ha["step"] == 120


def test_resume_inside_an_epoch_is_bit_identical(tmp_path):
    """Step checkpoints stop mid-epoch: the epoch's permutation is replayed and
    training picks up at the next mini-batch."""
    rng = np.random.default_rng(0)
    data = (rng.random((53, 144)), rng.integers(0, 4, 53))  # 10 batches of 5 (3 images dropped)

    def net():
        return Network([FullyConnectedLayer(144, 9, activation_fn=ReLU, p_dropout=0.5),
                        SoftmaxLayer(9, 4, p_dropout=0.25)], 5, device="reference", seed=2)

    straight = Trainer(net(), eta=0.1, progress=False)
    straight.fit(data, 3)
    part = Trainer(net(), eta=0.1, progress=False, checkpoint_dir=tmp_path, checkpoint_unit="step",
                   checkpoint_every=7, keep_last=10)
    part.fit(data, 2)
    mid = [p for p in list_checkpoints(tmp_path) if read_checkpoint(p)[0]["trainer"]["batch"]]
    assert len(mid) >= 2
    for path in mid:
        resumed = Trainer.from_checkpoint(path, progress=False)
        resumed.fit_to(data, 3)
        np.testing.assert_array_equal(resumed.net.flat.data, straight.net.flat.data)
        np.testing.assert_array_equal(resumed.optimizer.velocity, straight.optimizer.velocity)
        assert resumed.history.column("cost") == straight.history.column("cost")


def test_ctrl_c_saves_checkpoint_and_exits_cleanly(run, tmp_path):
    proc = run("sigint", "reference", tmp_path, popen=True)
    ck = tmp_path / "ck"
    deadline = time.monotonic() + 120
    while not list_checkpoints(ck):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere inside a later mini-batch
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    tag, path = out.split()
    assert tag == "INTERRUPTED" and os.path.exists(path)
    meta, _ = read_checkpoint(path)
    st = meta["trainer"]
    assert path == list_checkpoints(ck)[-1]
    # the interrupt checkpoint resumes exactly: compare with a straight run to the next epoch
    epochs = st["epoch"] + 1
    run("second", "reference", tmp_path, epochs, path)
    run("straight", "reference", tmp_path, epochs)
    (a, ha), (b, hb) = result(tmp_path, "straight"), result(tmp_path, "second")
    np.testing.assert_array_equal(a["params"], b["params"])
    np.testing.assert_array_equal(a["velocity"], b["velocity"])
    assert ha == hb


def test_ctrl_c_in_process_raises_keyboard_interrupt_after_saving(tmp_path):
    rng = np.random.default_rng(1)
    data = (rng.random((30, 144)), rng.integers(0, 4, 30))
    net = Network([FullyConnectedLayer(144, 6), SoftmaxLayer(6, 4)], 5, device="reference", seed=0)
    tr = Trainer(net, eta=0.1, progress=False, checkpoint_dir=tmp_path, checkpoint_every=100)
    calls = []
    orig = net.train_step

    def step(x, y):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the third batch
        return orig(x, y)

    net.train_step = step
    with pytest.raises(KeyboardInterrupt) as exc:
        tr.fit(data, 5)
    assert isinstance(exc.value, TrainingInterrupted)
    assert len(calls) == 3  # the batch in flight finished; nothing after it started
    meta, arrays = read_checkpoint(exc.value.checkpoint)
    assert (meta["trainer"]["step"], meta["trainer"]["batch"]) == (3, 3)
    np.testing.assert_array_equal(arrays["params"], net.flat.data)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


# -- divergence guard ----------------------------------------------------------------------

def _spy(net):
    """Record the parameters before every training step."""
    before = []
    orig = net.train_step

    def step(x, y):
        before.append(net.flat.data.copy())
        return orig(x, y)

    net.train_step = step
    return before


def _fc(device="reference", **kw):
    return Network([FullyConnectedLayer(144, 16, activation_fn=ReLU), SoftmaxLayer(16, 4)], 5,
                   device=device, seed=0, **kw)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_huge_eta_stops_before_the_bad_step(tmp_path, device):
    rng = np.random.default_rng(0)
    data = (rng.random((50, 144)) * 50, rng.integers(0, 4, 50))
    net = _fc(device)
    tr = Trainer(net, eta=1e30, momentum=0.9, progress=False, checkpoint_dir=tmp_path,
                 checkpoint_unit="step", checkpoint_every=1, keep_last=1000)
    before = _spy(net)
    with pytest.raises(DivergenceError, match=r"epoch \d+, mini-batch \d+ .*not applied.*eta=1e\+30") as exc:
        tr.fit(data, 100)
    np.testing.assert_array_equal(net.flat.data, before[-1])  # the bad step was not applied
    assert "last checkpoint is" in str(exc.value)
    saved = list_checkpoints(tmp_path)
    assert saved and str(exc.value).count(saved[-1]) == 1
    for path in saved:  # every checkpoint written is finite
        _, arrays = read_checkpoint(path)
        assert all(np.isfinite(a).all() for a in arrays.values())
    np.testing.assert_array_equal(read_checkpoint(saved[-1])[1]["params"], net.flat.data)


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_nonfinite_gradient_with_finite_cost_is_caught(device):
    rng = np.random.default_rng(0)
    data = (rng.random((50, 144)), rng.integers(0, 4, 50))
    net = _fc(device)
    tr = Trainer(net, eta=0.1, progress=False)
    before = _spy(net)
    orig = net._backward
    count = []

    def backward():  # plant a NaN in one gradient entry of the 7th step
        orig()
        count.append(1)
        if len(count) == 7:
            net.flat.grad[5] = np.nan

    net._backward = backward
    with pytest.raises(DivergenceError, match=r"epoch 0, mini-batch 6 \(iteration 6\): the gradient is "
                                              r"not finite .* the step was not applied"):
        tr.fit(data, 3)
    np.testing.assert_array_equal(net.flat.data, before[-1])
    assert tr.step == 6


def test_planted_nan_parameter_names_epoch_and_batch():
    rng = np.random.default_rng(0)
    data = (rng.random((50, 144)), rng.integers(0, 4, 50))
    net = _fc()
    tr = Trainer(net, eta=0.1, progress=False)
    tr.fit(data, 1)

    class Plant:  # a parameter goes bad at the end of epoch 1
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 1:
                trainer.net.params[0][3, 2] = np.nan

    tr.callbacks.append(Plant())
    with pytest.raises(DivergenceError, match=r"epoch 2, mini-batch 0 \(iteration 20\): the cost is nan"):
        tr.fit(data, 5)
    assert tr.step == 20


def test_divergence_keeps_last_checkpoint_untouched(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.random((50, 144)), rng.integers(0, 4, 50))
    net = _fc()
    tr = Trainer(net, eta=0.1, progress=False, checkpoint_dir=tmp_path)
    tr.fit(data, 2)
    last = list_checkpoints(tmp_path)[-1]
    content = open(last, "rb").read()
    net.params[2][0, 0] = np.inf
    with pytest.raises(DivergenceError, match=f"last checkpoint is {last}"):
        tr.fit(data, 4)
    assert list_checkpoints(tmp_path) == [*list_checkpoints(tmp_path)[:-1], last]
    assert open(last, "rb").read() == content
    with pytest.raises(DivergenceError, match="not finite"):
        tr.save_checkpoint()  # and nothing non-finite is ever written
    assert list_checkpoints(tmp_path)[-1] == last
