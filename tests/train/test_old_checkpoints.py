"""Checkpoints written before the training-loop redesign still load and resume.

The files in ``fixtures/`` were written by ``fixtures/make_fixtures.py`` with the code of
commit e71d486, which stored the optimizer's hyper-parameters twice (``trainer.optimizer``
and top-level ``trainer.eta/momentum/nesterov/lmbda``; ``optimizer: null`` before the
first ``fit``) and the mid-epoch position as loose keys. ``expected.*`` hold what that
code computed from them; the continuation here must be bit-identical to it.
"""
import json
import os
import sys

import numpy as np
import pytest

from fastmom import Network, Trainer
from fastmom.checkpoint import CheckpointError, read_checkpoint

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
sys.path.insert(0, HERE)
from fixture_problem import EPOCHS, data, make_net, make_trainer  # noqa: E402

TIMING = ("seconds", "elapsed", "images_per_second")


def fixture(name):
    return os.path.join(HERE, name)


def expected():
    with np.load(fixture("expected.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    with open(fixture("expected.json")) as f:
        return arrays, json.load(f)


def outcome(t):
    history = [{k: v for k, v in r.items() if k not in TIMING} for r in t.history]
    return {"epoch": t.epoch, "step": t.step, "eta": t.eta, "history": history, "best": t.history.summary()}


def check_continues_as_recorded(t):
    train, val = data()
    t.fit_to(train, EPOCHS, val)  # the total: the resume path
    arrays, recorded = expected()
    np.testing.assert_array_equal(t.net.flat.data, arrays["params"])
    np.testing.assert_array_equal(t.optimizer.velocity, arrays["velocity"])
    assert outcome(t) == recorded


def test_fixtures_are_in_the_old_format():
    """The fixtures hold what the compatibility code must read (guards against a
    regenerated fixture silently dropping the old layout)."""
    st = read_checkpoint(fixture("trainer-mid-epoch.npz"))[0]["trainer"]
    assert st["optimizer"] == {"eta": 0.3, "momentum": 0.8, "nesterov": True, "lmbda": 0.05,
                               "num_training_batches": 6}
    assert (st["eta"], st["momentum"], st["nesterov"], st["lmbda"]) == (0.3, 0.8, True, 0.05)
    assert (st["epoch"], st["step"], st["batch"], st["n_train"]) == (1, 9, 3, 26)
    assert read_checkpoint(fixture("trainer-before-fit.npz"))[0]["trainer"]["optimizer"] is None
    assert "trainer" not in read_checkpoint(fixture("network.npz"))[0]


def test_network_file_loads():
    net = Network.load(fixture("network.npz"))
    np.testing.assert_array_equal(net.flat.data, make_net().flat.data)
    assert net.dropout_rng.random() == make_net().dropout_rng.random()
    with pytest.raises(CheckpointError, match="network only"):
        Trainer(net, resume=fixture("network.npz"))


@pytest.mark.parametrize("name", ["trainer-mid-epoch.npz", "trainer-before-fit.npz"])
def test_old_trainer_checkpoint_resumes_bit_identically(name):
    path = fixture(name)
    check_continues_as_recorded(make_trainer(Network.load(path), resume=path))


def test_old_mid_epoch_checkpoint_state():
    t = Trainer.from_checkpoint(fixture("trainer-mid-epoch.npz"), progress=False)
    assert (t.epoch, t.step) == (1, 9)
    assert (t.eta, t.momentum, t.nesterov, t.lmbda) == (0.3, 0.8, True, 0.05)
    assert t.optimizer.num_training_batches == 6
    stored = read_checkpoint(fixture("trainer-mid-epoch.npz"))[1]
    np.testing.assert_array_equal(t.optimizer.velocity, stored["velocity"])
    np.testing.assert_array_equal(t.net.flat.data, stored["params"])


def test_old_before_fit_checkpoint_takes_its_hyper_parameters():
    """``optimizer: null``: the top-level copy is the only one and wins over the
    constructor's."""
    t = Trainer.from_checkpoint(fixture("trainer-before-fit.npz"), eta=9.0, momentum=0.1, progress=False)
    assert (t.eta, t.momentum, t.nesterov, t.lmbda) == (0.3, 0.8, True, 0.05)
    assert (t.epoch, t.step) == (0, 0)


def test_old_checkpoint_saved_again_resumes_the_same(tmp_path):
    """Old file -> trainer -> new file -> trainer: the same continuation."""
    old = fixture("trainer-mid-epoch.npz")
    again = make_trainer(Network.load(old), resume=old).save_checkpoint(tmp_path / "again.npz")
    check_continues_as_recorded(make_trainer(Network.load(again), resume=again))


def test_fresh_run_matches_the_recorded_one():
    check_continues_as_recorded(make_trainer(make_net()))
