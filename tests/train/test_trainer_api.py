"""The Trainer's construction API after the training-loop redesign: the optimizer owns
the hyper-parameters, checkpoints store them once, the checkpoint options are grouped in a
Checkpointer (the old keywords still work, with a DeprecationWarning), network3's two
meanings (its printed lines, its accuracy) can be chosen apart, and deprecated names warn."""
import importlib
import subprocess
import sys

import numpy as np
import pytest

import fastmom.train
from fastmom import FullyConnectedLayer, MomentumSGD, Network, ReLU, SoftmaxLayer, Trainer
from fastmom.checkpoint import list_checkpoints, read_checkpoint
from fastmom.train import Checkpointer, EarlyStopping, Network3Log


def net(seed=0):
    return Network([FullyConnectedLayer(12, 6, activation_fn=ReLU, p_dropout=0.2), SoftmaxLayer(6, 3)], 4,
                   device="reference", seed=seed)


def data(n=26, offset=0):
    k = np.arange(offset, offset + n * 12, dtype=np.int64)
    x = ((k * 7919 + 13) % 101).reshape(n, 12).astype(np.float32) / 100
    return x, (x[:, :4].sum(1) * 3).astype(np.int64) % 3


# -- hyper-parameters: one owner ---------------------------------------------------------

def test_optimizer_is_built_at_construction_and_owns_the_hyper_parameters():
    tr = Trainer(net(), eta=0.2, momentum=0.5, nesterov=True, lmbda=0.1)
    opt = tr.optimizer
    assert isinstance(opt, MomentumSGD) and opt.velocity is not None
    assert opt.hyper_parameters() == {"eta": 0.2, "momentum": 0.5, "nesterov": True, "lmbda": 0.1,
                                      "num_training_batches": 1}
    tr.eta, tr.lmbda = 0.05, 0.3
    assert (opt.eta, opt.lmbda) == (0.05, 0.3)
    tr.fit(data(), 1)
    assert opt.num_training_batches == 6 and tr.optimizer is opt
    tr.fit(data(40), 2)  # fixed by the first fit, as before the redesign
    assert opt.num_training_batches == 6


def test_momentum_zero_drops_the_velocity_and_checks_nesterov():
    tr = Trainer(net(), optimizer="nesterov", momentum=0.9)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        tr.momentum = 0
    tr.optimizer.configure(momentum=0, nesterov=False)
    assert tr.optimizer.velocity is None and (tr.momentum, tr.nesterov) == (0.0, False)
    tr.momentum = 0.8
    np.testing.assert_array_equal(tr.optimizer.velocity, 0)
    with pytest.raises(TypeError, match="unknown hyper-parameter"):
        tr.optimizer.configure(gamma=1)


def test_a_given_optimizer_is_used_as_is():
    n = net()
    opt = MomentumSGD(n, 0.1, 0.5, lmbda=1.0, num_training_batches=10)
    tr = Trainer(n, opt, eta=7.0)
    assert tr.optimizer is opt and tr.eta == 0.1
    tr.fit(data(), 1)
    assert opt.num_training_batches == 10


def test_checkpoint_stores_hyper_parameters_once(tmp_path):
    tr = Trainer(net(), eta=0.2, momentum=0.5, lmbda=0.1, progress=False)
    before = tr.save_checkpoint(tmp_path / "before.npz")
    st = read_checkpoint(before)[0]["trainer"]
    assert not {"eta", "momentum", "nesterov", "lmbda"} & set(st)
    assert st["optimizer"] == {"eta": 0.2, "momentum": 0.5, "nesterov": False, "lmbda": 0.1,
                               "num_training_batches": None}  # not known before the first fit
    tr.fit(data(), 1)
    assert read_checkpoint(tr.save_checkpoint(tmp_path / "after.npz"))[0]["trainer"]["optimizer"][
        "num_training_batches"] == 6
    # a before-fit checkpoint resumes like a fresh trainer
    fresh = Trainer(net(), eta=0.2, momentum=0.5, lmbda=0.1, progress=False)
    again = Trainer.from_checkpoint(before, eta=9.0, progress=False)
    assert again.optimizer.hyper_parameters() == fresh.optimizer.hyper_parameters()
    fresh.fit(data(), 2)
    again.fit(data(), 2)
    np.testing.assert_array_equal(again.net.flat.data, fresh.net.flat.data)


# -- checkpoint options ----------------------------------------------------------------------

def test_checkpointer_groups_the_checkpoint_options(tmp_path):
    ck = Checkpointer(tmp_path / "a", every=3, unit="step", keep_last=2)
    tr = Trainer(net(), progress=False, checkpointer=ck)
    tr.fit(data(), 2)
    assert tr.checkpoint_dir == str(tmp_path / "a") and tr.last_checkpoint == list_checkpoints(tmp_path / "a")[-1]
    with pytest.warns(DeprecationWarning, match="checkpointer=Checkpointer"):
        old = Trainer(net(), progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=3,
                      checkpoint_unit="step", keep_last=2)
    old.fit(data(), 2)
    names = [p.rsplit("/", 1)[-1] for p in list_checkpoints(tmp_path / "a")]
    assert names == [p.rsplit("/", 1)[-1] for p in list_checkpoints(tmp_path / "b")]
    assert names == ["ckpt-e00001-s000000009.npz", "ckpt-e00002-s000000012.npz"]


def test_checkpointer_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="unit must be one of"):
        Checkpointer(tmp_path, unit="minute")
    with pytest.raises(ValueError, match="every must be a positive int"):
        Checkpointer(tmp_path, every=0)
    with pytest.raises(TypeError, match="not both"):
        Trainer(net(), checkpoint_dir=tmp_path, checkpointer=Checkpointer(tmp_path))
    with pytest.raises(TypeError, match="must be a Checkpointer"):
        Trainer(net(), checkpointer=str(tmp_path))
    with pytest.raises(TypeError, match="unexpected keyword argument 'checkpoint_evry'"):
        Trainer(net(), checkpoint_evry=2)


# -- network3's two meanings -------------------------------------------------------------

def test_network3_output_selects_log_and_drop_last():
    lines = []
    tr = Trainer(net(), network3_output=True, log=lines.append, progress=False)
    assert tr.network3_output and tr.drop_last
    tr.fit(data(), 1, data(30, 500))
    assert lines[0] == "Training mini-batch number 0" and lines[-1].startswith("Best validation accuracy")


def test_drop_last_alone_measures_network3_accuracy_silently(capsys):
    val = data(30, 500)
    a = Trainer(net(), drop_last=True, progress=False, shuffle=False)
    b = Trainer(net(), network3_output=True, progress=False, shuffle=False, log=lambda *a: None)
    a.fit(data(), 2, val)
    b.fit(data(), 2, val)
    assert capsys.readouterr().out == ""
    assert not a.network3_output
    assert a.history.column("validation_accuracy") == b.history.column("validation_accuracy")
    n = net()
    n.flat.data[...] = a.net.flat.data
    assert a.history[-1]["validation_accuracy"] == n.evaluate(*val, drop_last=True)


def test_network3_log_alone_prints_but_measures_every_image():
    val, lines = data(30, 500), []
    tr = Trainer(net(), callbacks=[Network3Log(lines.append)], progress=False)
    tr.fit(data(), 1, val)
    assert lines[:2] == ["Training mini-batch number 0",
                         "Epoch 0: validation accuracy {:.2%}".format(tr.history[0]["validation_accuracy"])]
    assert lines[-2] == "Finished training network."
    assert tr.history[0]["validation_accuracy"] == tr.net.evaluate(*val)  # all 30 images
    assert not tr.network3_output


# -- early stopping ------------------------------------------------------------------------

def test_early_stopping_keyword_and_callback_agree():
    val = data(12, 700)
    a = Trainer(net(), eta=5.0, momentum=0.0, early_stopping=2, progress=False)
    b = Trainer(net(), eta=5.0, momentum=0.0, callbacks=[EarlyStopping(2)], progress=False)
    a.fit(data(), 30, val)
    b.fit(data(), 30, val)
    assert a.early_stopping == 2 and b.early_stopping is None
    assert len(a.history) == len(b.history) < 30
    assert len(a.history) - 1 - a.history.best_epoch == 2
    with pytest.raises(ValueError, match="early_stopping must be a positive int"):
        Trainer(net(), early_stopping=0)


# -- deprecated names ---------------------------------------------------------------------

def test_resumed_from_is_deprecated(tmp_path):
    path = Trainer(net()).save_checkpoint(tmp_path / "c.npz")
    tr = Trainer(net(), resume=path)
    with pytest.warns(DeprecationWarning, match="resumed_from"):
        assert tr.resumed_from == str(path)


def test_trainer_module_is_a_deprecated_alias():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import fastmom.trainer\nexcept DeprecationWarning as e:\n    print('warned:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "warned: fastmom.trainer is deprecated" in out
    with pytest.warns(DeprecationWarning):
        alias = importlib.reload(importlib.import_module("fastmom.trainer"))
    for name in fastmom.train.__all__:
        assert getattr(alias, name) is getattr(fastmom.train, name)
