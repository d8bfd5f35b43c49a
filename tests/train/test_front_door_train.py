"""Issue 15, "the front door", training half: fit counts epochs *more* (fit_to counts
the total: the resume path), early stopping needs validation data, the collapse guard."""
import contextlib
import io
import warnings

import numpy as np
import pytest

from fastmom import (DivideOnPlateau, EarlyStopping, FullyConnectedLayer, Network, ReLU, SoftmaxLayer,
                     Trainer)
from fastmom.checkpoint import list_checkpoints


def problem(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 12)).astype(np.float32)
    return x, (x[:, :4].sum(1) * 3).astype(np.int64) % 3


def net(seed=3):
    return Network([FullyConnectedLayer(12, 6, activation_fn=ReLU, p_dropout=0.2), SoftmaxLayer(6, 3)], 4,
                   device="reference", seed=seed)


# -- fit: epochs more; fit_to: the total -------------------------------------------------------

def test_a_second_fit_trains_more_epochs_and_appends():
    data, val = problem(), problem(20, 1)
    once = Trainer(net(), eta=0.1, progress=False)
    once.fit(data, 3, val)
    twice = Trainer(net(), eta=0.1, progress=False)
    twice.fit(data, 2, val)
    history = twice.fit(data, 1, val)
    assert twice.epoch == 3 and len(history) == 3 and history.column("epoch") == [0, 1, 2]
    assert history.column("cost") == once.history.column("cost")
    np.testing.assert_array_equal(twice.net.flat.data, once.net.flat.data)
    twice.fit(data, 0)  # zero more: nothing
    assert twice.epoch == 3


def test_fit_to_counts_the_total_and_fit_counts_more_after_a_resume(tmp_path):
    data = problem()
    straight = Trainer(net(), eta=0.1, progress=False)
    straight.fit(data, 4)
    part = Trainer(net(), eta=0.1, progress=False, checkpoint_dir=tmp_path)
    part.fit(data, 2)
    path = list_checkpoints(tmp_path)[-1]
    to_total = Trainer.from_checkpoint(path, progress=False)
    to_total.fit_to(data, 4)
    np.testing.assert_array_equal(to_total.net.flat.data, straight.net.flat.data)
    more = Trainer.from_checkpoint(path, progress=False)
    more.fit(data, 2)  # 2 more than the checkpoint's 2
    assert more.epoch == 4
    np.testing.assert_array_equal(more.net.flat.data, straight.net.flat.data)
    to_total.fit_to(data, 3)  # already past: nothing trained
    assert to_total.epoch == 4 and len(to_total.history) == 4


def test_early_stopping_without_validation_data_is_refused():
    tr = Trainer(net(), eta=0.1, progress=False, early_stopping=2)
    with pytest.raises(ValueError, match="early_stopping=2 needs validation_data"):
        tr.fit(problem(), 3)
    assert tr.epoch == 0 and tr.step == 0
    tr.fit(problem(), 1, problem(20, 1))  # with it: fine


@pytest.mark.parametrize("make", [lambda: {"schedule": DivideOnPlateau()},
                                  lambda: {"callbacks": [EarlyStopping(2)]}],
                         ids=["DivideOnPlateau", "EarlyStopping"])
def test_validation_callbacks_without_validation_data_are_refused(make):
    # they act on validation accuracy only: without it they would silently never act
    tr = Trainer(net(), eta=0.1, progress=False, **make())
    name = type((tr.callbacks)[0]).__name__
    with pytest.raises(ValueError, match=f"{name} needs validation_data"):
        tr.fit(problem(), 2)
    assert tr.epoch == 0 and tr.step == 0
    tr.fit(problem(), 1, problem(20, 1))  # with it: fine
    assert tr.epoch == 1


# -- the collapse guard ----------------------------------------------------------------------

def balanced(n, seed):
    x = np.random.default_rng(seed).random((n, 12)).astype(np.float32)
    return x, np.arange(n) % 3


def dead_net():
    """Every ReLU unit dead (large negative weights and biases): the softmax can only
    learn the class prior, so validation accuracy sits at exactly chance."""
    n = net()
    n.params[0][...] = -10.0
    n.params[1][...] = -10.0
    return n


def test_collapse_guard_warns_once_when_accuracy_stays_at_chance():
    tr = Trainer(dead_net(), eta=0.5, momentum=0.9, progress=False)
    with pytest.warns(fastmom_guard().CollapseWarning) as caught:
        tr.fit(balanced(40, 0), 4, balanced(30, 1))
    assert tr.history.column("validation_accuracy") == [pytest.approx(1 / 3)] * 4
    assert len(caught) == 1  # once, not every epoch
    message = str(caught[0].message)
    assert "\n" not in message
    assert message.startswith("training collapsed at epoch 1: validation accuracy has stayed at chance "
                              "(1/3 = 33.33%) for 2 epochs")
    assert "eta=0.5 is too large" in message and "smaller eta" in message


def test_strict_collapse_guard_stops_training():
    guard = fastmom_guard()
    tr = Trainer(dead_net(), eta=0.5, progress=False, strict=True)
    with pytest.raises(guard.CollapseError, match=r"epoch 1: .*chance.*eta=0\.5") as exc:
        tr.fit(balanced(40, 0), 4, balanced(30, 1))
    assert isinstance(exc.value, guard.DivergenceError) and tr.epoch == 2


def test_collapse_guard_cost_rule():
    guard = fastmom_guard().CollapseGuard()
    history = [{"cost": 2.3, "validation_accuracy": None}, {"cost": 23.1, "validation_accuracy": None}]
    assert "mean cost 23.1 is more than 10x the first epoch's (2.3)" in guard.symptom(history, 10)
    assert guard.symptom(history[:1] + [{"cost": 22.9, "validation_accuracy": 0.5}], 10) is None
    near = [{"cost": 1.0, "validation_accuracy": a} for a in (0.5, 0.1000, 0.1135)]
    assert "stayed at chance (1/10 = 10.00%)" in guard.symptom(near, 10)
    assert guard.symptom(near[:2], 10) is None  # one epoch at chance is not a collapse


def test_network3_sgd_output_is_unchanged_by_the_guard(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy run: no warning at all
        net().SGD(problem(80), 3, 4, 0.1, problem(20, 1), None)
    assert "collapsed" not in capsys.readouterr().err


def fastmom_guard():
    from fastmom.train import guard
    return guard
